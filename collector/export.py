"""Export reviewed conversations as training data: redacted, de-duplicated, split by conversation, with a manifest.

The folder written (`--out DIR`) is the contract the trainer reads:

    DIR/
      manifest.json            ExportManifest: counts per split, what was dropped and why, redactions by type,
                               dedup counts, the options used, schema_version, created_at, content_sha256
      train.jsonl              format chat / prompt-completion: one JSON record per line
      validation.jsonl
      test.jsonl
      hf/                      format hf instead of the three .jsonl files: a `datasets.DatasetDict`
                               (train / validation / test) saved with `save_to_disk`; load with
                               `datasets.load_from_disk(DIR / "hf")`

Records:
- chat: `{"messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", ...},
  {"role": "assistant", ...}, ...]}` - the company system prompt first, then strictly alternating user/assistant
  turns, ending with an assistant turn (checked with `collector.formats.ChatRecord`). hf rows have the same
  `messages` column.
- prompt-completion: one line per reply, `{"prompt": ..., "completion": ...}`. The prompt is the system prompt,
  a blank line, then the history as `Customer: ...` / `Agent: ...` lines, ending with `Agent:`; the completion is
  a space followed by the reply, so `prompt + completion` reads as the transcript.

What goes in: only reviewed data. Per conversation, in `Message.position` order, customer turns and the agents'
final texts (`Review.final_text`; a draft's own text is never exported). A reply whose decision is not kept
(default: rejected) is dropped with the customer turn(s) it answered; so are replies over the macro cap.
Consecutive customer turns are joined with a blank line, as are consecutive replies. An assistant message with no
draft behind it was written by an agent directly and counts as approved. A conversation with a draft still waiting
for review is skipped whole. Stored system messages are not exported: the company's system prompt replaces them.

How: conversations stream from the store in chunks of `CHUNK` (keyset pagination on id), are redacted and
fingerprinted, and land in a spool file; after the pass the duplicate plan is made, and a second pass over the spool
writes the splits. Memory stays flat apart from ~150 bytes of fingerprint per conversation. Everything is written
into a temporary folder beside DIR that replaces DIR only when the export succeeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import func, select

from collector import db
from collector.dedup import BatchFingerprints, DedupPlan, DuplicateFinder, fingerprint_batch
from collector.errors import InputError
from collector.formats import ChatRecord, PromptCompletionRecord, first_problem
from collector.models import Conversation, Draft, DraftStatus, Message, Review, ReviewDecision, Role
from collector.redact import PiiType, Redactor
from collector.settings import get_settings
from collector.split import SPLITS, SplitRatios, assign_split

SCHEMA_VERSION = 1
CHUNK = 1000  # conversations per store round trip
EXPORT_FORMATS = ("chat", "prompt-completion", "hf")

ExportFormat = Literal["chat", "prompt-completion", "hf"]
Exchange = list[str]  # [customer text, reply]


def _as_utc(moment: datetime | None) -> datetime | None:
    """Times without a zone are UTC, as everywhere in the store."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class ExportOptions(BaseModel):
    """What to export and how; the CLI and the trainer build one of these."""

    format: ExportFormat = "chat"
    out: Path
    since: datetime | None = None  # conversations created at or after
    until: datetime | None = None  # conversations created before
    channels: list[str] = Field(default_factory=list)  # empty: every channel
    decisions: list[ReviewDecision] = Field(default_factory=lambda: [ReviewDecision.APPROVED, ReviewDecision.EDITED])
    redact: bool = True
    dedup: bool = True
    holdout_after: datetime | None = None  # conversations created at or after all go to test
    seed: int = 0
    ratios: SplitRatios = Field(default_factory=SplitRatios)
    near_duplicate_threshold: float | None = Field(None, gt=0, le=1)  # None: the settings' value
    max_macro_copies: int | None = Field(None, ge=1)  # None: the settings' value

    @field_validator("format", mode="before")
    @classmethod
    def _known_format(cls, value: Any) -> Any:
        if value not in EXPORT_FORMATS:
            raise ValueError(f"unknown format '{value}'; use one of: {', '.join(EXPORT_FORMATS)}")
        return value

    @field_validator("decisions", mode="before")
    @classmethod
    def _known_decisions(cls, value: Any) -> Any:
        known = {decision.value for decision in ReviewDecision}
        for decision in value or []:
            if str(decision) not in known:
                raise ValueError(f"unknown decision '{decision}'; use some of: {', '.join(sorted(known))}")
        if not value:
            raise ValueError("keep at least one decision, e.g. approved,edited")
        return value

    @field_validator("since", "until", "holdout_after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value)

    @model_validator(mode="after")
    def _range_is_sane(self) -> ExportOptions:
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"--since {self.since:%Y-%m-%d %H:%M} is not before --until {self.until:%Y-%m-%d %H:%M}")
        return self


