"""Reading the store for an export: matching conversations by keyset pages, with their turns and review outcomes."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select

from collector import db
from collector.export.exchanges import DraftOutcome, Exchange, StoredTurn, build_exchanges
from collector.export.options import ExportOptions, as_utc
from collector.export.preference import PREFERENCE_FORMATS, build_preference_exchanges
from collector.models import Conversation, Draft, Message, Review
from collector.settings import Settings

CHUNK = 1000  # conversations per store round trip

ReadConversation = tuple[int, str, datetime, list[Exchange]]  # (id, split key, created_at, exchanges)


def _conversation_filter(options: ExportOptions) -> list[Any]:
    conditions: list[Any] = []
    if options.since is not None:
        conditions.append(Conversation.created_at >= options.since)
    if options.until is not None:
        conditions.append(Conversation.created_at < options.until)
    if options.channels:
        conditions.append(Conversation.channel.in_(options.channels))
    if options.brand_id is not None:
        conditions.append(Conversation.brand_id == options.brand_id)
    return conditions


def split_key(channel: str, external_id: str) -> str:
    """The key a conversation's split is drawn from: stable for as long as the conversation exists."""
    return f"{channel}/{external_id}"


def content_key(channel: str, opening: str) -> str:
    """The split key of a conversation whose id is our own random one (widget, OpenAI API): its opening message
    (redacted: the key survives the retention purge), so the same conversation gets the same split on every run,
    and conversations that open alike share one."""
    digest = hashlib.blake2b(" ".join(opening.lower().split()).encode(), digest_size=12).hexdigest()
    return f"{channel}/opening:{digest}"


def count_conversations(url: str, options: ExportOptions) -> int:
    with db.session_scope(url) as session:
        return session.execute(select(func.count(Conversation.id)).where(*_conversation_filter(options))).scalar_one()


