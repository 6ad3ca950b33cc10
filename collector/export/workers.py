"""The per-page work of an export (read, build exchanges, fingerprint, split, render, count placeholders), in-process
or in a pool.

Redaction is done at ingest (`collector.pii.ingest`): texts arrive here redacted already. The main process pages
through the matching conversation ids (keyset pages of `reading.CHUNK`); for large exports, worker processes each
read their pages' turns and reviews from the store themselves and do all the per-conversation work, so only ids go
out and only spool text and fixed-size fingerprints come back. Each worker gets its `PageExporter` once, in the
pool's initializer, and keeps it in this module's `_exporter`: multiprocessing gives a worker no other place to
keep state between tasks.
"""

from __future__ import annotations

import gc
import json
import os
import re
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from collector.dedup import BatchFingerprints, fingerprint_batch
from collector.export.exchanges import Exchange
from collector.export.options import ExportOptions
from collector.export.preference import PREFERENCE_FORMATS, dedup_pairs
from collector.export.reading import ConversationRow, read_page
from collector.export.recalled import TrainingMemory, example_attacher
from collector.export.render import RenderPlan, render_conversation
from collector.split import assign_split
from core import db
from core.settings import Settings

PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*?)_\d+>")  # <PERSON_1>: collector.pii's typed placeholders
_JSON = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(..., ensure_ascii=False) without a new encoder each call


class PreparedChunk(NamedTuple):
    """What one page of conversations left, small enough to send back from a worker process."""

    read: int  # conversations of the page (exported or not): the progress bar's step
    spool: str  # spool lines of its exportable conversations
    fingerprints: BatchFingerprints
    placeholders: Counter[str]  # redacted values by PII type
    dropped: Counter[str]  # conversations skipped, by reason
    dropped_turns: Counter[str]  # replies dropped, by reason
    pid: int  # the process that prepared it (the manifest counts them: the worker pool is seen to have run)


def spool_line(conversation_id: int, split: str, exchanges: list[Exchange], problem: str, lines: list[str]) -> str:
    """One conversation in the spool. JSON never holds a raw tab or newline, so they separate the fields."""
    fields = [str(conversation_id), split, problem, str(len(exchanges)), _JSON(exchanges)]
    return "\t".join([*fields, *lines]) + "\n"


def read_spool_line(line: str) -> tuple[int, str, str, int, str, list[str]]:
    """(conversation id, split, problem, exchange count, exchanges JSON, rendered lines) of one spool line."""
    conversation_id, split, problem, count, exchanges_json, *lines = line.rstrip("\n").split("\t")
    return int(conversation_id), split, problem, int(count), exchanges_json, lines


@dataclass
class PageExporter:
    """Reads one page of conversations from the store and fingerprints, splits and renders its exportable ones
    (texts already redacted at ingest)."""

    render: RenderPlan
    options: ExportOptions
    url: str
    knowledge: Settings | None  # the settings exchanges are grounded with (`reading.read_page`)
    memory: TrainingMemory | None = None  # answer memory's examples for each exchange (`recalled`; None: off)

    def __call__(self, page: list[ConversationRow]) -> PreparedChunk:
        dropped: Counter[str] = Counter()
        dropped_turns: Counter[str] = Counter()
        with db.session_scope(self.url) as session:
            examples = example_attacher(session, self.memory, preference=self.options.format in PREFERENCE_FORMATS
                                        ) if self.memory is not None else None
            batch = read_page(session, self.options, page, dropped, dropped_turns, knowledge=self.knowledge,
                              examples=examples)
        plan = self.render
        spool = []
        for conversation_id, key, created_at, exchanges in batch:
            split = assign_split(key, plan.seed, plan.ratios, created_at=created_at, holdout_after=plan.holdout_after)
            spool.append(spool_line(conversation_id, split, exchanges, *render_conversation(plan, exchanges)))
        found = Counter(PLACEHOLDER.findall("\n".join(
            text for _, _, _, exchanges in batch for pair in exchanges for text in pair[:2]
        ))) if self.options.redact else Counter()
        pairs = [dedup_pairs(exchanges) if exchanges and len(exchanges[0]) > 2 else exchanges
                 for _, _, _, exchanges in batch]  # preference exchanges carry the draft and decision too
        return PreparedChunk(len(page), "".join(spool), fingerprint_batch(pairs), found, dropped, dropped_turns,
                             os.getpid())


_exporter: PageExporter | None = None  # a worker process's own exporter (see the module docstring)


def start_worker(exporter: PageExporter) -> None:
    global _exporter
    _exporter = exporter

    # the modules' objects live as long as the worker: keep the collector from walking them again and again while
    # pages allocate rows and records by the hundred thousand (a sixth of a worker's time otherwise)
    gc.freeze()


def export_in_worker(page: list[ConversationRow]) -> PreparedChunk:
    assert _exporter is not None, "start_worker runs first in every worker process"
    return _exporter(page)


def in_order(pool: Any, pages: Iterator[list[ConversationRow]], *, ahead: int) -> Iterator[PreparedChunk]:
    """`pool.imap(export_in_worker, pages)` with at most `ahead` pages in flight.

    imap would queue every page of the store as fast as it can: memory would grow with the export.
    """
    in_flight: deque[Any] = deque()
    for page in pages:
        in_flight.append(pool.apply_async(export_in_worker, (page,)))
        if len(in_flight) >= ahead:
            yield in_flight.popleft().get()
    while in_flight:
        yield in_flight.popleft().get()
