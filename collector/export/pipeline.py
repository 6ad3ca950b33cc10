"""The export from start to finish: read, prepare (redact, fingerprint, render), de-duplicate, write splits, publish."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from collector.brands import brand_id_of
from collector.dedup import DedupPlan, DuplicateFinder
from collector.export.manifest import DedupCounts, ExportManifest
from collector.export.options import ExportOptions
from collector.export.preference import PREFERENCE_FORMATS, hf_features
from collector.export.reading import CHUNK, ConversationRow, conversation_pages, count_conversations, count_unredacted
from collector.export.recalled import training_memory
from collector.export.render import RenderPlan, render_conversation
from collector.export.staging import prepare_target, publish, save_hf
from collector.export.workers import PageExporter, PreparedChunk, in_order, read_spool_line, start_worker
from collector.pii.entities import PiiType
from collector.split import SPLITS
from core.db import session_scope
from core.errors import InputError
from core.settings import Settings

PARALLEL_FROM = 5000  # conversations; below this, starting worker processes costs more than it saves
CONVERSATION_IDS = "conversation_ids.tsv"  # split <TAB> store id of every exported conversation (erasure needs it)


def export_dataset(options: ExportOptions, *, settings: Settings, progress: bool | None = None) -> ExportManifest:
    """Write the export folder described in `collector.export` and return its manifest: one brand's conversations
    (settings.brand's), never several brands' mixed."""
    if options.brand_id is None:
        options = options.model_copy(update={"brand_id": brand_id_of(settings)})
    staging = prepare_target(options.out)
    try:
        manifest = _write_export(options, staging, settings, progress)
        publish(staging, options.out.expanduser())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _progress_bar(progress: bool | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        transient=True, disable=not progress if progress is not None else False,
    )


def _prepared(pages: Iterator[list[ConversationRow]], exporter: PageExporter, total: int, workers: int,
              scope: ExitStack) -> Iterator[PreparedChunk]:
    """Exported pages in order: in a pool of worker processes for large exports, else in this process."""
    if workers > 1 and total >= PARALLEL_FROM:
        # reading turns, building exchanges, rendering and fingerprints are all per page: workers do them all
        pool = scope.enter_context(get_context("spawn").Pool(workers, initializer=start_worker, initargs=(exporter,)))
        return in_order(pool, pages, ahead=2 * workers)
    return map(exporter, pages)


def _write_export(options: ExportOptions, staging: Path, settings: Settings, progress: bool | None) -> ExportManifest:
    url = settings.resolved_database_url
    threshold = options.near_duplicate_threshold or settings.near_duplicate_threshold
    max_macro_copies = options.max_macro_copies or settings.max_macro_copies
    render = RenderPlan.of(options, settings)
    if options.redact and (unredacted := count_unredacted(url, options)):
        raise InputError(
            f"{unredacted} texts of these conversations are not redacted yet; run `housestyle redact` (or let the "
            "running service's redaction worker finish) and export again, or export with --no-redact"
        )
    with session_scope(url) as session:  # the split of every selected conversation, when memory is on
        memory = training_memory(session.connection(), options, settings)
    exporter = PageExporter(render, options, url, knowledge=settings, memory=memory)
    dropped: Counter[str] = Counter()
    dropped_turns: Counter[str] = Counter()
    redactions: Counter[str] = Counter({pii_type.value: 0 for pii_type in PiiType})
    spool = staging / ".spool.jsonl"
    total = count_conversations(url, options)
    bar = _progress_bar(progress)
    with bar, ExitStack() as pool_scope:
        finder = pool_scope.enter_context(DuplicateFinder(staging / ".dedup", expected=total))
        reading = bar.add_task("reading conversations", total=total)
        workers = settings.export_workers or os.cpu_count() or 1
        session = pool_scope.enter_context(session_scope(url))
        pages = conversation_pages(session.connection(), options)
        processes: set[int] = set()  # which processes prepared the pages
        with spool.open("w", encoding="utf-8") as spool_file:
            for page in _prepared(pages, exporter, total, workers, pool_scope):
                bar.advance(reading, page.read)
                dropped.update(page.dropped)
                dropped_turns.update(page.dropped_turns)
                redactions.update(page.placeholders)
                spool_file.write(page.spool)
                finder.add(page.fingerprints)
                processes.add(page.pid)
        plan = finder.plan(threshold=threshold, max_macro_copies=max_macro_copies, near=True) if options.dedup else None
        writing = bar.add_task("writing splits", total=len(finder))
        counts, records, content_hash = write_splits(
            render, staging, spool, plan, dropped, dropped_turns, lambda n: bar.advance(writing, n)
        )
    files = {name: f"{name}.jsonl" for name in SPLITS}
    spool.unlink()
    if options.format == "hf":
        save_hf(staging, {name: staging / path for name, path in files.items()})
        files = {name: f"hf/{name}" for name in SPLITS}
    elif options.format in PREFERENCE_FORMATS:  # TRL reads either: the JSONL splits, and the same rows as hf/
        save_hf(staging, {name: staging / path for name, path in files.items()}, hf_features(options.format),
                keep_jsonl=True)
    manifest = ExportManifest(
        created_at=datetime.now(UTC),
        format=options.format,
        system_prompt=settings.system_prompt,
        brand=settings.brand,
        files=files,
        conversation_ids=CONVERSATION_IDS,
        hf_dataset="hf" if options.format in PREFERENCE_FORMATS else None,
        conversations=counts,
        records=records,
        worker_processes=len(processes - {os.getpid()}),
        dropped_conversations=dict(dropped),
        dropped_turns=dict(dropped_turns),
        redactions=dict(redactions) if options.redact else {},
        dedup=DedupCounts(
            exact_duplicates=plan.exact_duplicates, near_duplicates=plan.near_duplicates,
            macro_copies=plan.macro_copies, threshold=threshold, max_macro_copies=max_macro_copies,
        ) if plan is not None else None,
        options=options.model_dump(mode="json") | {"near_duplicate_threshold": threshold, "max_macro_copies": max_macro_copies},
        content_sha256=content_hash,
    )
    (staging / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return manifest


def write_splits(
    render: RenderPlan,
    staging: Path,
    spool: Path,
    plan: DedupPlan | None,
    dropped: Counter[str],
    dropped_turns: Counter[str],
    advance: Callable[[int], None],
) -> tuple[dict[str, int], dict[str, int], str]:
    """Second pass: apply the duplicate plan and write every finished record; return counts and the content hash."""
    counts = dict.fromkeys(SPLITS, 0)
    records = dict.fromkeys(SPLITS, 0)
    hashes = {name: hashlib.sha256() for name in SPLITS}
    reply_index = 0
    with ExitStack() as stack:
        outputs = {name: stack.enter_context((staging / f"{name}.jsonl").open("w", encoding="utf-8")) for name in SPLITS}
        ids = stack.enter_context((staging / CONVERSATION_IDS).open("w", encoding="utf-8"))
        with spool.open(encoding="utf-8") as spool_file:
            index = -1
            for index, line in enumerate(spool_file):
                if index % CHUNK == CHUNK - 1:
                    advance(CHUNK)  # the bar moves by pages: redrawing it per line cost more than the line
                conversation_id, split, problem, exchange_count, exchanges_json, lines = read_spool_line(line)
                first_reply, reply_index = reply_index, reply_index + exchange_count
                if plan is not None:
                    if plan.drop[index] != DedupPlan.KEEP:
                        dropped["exact duplicate" if plan.drop[index] == DedupPlan.EXACT else "near duplicate"] += 1
                        continue
                    over = plan.reply_over_cap[first_reply:reply_index]
                    if over.any():
                        exchanges = [pair for pair, capped in zip(json.loads(exchanges_json), over) if not capped]
                        dropped_turns["macro reply over cap"] += int(over.sum())
                        if not exchanges:
                            dropped["only macro replies over cap"] += 1
                            continue
                        problem, lines = render_conversation(render, exchanges)
                if problem:
                    dropped[problem] += 1
                    continue
                counts[split] += 1
                records[split] += len(lines)
                ids.write(f"{split}\t{conversation_id}\n")
                text = "".join(record + "\n" for record in lines)
                outputs[split].write(text)
                hashes[split].update(text.encode())
        advance((index + 1) % CHUNK)
    combined = hashlib.sha256("".join(f"{name}:{hashes[name].hexdigest()}\n" for name in SPLITS).encode())
    return counts, records, combined.hexdigest()