class DedupCounts(BaseModel):
    exact_duplicates: int = 0  # conversations
    near_duplicates: int = 0  # conversations
    macro_copies: int = 0  # replies over the cap (dropped with the customer turn they answered)
    threshold: float
    max_macro_copies: int


class ExportManifest(BaseModel):
    """manifest.json: everything a reader of the export (or an auditor) needs to know about it."""

    schema_version: int = SCHEMA_VERSION
    created_at: datetime
    format: ExportFormat
    system_prompt: str
    files: dict[str, str]  # split -> path relative to the export folder
    conversations: dict[str, int]  # split -> conversations
    records: dict[str, int]  # split -> lines / rows (prompt-completion: one per reply)
    dropped_conversations: dict[str, int]  # reason -> conversations
    dropped_turns: dict[str, int]  # reason -> replies dropped (each with the customer turns it answered)
    redactions: dict[str, int]  # PII type -> replacements
    dedup: DedupCounts | None
    options: dict[str, Any]
    content_sha256: str  # of the records, split by split: the same data gives the same hash

    @property
    def total_conversations(self) -> int:
        return sum(self.conversations.values())

    def summary(self) -> str:
        """A few lines for people: what was written, what was left out, and why."""
        splits = " / ".join(f"{name} {self.conversations.get(name, 0)}" for name in SPLITS)
        lines = [f"exported {self.total_conversations} conversations ({splits}) as {self.format}"]
        if self.format == "prompt-completion":
            lines[0] += f", {sum(self.records.values())} prompt/completion pairs"
        if self.dropped_conversations:
            lines.append("skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.dropped_conversations.items())))
        if self.dropped_turns:
            lines.append("dropped replies: " + ", ".join(f"{n} {why}" for why, n in sorted(self.dropped_turns.items())))
        if self.options.get("redact"):
            found = ", ".join(f"{n} {kind}" for kind, n in self.redactions.items() if n) or "none found"
            lines.append(f"PII redacted: {found}")
        else:
            lines.append("PII redaction: off")
        if self.dedup is not None:
            lines.append(
                f"duplicates removed: {self.dedup.exact_duplicates} exact, {self.dedup.near_duplicates} near "
                f"(similarity >= {self.dedup.threshold}), {self.dedup.macro_copies} macro replies over "
                f"{self.dedup.max_macro_copies} copies"
            )
        else:
            lines.append("de-duplication: off")
        lines.append(f"content sha256 {self.content_sha256}")
        return "\n".join(lines)


# --- reading the store -------------------------------------------------------------------------------------------


PENDING = "pending review"


def _conversation_filter(options: ExportOptions) -> list[Any]:
    conditions: list[Any] = []
    if options.since is not None:
        conditions.append(Conversation.created_at >= options.since)
    if options.until is not None:
        conditions.append(Conversation.created_at < options.until)
    if options.channels:
        conditions.append(Conversation.channel.in_(options.channels))
    return conditions


def _count_conversations(session: Any, options: ExportOptions) -> int:
    return session.execute(select(func.count(Conversation.id)).where(*_conversation_filter(options))).scalar_one()


def _conversation_chunks(connection: Any, options: ExportOptions) -> Iterator[list[tuple[int, str, datetime]]]:
    """(id, split key, created_at) of the matching conversations, CHUNK at a time, by id (keyset pagination)."""
    last_id = 0
    conditions = _conversation_filter(options)
    while True:
        rows = connection.execute(
            select(Conversation.id, Conversation.channel, Conversation.external_id, Conversation.created_at)
            .where(Conversation.id > last_id, *conditions)
            .order_by(Conversation.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        yield [(row[0], f"{row[1]}/{row[2]}", _as_utc(row[3])) for row in rows]
        last_id = rows[-1][0]


def _build_exchanges(
    turns: list[tuple[int, str, str | None, int | None]],
    drafts: dict[int, tuple[int, str, str | None, str | None]],
    kept: set[str],
    dropped_turns: Counter[str],
) -> list[Exchange] | str:
    """A conversation's kept (customer, reply) exchanges, or the reason to skip it whole.

    `turns`: (position, role, content, draft_id) of its messages; `drafts`: draft id -> (position, status,
    decision, final_text) of every draft, including those that never became a message (pending or rejected).
    """
    said = {draft_id for _, _, _, draft_id in turns if draft_id is not None}
    # a draft that never became a message (pending, or rejected with no reply) leaves its position to the next turn,
    # so at equal positions it comes first: it answered the turns before it
    events = [(position, 1, role, content, draft_id) for position, role, content, draft_id in turns]
    events += [(d[0], 0, Role.ASSISTANT.value, None, draft_id) for draft_id, d in drafts.items() if draft_id not in said]
    events.sort(key=lambda event: event[:2])
    exchanges: list[Exchange] = []
    waiting: list[str] = []  # customer turns not answered yet
    for _, _, role, content, draft_id in events:
        if role == Role.USER:
            waiting.append(content or "")
            continue
        if role != Role.ASSISTANT:
            continue  # stored system messages: the company system prompt replaces them
        if draft_id is None:
            decision, text = ReviewDecision.APPROVED.value, content
        else:
            _, status, decision, text = drafts[draft_id]
            if status == DraftStatus.PENDING or decision is None:
                return PENDING
        if decision not in kept or not text or not text.strip():
            dropped_turns[f"{decision} reply" if decision not in kept else "empty reply"] += 1
            waiting = []  # the customer turns it answered go with it
        elif waiting:
            exchanges.append(["\n\n".join(waiting), text])
            waiting = []
        elif exchanges:
            exchanges[-1][1] += "\n\n" + text
        else:
            dropped_turns["reply before any customer message"] += 1
    return exchanges


def _read_conversations(
    options: ExportOptions,
    dropped: Counter[str],
    dropped_turns: Counter[str],
    on_chunk: Any,
) -> Iterator[tuple[str, datetime, list[Exchange]]]:
    """Stream (split key, created_at, exchanges) of every exportable conversation; count those skipped."""
    kept = {decision.value for decision in options.decisions}
    with db.session_scope() as session:
        connection = session.connection()  # Core rows: no ORM bookkeeping for hundreds of thousands of them
        for chunk in _conversation_chunks(connection, options):
            ids = [conversation_id for conversation_id, _, _ in chunk]
            turns: dict[int, list[tuple[int, str, str | None, int | None]]] = {i: [] for i in ids}
            for conversation_id, position, role, content, draft_id in connection.execute(
                select(Message.conversation_id, Message.position, Message.role, Message.content, Message.draft_id)
                .where(Message.conversation_id.in_(ids))
                .order_by(Message.conversation_id, Message.position)
            ).all():
                turns[conversation_id].append((position, str(role), content, draft_id))
            drafts: dict[int, dict[int, tuple[int, str, str | None, str | None]]] = {i: {} for i in ids}
            for conversation_id, draft_id, position, status, decision, final_text in connection.execute(
                select(Draft.conversation_id, Draft.id, Draft.position, Draft.status, Review.decision, Review.final_text)
                .outerjoin(Review, Review.draft_id == Draft.id)
                .where(Draft.conversation_id.in_(ids))
            ).all():
                drafts[conversation_id][draft_id] = (
                    position, str(status), str(decision) if decision is not None else None, final_text
                )
            for conversation_id, key, created_at in chunk:
                result = _build_exchanges(turns[conversation_id], drafts[conversation_id], kept, dropped_turns)
                if isinstance(result, str):
                    dropped[result] += 1
                elif not result:
                    dropped["no kept reply"] += 1
                else:
                    yield key, created_at, result
            on_chunk(len(chunk))


# --- writing -------------------------------------------------------------------------------------------------------


def render_prompt(system_prompt: str, history: list[Exchange], customer: str) -> str:
    """The prompt of a prompt/completion line: system prompt, the exchanges so far, the customer's turn, `Agent:`."""
    lines = [system_prompt, ""]
    for earlier_customer, earlier_reply in history:
        lines.append(f"Customer: {earlier_customer}")
        lines.append(f"Agent: {earlier_reply}")
    lines.append(f"Customer: {customer}")
    lines.append("Agent:")
    return "\n".join(lines)


def chat_record(system_prompt: str, exchanges: list[Exchange]) -> dict[str, Any]:
    messages = [{"role": "system", "content": system_prompt}]
    for customer, reply in exchanges:
        messages.append({"role": "user", "content": customer})
        messages.append({"role": "assistant", "content": reply})
    return {"messages": messages}


def _records(fmt: ExportFormat, system_prompt: str, exchanges: list[Exchange]) -> list[dict[str, Any]]:
    """The validated output records of one conversation; ValidationError if any breaks the format's rules."""
    if fmt == "prompt-completion":
        records = []
        for index, (customer, reply) in enumerate(exchanges):
            record = {"prompt": render_prompt(system_prompt, exchanges[:index], customer), "completion": " " + reply}
            PromptCompletionRecord.model_validate(record)
            records.append(record)
        return records
    record = chat_record(system_prompt, exchanges)
    ChatRecord.model_validate(record)
    return [record]


def _prepare_target(out: Path) -> Path:
    """Check `out` can take an export; return the temporary folder to build it in (beside `out`)."""
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder path (it will hold train/validation/test + manifest.json)")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise InputError(
            f"--out {out} is a folder with other files in it; give a new or empty folder (an earlier export is replaced)"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as exc:
        raise InputError(f"cannot write an export beside {out}: {exc.strerror}; pick a writable folder") from None
    return staging


def _publish(staging: Path, out: Path) -> None:
    """Swap the finished export into place; an earlier export is removed only once the new one is there."""
    previous = None
    if out.exists():
        previous = out.parent / f".{out.name}.previous-{uuid.uuid4().hex[:8]}"
        os.replace(out, previous)
    try:
        os.replace(staging, out)
    except OSError:
        if previous is not None:
            os.replace(previous, out)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _save_hf(staging: Path, jsonl: dict[str, Path]) -> None:
    """The chat records as a DatasetDict in staging/hf, built from the split files without holding them in memory."""
    from datasets import Dataset, DatasetDict, Features, Value, disable_progress_bars

    disable_progress_bars()
    features = Features({"messages": [{"role": Value("string"), "content": Value("string")}]})
    cache = staging / ".hf-cache"
    splits = {}
    for name, path in jsonl.items():
        if path.stat().st_size:
            splits[name] = Dataset.from_json(str(path), features=features, cache_dir=str(cache), keep_in_memory=False)
        else:
            splits[name] = Dataset.from_dict({"messages": []}, features=features)
    # an empty split would be saved as zero shards, which load_from_disk cannot read back: ask for one shard
    empty = {name: 1 for name, split in splits.items() if len(split) == 0}
    DatasetDict(splits).save_to_disk(str(staging / "hf"), num_shards=empty or None)
    # save_to_disk copies the data; the cache and the intermediate files are no longer needed
    for split in splits.values():
        split.cleanup_cache_files()
    shutil.rmtree(cache, ignore_errors=True)
    for path in jsonl.values():
        path.unlink()


PARALLEL_FROM = 5000  # conversations; below this, starting worker processes costs more than it saves


class RenderPlan(BaseModel):
    """What a worker needs to turn conversations into finished lines: the format, system prompt and split rules."""

    format: ExportFormat
    system_prompt: str
    seed: int
    ratios: SplitRatios
    holdout_after: datetime | None


_worker: tuple[Redactor | None, RenderPlan] | None = None


def _batched(conversations: Iterator[Any]) -> Iterator[list[Any]]:
    batch = []
    for conversation in conversations:
        batch.append(conversation)
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _in_order(pool: Any, batches: Iterator[Any], *, ahead: int) -> Iterator[Any]:
    """`pool.imap(_prepare_batch, batches)` with at most `ahead` chunks in flight.

    imap would read the whole store into its task queue as fast as it can: memory would grow with the export.
    """
    in_flight: deque[Any] = deque()
    for batch in batches:
        in_flight.append(pool.apply_async(_prepare_batch, (batch,)))
        if len(in_flight) >= ahead:
            yield in_flight.popleft().get()
    while in_flight:
        yield in_flight.popleft().get()


def _start_worker(redactor: Redactor | None, render: RenderPlan) -> None:
    global _worker
    _worker = (redactor, render)


def export_options(**fields: Any) -> ExportOptions:
    """ExportOptions from what a user typed (CLI flags, an API body); a bad value is an InputError saying which."""
    try:
        return ExportOptions(**fields)
    except ValidationError as exc:
        raise InputError(first_problem(exc)) from None


def render_conversation(render: RenderPlan, exchanges: list[Exchange]) -> tuple[str, list[str]]:
    """(problem, JSON lines) of one conversation: the problem is "" when every record passed the format's rules."""
    try:
        return "", [json.dumps(record, ensure_ascii=False) for record in _records(render.format, render.system_prompt, exchanges)]
    except ValidationError as exc:
        return "invalid record: " + first_problem(exc), []


def _spool_line(split: str, exchanges: list[Exchange], problem: str, lines: list[str]) -> str:
    # JSON never holds a raw tab or newline, so they separate the fields: split, problem, count, exchanges, lines...
    return "\t".join([split, problem, str(len(exchanges)), json.dumps(exchanges, ensure_ascii=False), *lines]) + "\n"


def _prepare_batch(batch: list[tuple[str, datetime, list[Exchange]]]) -> tuple[str, BatchFingerprints, Counter[str]]:
    """Redact, fingerprint, split and render a chunk of conversations (in a worker process for large exports)."""
    assert _worker is not None
    redactor, render = _worker
    found: Counter[str] = Counter()
    if redactor is not None:
        redact = redactor.redact
        for _, _, exchanges in batch:
            for exchange in exchanges:
                exchange[0] = redact(exchange[0], found)
                exchange[1] = redact(exchange[1], found)
    spool = []
    for key, created_at, exchanges in batch:
        split = assign_split(key, render.seed, render.ratios, created_at=created_at, holdout_after=render.holdout_after)
        spool.append(_spool_line(split, exchanges, *render_conversation(render, exchanges)))
    return "".join(spool), fingerprint_batch([exchanges for _, _, exchanges in batch]), found


def export_dataset(options: ExportOptions, *, progress: bool | None = None) -> ExportManifest:
    """Write the export folder described in the module docstring and return its manifest."""
    settings = get_settings()
    threshold = options.near_duplicate_threshold or settings.near_duplicate_threshold
    max_macro_copies = options.max_macro_copies or settings.max_macro_copies
    system_prompt = settings.system_prompt
    redactor = Redactor.from_settings(settings) if options.redact else None
    staging = _prepare_target(options.out)
    try:
        manifest = _write_export(options, staging, system_prompt, redactor, threshold, max_macro_copies, progress)
        _publish(staging, options.out.expanduser())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _write_export(
    options: ExportOptions,
    staging: Path,
    system_prompt: str,
    redactor: Redactor | None,
    threshold: float,
    max_macro_copies: int,
    progress: bool | None,
) -> ExportManifest:
    dropped: Counter[str] = Counter()
    dropped_turns: Counter[str] = Counter()
    redactions: Counter[str] = Counter({pii_type.value: 0 for pii_type in PiiType})
    finder = DuplicateFinder()
    spool = staging / ".spool.jsonl"
    with db.session_scope() as session:
        total = _count_conversations(session, options)
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        transient=True, disable=not progress if progress is not None else False,
    )
    render = RenderPlan(
        format=options.format, system_prompt=system_prompt, seed=options.seed, ratios=options.ratios,
        holdout_after=options.holdout_after,
    )
    with bar, ExitStack() as pool_scope:
        reading = bar.add_task("reading conversations", total=total)
        batches = _batched(_read_conversations(options, dropped, dropped_turns, lambda n: bar.advance(reading, n)))
        workers = get_settings().export_workers or os.cpu_count() or 1
        if workers > 1 and total >= PARALLEL_FROM:
            # redaction and fingerprints are the costly steps: workers do them while this process reads the store
            pool = pool_scope.enter_context(
                get_context("spawn").Pool(workers, initializer=_start_worker, initargs=(redactor, render))
            )
            prepared = _in_order(pool, batches, ahead=2 * workers)
        else:
            _start_worker(redactor, render)
            prepared = map(_prepare_batch, batches)
        with spool.open("w", encoding="utf-8") as spool_file:
            for spool_text, fingerprints, found in prepared:
                redactions.update(found)
                spool_file.write(spool_text)
                finder.add(fingerprints)
        plan = finder.plan(threshold=threshold, max_macro_copies=max_macro_copies, near=True) if options.dedup else None
        writing = bar.add_task("writing splits", total=len(finder))
        counts, records, content_hash = _write_splits(
            render, staging, spool, plan, dropped, dropped_turns, lambda: bar.advance(writing)
        )
    spool.unlink()
    files = {name: f"{name}.jsonl" for name in SPLITS}
    if options.format == "hf":
        _save_hf(staging, {name: staging / path for name, path in files.items()})
        files = {name: f"hf/{name}" for name in SPLITS}
    manifest = ExportManifest(
        created_at=datetime.now(UTC),
        format=options.format,
        system_prompt=system_prompt,
        files=files,
        conversations=counts,
        records=records,
        dropped_conversations=dict(dropped),
        dropped_turns=dict(dropped_turns),
        redactions=dict(redactions) if redactor is not None else {},
        dedup=DedupCounts(
            exact_duplicates=plan.exact_duplicates,
            near_duplicates=plan.near_duplicates,
            macro_copies=plan.macro_copies,
            threshold=threshold,
            max_macro_copies=max_macro_copies,
        )
        if plan is not None
        else None,
        options=options.model_dump(mode="json") | {"near_duplicate_threshold": threshold, "max_macro_copies": max_macro_copies},
        content_sha256=content_hash,
    )
    (staging / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return manifest


def _write_splits(
    render: RenderPlan,
    staging: Path,
    spool: Path,
    plan: DedupPlan | None,
    dropped: Counter[str],
    dropped_turns: Counter[str],
    advance: Any,
) -> tuple[dict[str, int], dict[str, int], str]:
    """Second pass: apply the duplicate plan and write every finished record; return counts and the content hash."""
    counts = dict.fromkeys(SPLITS, 0)
    records = dict.fromkeys(SPLITS, 0)
    hashes = {name: hashlib.sha256() for name in SPLITS}
    reply_index = 0
    with ExitStack() as stack:
        outputs = {name: stack.enter_context((staging / f"{name}.jsonl").open("w", encoding="utf-8")) for name in SPLITS}
        with spool.open(encoding="utf-8") as spool_file:
            for index, line in enumerate(spool_file):
                advance()
                split, problem, exchange_count, exchanges_json, *lines = line.rstrip("\n").split("\t")
                first_reply, reply_index = reply_index, reply_index + int(exchange_count)
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
                text = "".join(record + "\n" for record in lines)
                outputs[split].write(text)
                hashes[split].update(text.encode())
    combined = hashlib.sha256("".join(f"{name}:{hashes[name].hexdigest()}\n" for name in SPLITS).encode())
    return counts, records, combined.hexdigest()