def _conversation_chunks(connection: Any, options: ExportOptions) -> Iterator[list[tuple[int, str | None, datetime]]]:
    """(id, split key, created_at) of the matching conversations, CHUNK at a time, by id (keyset pagination).

    The key is None for a conversation known by our own random id (`content_key` decides once its turns are read)."""
    last_id = 0
    conditions = _conversation_filter(options)
    while True:
        rows = connection.execute(
            select(Conversation.id, Conversation.channel, Conversation.external_id, Conversation.created_at,
                   Conversation.access_token_hash, Conversation.source)
            .where(Conversation.id > last_id, *conditions)
            .order_by(Conversation.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        yield [(row[0], None if row[4] is not None or row[5] == "api" else split_key(row[1], row[2]), as_utc(row[3]))
               for row in rows]
        last_id = rows[-1][0]


class StoredConversation(NamedTuple):
    """One conversation as the store holds it: its split key, turns, and every draft with what became of it."""

    id: int
    key: str
    created_at: datetime
    turns: list[StoredTurn]
    drafts: dict[int, DraftOutcome]


def stored_conversations(
    connection: Any, options: ExportOptions, *, redacted: bool | None = None
) -> Iterator[list[StoredConversation]]:
    """The conversations `options` selects, CHUNK at a time, with their turns and review outcomes (three queries).

    Texts are the redacted ones stored at ingest when `redacted` (default: `options.redact`), else the raw ones; a
    text not redacted yet reads as None there (`count_unredacted` says how many).
    """
    redacted = options.redact if redacted is None else redacted
    content = Message.redacted_content if redacted else Message.content
    final = Review.redacted_final_text if redacted else Review.final_text
    drafted = Draft.redacted_content if redacted else Draft.content
    for chunk in _conversation_chunks(connection, options):
        ids = [conversation_id for conversation_id, _, _ in chunk]
        turns: dict[int, list[StoredTurn]] = {i: [] for i in ids}
        openings: dict[int, str] = {}
        for conversation_id, position, role, text, draft_id, redacted_text, raw in connection.execute(
            select(Message.conversation_id, Message.position, Message.role, content, Message.draft_id,
                   Message.redacted_content, Message.content)
            .where(Message.conversation_id.in_(ids))
            .order_by(Message.conversation_id, Message.position)
        ).all():
            turns[conversation_id].append(StoredTurn(position, str(role), text, draft_id))
            if str(role) == "user" and conversation_id not in openings:
                openings[conversation_id] = redacted_text if redacted_text is not None else raw
        drafts: dict[int, dict[int, DraftOutcome]] = {i: {} for i in ids}
        for row in connection.execute(
            select(Draft.conversation_id, Draft.id, Draft.position, Draft.status, Review.decision, final,
                   Draft.adapter_version, Review.agent_id, Review.edit_distance, drafted)
            .outerjoin(Review, Review.draft_id == Draft.id)
            .where(Draft.conversation_id.in_(ids))
        ).all():
            conversation_id, draft_id, position, status, decision, final_text, version, agent, distance, draft = row
            drafts[conversation_id][draft_id] = DraftOutcome(
                position, str(status), str(decision) if decision is not None else None, final_text, version, agent,
                distance, draft,
            )
        channels = dict(connection.execute(select(Conversation.id, Conversation.channel).where(
            Conversation.id.in_([i for i, key, _ in chunk if key is None]))).all()) if any(
            key is None for _, key, _ in chunk) else {}
        yield [StoredConversation(i, key or content_key(channels[i], openings.get(i, "")), created_at, turns[i],
                                  drafts[i]) for i, key, created_at in chunk]


def count_unredacted(url: str, options: ExportOptions) -> int:
    """Texts of the conversations `options` selects that the redaction worker has not redacted yet."""
    selected = select(Conversation.id).where(*_conversation_filter(options))
    with db.session_scope(url) as session:
        total = session.execute(select(func.count()).select_from(Message).where(
            Message.redacted_content.is_(None), Message.conversation_id.in_(selected))).scalar_one()
        total += session.execute(select(func.count()).select_from(Review).join(Draft, Draft.id == Review.draft_id).where(
            Review.redacted_final_text.is_(None), Review.final_text.is_not(None),
            Draft.conversation_id.in_(selected))).scalar_one()
        if options.format in PREFERENCE_FORMATS:  # their rows carry the drafts' own text
            total += session.execute(select(func.count()).select_from(Draft).where(
                Draft.redacted_content.is_(None), Draft.conversation_id.in_(selected))).scalar_one()
    return total


def read_conversations(
    url: str,
    options: ExportOptions,
    dropped: Counter[str],
    dropped_turns: Counter[str],
    on_chunk: Callable[[int], None],
    *,
    knowledge: Settings | None = None,
) -> Iterator[ReadConversation]:
    """Stream (id, split key, created_at, exchanges) of every exportable conversation; count those skipped and why.

    `knowledge`: the settings to ground exchanges with (each gets its reply's passages, `export_grounding`)."""
    from collector.knowledge.export_grounding import export_grounder  # collector.knowledge imports the export

    kept = {decision.value for decision in options.decisions}
    with db.session_scope(url) as session:
        connection = session.connection()  # Core rows: no ORM bookkeeping for hundreds of thousands of them
        attach = export_grounder(session, knowledge) if knowledge is not None else None
        for chunk in stored_conversations(connection, options):
            for conversation in chunk:
                if options.format in PREFERENCE_FORMATS:  # pairs of replies: no passages (they are the chat's)
                    result = build_preference_exchanges(conversation.turns, conversation.drafts, kept, dropped_turns,
                                                        options.format)
                else:
                    replied_by: list[int | None] = []
                    result = build_exchanges(conversation.turns, conversation.drafts, kept, dropped_turns, replied_by)
                    if attach is not None and isinstance(result, list) and result:
                        attach(result, replied_by)
                if isinstance(result, str):
                    dropped[result] += 1
                elif not result:
                    dropped["no kept reply"] += 1
                else:
                    yield conversation.id, conversation.key, conversation.created_at, result
            on_chunk(len(chunk))
