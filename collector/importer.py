"""`housestyle import`: load conversation files into the store, each reply as an agent-reviewed draft.

Every line becomes the same rows live traffic makes (see `collector.recorder`): a closed Conversation, its
Messages, and per assistant turn a Draft plus the Review that says what the agent did with it. Reviews carry
agent id `import` so online statistics never mistake history for live feedback.

A file lands in one transaction: either all its good lines or nothing. Re-importing adds nothing twice, because
each conversation's canonical record is hashed into `Conversation.content_hash`.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import Table, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from collector.formats import (
    DEFAULT_MAX_MESSAGE_CHARS,
    ChatRecord,
    HouseStyleRecord,
    HouseStyleTurn,
    RecordError,
    as_housestyle,
    parse_record,
)
from collector.stats import IMPORT_AGENT
from core.changes import edit_distance
from core.db import session_scope
from core.errors import InputError, StoreError
from core.models import (
    DEFAULT_BRAND_ID,
    Conversation,
    ConversationStatus,
    Draft,
    DraftStatus,
    Message,
    ReplyMode,
    Review,
    ReviewDecision,
    Role,
    utcnow,
)
from core.settings import Settings

BATCH_SIZE = 500  # conversations per round of multi-row inserts: few round trips, bounded memory
# Postgres plans the duplicate lookups from table statistics, which never see rows added inside this one transaction
ANALYZE_EVERY = 10_000
LOOKUP_CHUNK = 500  # keys per IN (...) query, well under every driver's parameter limit
PROGRESS_MIN_BYTES = 2_000_000  # smaller files import in about a second: no bar
CONVERSATIONS, MESSAGES, DRAFTS, REVIEWS = (model.__table__ for model in (Conversation, Message, Draft, Review))


class LineError(BaseModel):
    """A line that was not imported, and why."""

    line: int
    reason: str


class ImportReport(BaseModel):
    """What an import did: new conversations and messages, lines skipped as already present, bad lines."""

    added: int = 0
    messages: int = 0
    duplicates: int = 0
    system_messages_dropped: int = 0
    errors: list[LineError] = Field(default_factory=list)


class ImportRefused(InputError):
    """`--strict` and the file has bad lines: nothing was imported. `report.errors` lists them."""

    def __init__(self, path: Path, report: ImportReport) -> None:
        report.errors.sort(key=lambda error: error.line)
        first = report.errors[0]
        super().__init__(
            f"{path}: {len(report.errors)} bad line(s), first at line {first.line}: {first.reason}; "
            "nothing was imported (fix the lines, or import without --strict to load the good ones)"
        )
        self.report = report


class _Parsed(BaseModel):
    line: int
    record: HouseStyleRecord
    content_hash: str


def canonical_hash(record: HouseStyleRecord) -> str:
    """sha256 of the record's canonical JSON: same conversation, same hash, whatever the file's key order."""
    payload = json.dumps(record.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


UTF8_BOM = b"\xef\xbb\xbf"
CHECK_CHUNK_BYTES = 1 << 20


def check_file(path: Path) -> int:
    """Refuse, in one line and before the store is touched, a file that is missing, a folder, not UTF-8 or empty.

    Reads it in 1 MiB chunks (nothing is kept); returns its size in bytes.
    """
    if not path.exists():
        raise InputError(f"{path} does not exist; give the path of a .jsonl file")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the path of a .jsonl file inside it")
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset, blank = 0, True
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHECK_CHUNK_BYTES):
                try:
                    text = decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"{path} is not UTF-8 text (bad byte at offset {offset + exc.start}); save it as UTF-8 JSONL"
                    ) from None
                blank = blank and not text.strip()
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InputError(
            f"{path} is not UTF-8 text (it ends in the middle of a character); save it as UTF-8 JSONL"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if blank:
        raise InputError(f"{path} is empty; nothing to import")
    return offset


DEFAULT_MAX_LINE_BYTES: int = Settings.model_fields["import_max_line_bytes"].default


def iter_lines(path: Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[int, str | int, int]]:
    """(line number, text, bytes read so far), one line in memory at a time (`check_file` vouched for the bytes).

    A line longer than `max_line_bytes` (without its line ending) comes as its length in bytes instead of its text:
    at most `max_line_bytes` and a few bytes of it are ever held, the rest is skipped in 1 MiB reads (issue 28: a 60
    MB line of 3,200 messages was accepted and its redaction ran past 10 minutes at 4.2 GB).

    Lines end at '\n' only (a '\r' before it is dropped): JSON strings may hold U+2028 or U+0085 unescaped, and
    those must not split a record the way `str.splitlines` would.
    """
    read_at_most = max_line_bytes + len(UTF8_BOM) + 2  # the longest good line with a BOM and "\r\n"
    with path.open("rb") as handle:
        consumed, number = 0, 0
        while raw := handle.readline(read_at_most):
            number += 1
            consumed += len(raw)
            if number == 1:
                raw = raw.removeprefix(UTF8_BOM)
            content = raw.rstrip(b"\r\n")
            if len(content) > max_line_bytes:
                size = len(content)
                while not raw.endswith(b"\n") and (raw := handle.readline(CHECK_CHUNK_BYTES)):
                    consumed += len(raw)
                    size += len(raw.rstrip(b"\r\n"))
                content = raw = b""
                yield number, size, consumed
                continue
            line, content, raw = content.decode("utf-8"), b"", b""  # drop the bytes before the caller parses
            yield number, line, consumed


def brand_hash(content_hash: str, brand_id: int) -> str:
    """A conversation's identity within its brand: the same text imported into two brands is two conversations."""
    if brand_id == DEFAULT_BRAND_ID:
        return content_hash  # as before brands, so re-importing old files still finds them
    return hashlib.sha256(f"brand-{brand_id}:{content_hash}".encode()).hexdigest()


