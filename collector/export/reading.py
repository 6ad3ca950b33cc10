"""Reading the store for an export: matching conversations by keyset pages, with their turns and review outcomes."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import case, func, null, select

from collector.export.exchanges import DraftOutcome, Exchange, StoredTurn, build_exchanges
from collector.export.options import ExportOptions
from collector.export.preference import PREFERENCE_FORMATS, build_preference_exchanges
from collector.knowledge.export_grounding import export_grounder
from core import db
from core.models import Conversation, Draft, Message, Review, as_utc
from core.settings import Settings

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


ConversationRow = tuple[int, str | None, datetime]  # (id, split key or None, created_at): one page's entry


def conversation_pages(connection: Any, options: ExportOptions) -> Iterator[list[ConversationRow]]:
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


def _in_page(column: Any, ids: list[int]) -> list[Any]:
    """The condition "`column` is one of these conversations" (ids ascending): a plain id range when they are every
    id from the first to the last (the range then selects exactly them, walking the index without a parameter per
    id), else the ids themselves."""
    if ids[-1] - ids[0] + 1 == len(ids):
        return [column >= ids[0], column <= ids[-1]]
    return [column.in_(ids)]


def stored_conversations(
    connection: Any, options: ExportOptions, *, redacted: bool | None = None, details: bool = True
) -> Iterator[list[StoredConversation]]:
    """The conversations `options` selects, CHUNK at a time, with their turns and review outcomes (three queries).

    Texts are the redacted ones stored at ingest when `redacted` (default: `options.redact`), else the raw ones; a
    text not redacted yet reads as None there (`count_unredacted` says how many). Without `details`, the outcomes
    carry only what the chat exports read (position, status, decision, final text): the others are None.
    """
    redacted = options.redact if redacted is None else redacted
    for page in conversation_pages(connection, options):
        yield stored_page(connection, page, redacted=redacted, details=details)


def stored_page(connection: Any, page: list[ConversationRow], *, redacted: bool, details: bool = True
                ) -> list[StoredConversation]:
    """The conversations of one page of `conversation_pages`, read as `stored_conversations` says."""
    content = Message.redacted_content if redacted else Message.content
    # a widget's conversation is keyed by its opening: the redacted text when there is one, else the raw one
    opening = case((Message.redacted_content.is_(None), Message.content)) if redacted else Message.redacted_content
    final = Review.redacted_final_text if redacted else Review.final_text
    drafted = Draft.redacted_content if redacted else Draft.content
    outcome_columns = [Draft.adapter_version, Review.agent_id, Review.edit_distance, drafted] if details else []
    ids = [conversation_id for conversation_id, _, _ in page]
    turns: dict[int, list[StoredTurn]] = {i: [] for i in ids}
    keyed_by_opening = {i for i, key, _ in page if key is None}
    openings: dict[int, str] = {}
    for conversation_id, position, role, text, draft_id, other in connection.execute(
        select(Message.conversation_id, Message.position, Message.role, content, Message.draft_id,
               opening if keyed_by_opening else null())
        .where(*_in_page(Message.conversation_id, ids))
        .order_by(Message.conversation_id, Message.position)
    ).all():
        turns[conversation_id].append(StoredTurn(position, role, text, draft_id))
        if conversation_id in keyed_by_opening and role == "user" and conversation_id not in openings:
            openings[conversation_id] = (text if text is not None else other) if redacted else (
                other if other is not None else text)
    drafts: dict[int, dict[int, DraftOutcome]] = {i: {} for i in ids}
    for conversation_id, draft_id, *outcome in connection.execute(
        select(Draft.conversation_id, Draft.id, Draft.position, Draft.status, Review.decision, final, *outcome_columns)
        .outerjoin(Review, Review.draft_id == Draft.id)
        .where(*_in_page(Draft.conversation_id, ids))
    ).all():
        drafts[conversation_id][draft_id] = DraftOutcome(*outcome)
    channels = dict(connection.execute(select(Conversation.id, Conversation.channel).where(
        Conversation.id.in_(keyed_by_opening))).all()) if keyed_by_opening else {}
    return [StoredConversation(i, key or content_key(channels[i], openings.get(i, "")), created_at, turns[i], drafts[i])
            for i, key, created_at in page]


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


def read_page(
    session: Any,
    options: ExportOptions,
    page: list[ConversationRow],
    dropped: Counter[str],
    dropped_turns: Counter[str],
    *,
    knowledge: Settings | None = None,
    examples: Callable[[int, list[list]], None] | None = None,
) -> list[ReadConversation]:
    """(id, split key, created_at, exchanges) of every exportable conversation of one page of `conversation_pages`;
    count those skipped and why.

    `knowledge`: the settings to ground exchanges with (each gets its reply's passages, `export_grounding`);
    `examples`: what attaches answer memory's examples to a conversation's exchanges (`collector.export.recalled`;
    None: memory off)."""
    kept = {decision.value for decision in options.decisions}
    preference = options.format in PREFERENCE_FORMATS
    attach = export_grounder(session, knowledge) if knowledge is not None and not preference else None
    exportable: list[ReadConversation] = []
    # Core rows: no ORM bookkeeping for hundreds of thousands of them
    for conversation in stored_page(session.connection(), page, redacted=options.redact, details=preference):
        if preference:  # pairs of replies: no passages (they are the chat's)
            result = build_preference_exchanges(conversation.turns, conversation.drafts, kept, dropped_turns,
                                                options.format)
        else:
            replied_by: list[int | None] = []
            result = build_exchanges(conversation.turns, conversation.drafts, kept, dropped_turns, replied_by)
            if attach is not None and isinstance(result, list) and result:
                attach(result, replied_by)
        if examples is not None and isinstance(result, list) and result:
            examples(conversation.id, result)
        if isinstance(result, str):
            dropped[result] += 1
        elif not result:
            dropped["no kept reply"] += 1
        else:
            exportable.append((conversation.id, conversation.key, conversation.created_at, result))
    return exportable
