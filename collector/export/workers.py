"""The per-conversation work of an export (fingerprint, split, render, count placeholders), in-process or in a pool.

Redaction is done at ingest (`collector.pii.ingest`): texts arrive here redacted already. Large exports hand chunks
to worker processes while the main process reads the store. Each worker gets its `BatchPreparer` once, in the
pool's initializer, and keeps it in this module's `_preparer`: multiprocessing gives a worker no other place to
keep state between tasks.
"""

from __future__ import annotations

import json
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from collector.dedup import BatchFingerprints, fingerprint_batch
from collector.export.exchanges import Exchange
from collector.export.preference import dedup_pairs
from collector.export.reading import CHUNK, ReadConversation
from collector.export.render import RenderPlan, render_conversation
from collector.split import assign_split

PreparedBatch = tuple[str, BatchFingerprints, Counter[str]]  # spool text, fingerprints, placeholders by type
PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*?)_\d+>")  # <PERSON_1>: collector.pii's typed placeholders


def spool_line(conversation_id: int, split: str, exchanges: list[Exchange], problem: str, lines: list[str]) -> str:
    """One conversation in the spool. JSON never holds a raw tab or newline, so they separate the fields."""
    fields = [str(conversation_id), split, problem, str(len(exchanges)), json.dumps(exchanges, ensure_ascii=False)]
    return "\t".join([*fields, *lines]) + "\n"


def read_spool_line(line: str) -> tuple[int, str, str, int, str, list[str]]:
    """(conversation id, split, problem, exchange count, exchanges JSON, rendered lines) of one spool line."""
    conversation_id, split, problem, count, exchanges_json, *lines = line.rstrip("\n").split("\t")
    return int(conversation_id), split, problem, int(count), exchanges_json, lines


def placeholders_by_type(exchanges: list[Exchange]) -> Counter[str]:
    """How many redacted values (placeholders) each PII type left in these texts."""
    return Counter(match.group(1) for pair in exchanges for text in pair[:2] for match in PLACEHOLDER.finditer(text))


@dataclass
class BatchPreparer:
    """Fingerprints, splits and renders one chunk of (already redacted) conversations."""

    render: RenderPlan
    count_placeholders: bool

    def __call__(self, batch: list[ReadConversation]) -> PreparedBatch:
        found: Counter[str] = Counter()
        plan = self.render
        spool = []
        for conversation_id, key, created_at, exchanges in batch:
            if self.count_placeholders:
                found.update(placeholders_by_type(exchanges))
            split = assign_split(key, plan.seed, plan.ratios, created_at=created_at, holdout_after=plan.holdout_after)
            spool.append(spool_line(conversation_id, split, exchanges, *render_conversation(plan, exchanges)))
        pairs = [dedup_pairs(exchanges) if exchanges and len(exchanges[0]) > 2 else exchanges
                 for _, _, _, exchanges in batch]  # preference exchanges carry the draft and decision too
        return "".join(spool), fingerprint_batch(pairs), found


_preparer: BatchPreparer | None = None  # a worker process's own preparer (see the module docstring)


def start_worker(preparer: BatchPreparer) -> None:
    global _preparer
    _preparer = preparer


def prepare_in_worker(batch: list[ReadConversation]) -> PreparedBatch:
    assert _preparer is not None, "start_worker runs first in every worker process"
    return _preparer(batch)


def batched(conversations: Iterable[ReadConversation], size: int = CHUNK) -> Iterator[list[ReadConversation]]:
    batch = []
    for conversation in conversations:
        batch.append(conversation)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def in_order(pool: Any, batches: Iterator[list[ReadConversation]], *, ahead: int) -> Iterator[PreparedBatch]:
    """`pool.imap(prepare_in_worker, batches)` with at most `ahead` chunks in flight.

    imap would read the whole store into its task queue as fast as it can: memory would grow with the export.
    """
    in_flight: deque[Any] = deque()
    for batch in batches:
        in_flight.append(pool.apply_async(prepare_in_worker, (batch,)))
        if len(in_flight) >= ahead:
            yield in_flight.popleft().get()
    while in_flight:
        yield in_flight.popleft().get()