def parse_line(
    number: int, line: str, seen: set[str], report: ImportReport, *, max_message_chars: int,
    brand_id: int = DEFAULT_BRAND_ID,
) -> _Parsed | None:
    """A good line as a HouseStyle record with its hash; a bad line or an in-file repeat goes to the report."""
    try:
        record = parse_record(line, max_message_chars=max_message_chars)
    except RecordError as exc:
        report.errors.append(LineError(line=number, reason=str(exc)))
        return None
    if isinstance(record, ChatRecord):
        report.system_messages_dropped += sum(1 for message in record.messages if message.role == "system")
    if isinstance(record, HouseStyleRecord):
        conversation, content_hash = record, brand_hash(canonical_hash(record), brand_id)
    else:
        # chat and prompt/completion lines have no id of their own: their content names them
        conversation = as_housestyle(record, external_id="-", channel=None)
        content_hash = brand_hash(canonical_hash(conversation), brand_id)
        conversation.external_id = f"import-{content_hash[:24]}"
    if content_hash in seen:
        report.duplicates += 1
        return None
    seen.add(content_hash)
    return _Parsed(line=number, record=conversation, content_hash=content_hash)


def parsed_batches(path: Path, report: ImportReport, *, max_message_chars: int, size: int = BATCH_SIZE,
                   brand_id: int = DEFAULT_BRAND_ID, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[list[_Parsed], int]]:
    """The file's good lines in batches of `size`, each with the bytes read so far. Nothing is kept from one batch
    to the next: a repeat of a line of an earlier batch is found in the store, where that batch is by then (in the
    import's own transaction); keeping every hash of the file took ~150 MB at a million conversations."""
    seen: set[str] = set()  # this batch's hashes
    batch: list[_Parsed] = []
    consumed = 0
    for number, line, consumed in iter_lines(path, max_line_bytes):
        if isinstance(line, int):
            report.errors.append(LineError(line=number, reason=(
                f"line is {line:,} bytes, over the {max_line_bytes:,}-byte limit; not read (split the conversation, "
                "or raise HOUSESTYLE_IMPORT_MAX_LINE_BYTES)")))
            continue
        if not line.strip():
            continue
        parsed = parse_line(number, line, seen, report, max_message_chars=max_message_chars, brand_id=brand_id)
        if parsed is not None:
            batch.append(parsed)
        if len(batch) >= size:
            yield batch, consumed
            batch, seen = [], set()
    yield batch, consumed


def _chunks(items: Sequence, size: int = LOOKUP_CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def refresh_statistics(session: Session) -> None:
    """Postgres: re-read the statistics of the tables the import grows (inside the transaction, rows included), so
    later batches' lookups keep using the indexes; SQLite needs none."""
    if session.get_bind().dialect.name == "postgresql":
        for table in ("conversation", "message", "draft", "review"):
            session.execute(text(f"ANALYZE {table}"))


def drop_known(session: Session, parsed: list[_Parsed], channel: str, report: ImportReport,
               brand_id: int = DEFAULT_BRAND_ID) -> list[_Parsed]:
    """Skip conversations already stored; an id already taken in the brand by different content is a bad line."""
    hashes = [item.content_hash for item in parsed]
    known: set[str] = set()
    for chunk in _chunks(hashes):
        known.update(session.execute(select(Conversation.content_hash).where(Conversation.content_hash.in_(chunk))).scalars())
    fresh = [item for item in parsed if item.content_hash not in known]
    report.duplicates += len(parsed) - len(fresh)

    by_channel: dict[str, list[str]] = defaultdict(list)
    for item in fresh:
        by_channel[item.record.channel or channel].append(item.record.external_id)
    taken: set[tuple[str, str]] = set()
    for conversation_channel, ids in by_channel.items():
        for chunk in _chunks(ids):
            rows = session.execute(
                select(Conversation.external_id).where(
                    Conversation.channel == conversation_channel, Conversation.external_id.in_(chunk),
                    Conversation.brand_id == brand_id,
                )
            ).scalars()
            taken.update((conversation_channel, external_id) for external_id in rows)

    kept = []
    for item in fresh:
        key = (item.record.channel or channel, item.record.external_id)
        if key in taken:
            report.errors.append(
                LineError(
                    line=item.line,
                    reason=f"conversation '{key[1]}' on channel '{key[0]}' is already stored with different content; "
                    "give it a new external_id",
                )
            )
            continue
        taken.add(key)
        kept.append(item)
    return kept


def _insert_returning_ids(session: Session, table: Table, rows: list[dict]) -> list[int]:
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(session.execute(statement, rows).scalars())


def store_batch(session: Session, batch: Sequence[_Parsed], channel: str, source: str,
                brand_id: int = DEFAULT_BRAND_ID) -> int:
    """Write a batch as the recorder would have, in multi-row inserts.

    Core inserts, not ORM objects: building and flushing one SQLModel object per row cost five times the SQL.
    """
    now = utcnow()
    stamps = [item.record.created_at or now for item in batch]
    conversation_ids = _insert_returning_ids(
        session,
        CONVERSATIONS,
        [
            {
                "external_id": item.record.external_id,
                "channel": item.record.channel or channel,
                "customer_ref": item.record.customer_ref,
                "mode": ReplyMode.ASSIST.value,
                "status": ConversationStatus.CLOSED.value,  # history: nothing more will be said in it
                "source": source,
                "content_hash": item.content_hash,
                "brand_id": brand_id,
                "created_at": stamp,
                "updated_at": stamp,
            }
            for item, stamp in zip(batch, stamps, strict=True)
        ],
    )

    # positions follow recorder._next_position: a rejected draft with no reply leaves its slot to the next turn
    messages: list[dict] = []
    drafts: list[dict] = []
    replies: list[tuple[HouseStyleTurn, int]] = []  # each assistant turn and the position of its draft
    for item, conversation_id, stamp in zip(batch, conversation_ids, stamps, strict=True):
        position = 0
        for turn in item.record.messages:
            if turn.role == "user":
                messages.append(_message_row(conversation_id, position, Role.USER, turn.content, None, stamp))
                position += 1
                continue
            drafts.append(
                {
                    "conversation_id": conversation_id,
                    "position": position,
                    "content": turn.draft,
                    "prompt": None,
                    "adapter_version": None,
                    "latency_ms": None,
                    "status": DraftStatus.REVIEWED.value,
                    "claimed_by": None,
                    "claimed_until": None,
                    "created_at": stamp,
                }
            )
            replies.append((turn, position))
            if turn.final_text is not None:
                position += 1
    draft_ids = _insert_returning_ids(session, DRAFTS, drafts) if drafts else []

    reviews: list[dict] = []
    for (turn, _), draft, draft_id in zip(replies, drafts, draft_ids, strict=True):
        final_text = turn.final_text
        reviews.append(
            {
                "draft_id": draft_id,
                "decision": ReviewDecision(turn.decision).value,
                "final_text": final_text,
                "agent_id": IMPORT_AGENT,
                "reason": f"imported; agent {turn.agent_id}" if turn.agent_id else "imported",
                "edit_distance": edit_distance(turn.draft, final_text) if final_text is not None else 1.0,
                "created_at": draft["created_at"],
            }
        )
        if final_text is not None:
            messages.append(
                _message_row(draft["conversation_id"], draft["position"], Role.ASSISTANT, final_text, draft_id, draft["created_at"])
            )
    if reviews:
        session.execute(insert(REVIEWS), reviews)
    session.execute(insert(MESSAGES), messages)
    return len(messages)


def _message_row(conversation_id: int, position: int, role: Role, content: str, draft_id: int | None, stamp: datetime) -> dict:
    return {
        "conversation_id": conversation_id,
        "position": position,
        "role": role.value,
        "content": content,
        "draft_id": draft_id,
        "created_at": stamp,
    }


def import_file(
    path: Path | str,
    *,
    url: str,
    strict: bool = False,
    channel: str = "import",
    source: str = "import",
    max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
    brand_id: int = DEFAULT_BRAND_ID,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ImportReport:
    """Import a JSONL file of OpenAI chat, prompt/completion or HouseStyle lines (detected per line).

    `channel` is recorded on conversations whose line names none. Bad lines (a message longer than
    `max_message_chars`, a line longer than `max_line_bytes`, among them) are reported and skipped; with `strict`, any bad line raises ImportRefused and
    the store is left as it was. The file is read one line at a time and stored in batches inside one
    transaction, so memory stays flat however large the file is. The conversations belong to `brand_id`.
    """
    path = Path(path)
    if not channel.strip() or len(channel) > 100:
        raise InputError("--channel needs a name of 1 to 100 characters, such as 'import' or 'zendesk'")
    size = check_file(path)
    report = ImportReport()
    try:
        with session_scope(url) as session:
            console = Console(stderr=True)  # stdout keeps the summary clean for scripts
            quiet = size < PROGRESS_MIN_BYTES or not console.is_terminal
            with Progress(console=console, transient=True, disable=quiet) as progress:
                task = progress.add_task(f"importing {path.name}", total=size)
                for batch, consumed in parsed_batches(path, report, max_message_chars=max_message_chars,
                                                      brand_id=brand_id, max_line_bytes=max_line_bytes):
                    progress.update(task, completed=consumed)
                    if strict and report.errors:
                        continue  # refused below (every bad line still listed); the transaction rolls back
                    fresh = drop_known(session, batch, channel, report, brand_id)
                    if fresh and not (strict and report.errors):
                        report.messages += store_batch(session, fresh, channel, source, brand_id)
                        report.added += len(fresh)
                        if report.added % ANALYZE_EVERY < len(fresh):
                            refresh_statistics(session)
            if strict and report.errors:
                raise ImportRefused(path, report)
    except IntegrityError:
        raise StoreError(
            f"some conversations in {path} were stored by another writer during the import; "
            "nothing was imported, run it again"
        ) from None
    report.errors.sort(key=lambda error: error.line)
    return report
