"""Training examples get the past exchanges a served prompt would carry: answer memory's examples, train split only.

With HOUSESTYLE_MEMORY_EXAMPLES above 0 the service puts the brand's most similar past exchanges into each reply's
prompt (`collector.memory.recall`). So that the adapter learns to use them, each exported exchange carries the
examples recalled the same way for the customer turns before it, through the same index, settings and builder
(`collector.export.render` puts them into `core.prompts.build_messages`), but offered only exchanges of conversations
this export puts in its train split (`collector.memory.training_keep`): never its own conversation's, and never one
of the validation or test split, so the held-out split stays held out. A conversation the export does not select
(another date range or channel) counts as not train. With memory off nothing is attached: exports stay as they were.

In a chat exchange the examples are its fourth item, after the passages (`[]` when grounding is off); in a
preference exchange (`collector.export.preference`) its sixth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlmodel import Session

from collector.export.options import ExportOptions
from collector.export.reading import content_key, conversation_pages
from collector.memory import recall, training_keep
from collector.split import SplitName, assign_split
from core.models import Conversation, Message, Role
from core.prompts import ASSISTANT, USER
from core.settings import Settings


class TrainingMemory(BaseModel):
    """What an export recalls examples with: the settings (k, minimum score, prompt budget, query turns), the brand
    and the split of every conversation it selects (conversation id -> split)."""

    settings: Settings
    brand_id: int
    split_of: dict[int, SplitName]


def training_memory(connection: Any, options: ExportOptions, settings: Settings) -> TrainingMemory | None:
    """The memory an export attaches examples from; None when answer memory is off (HOUSESTYLE_MEMORY_EXAMPLES=0)."""
    if settings.memory_examples <= 0 or options.brand_id is None:
        return None
    split_of: dict[int, SplitName] = {}
    for page in conversation_pages(connection, options):
        keys = _opening_keys(connection, [conversation_id for conversation_id, key, _ in page if key is None])
        for conversation_id, key, created_at in page:
            split_of[conversation_id] = assign_split(key or keys[conversation_id], options.seed, options.ratios,
                                                     created_at=created_at, holdout_after=options.holdout_after)
    return TrainingMemory(settings=settings, brand_id=options.brand_id, split_of=split_of)


def _opening_keys(connection: Any, ids: list[int]) -> dict[int, str]:
    """The split keys of conversations keyed by their opening (`reading.content_key`): the first customer turn,
    redacted when it is, as `reading.stored_page` reads it."""
    if not ids:
        return {}
    first = (select(Message.conversation_id, func.min(Message.position).label("position"))
             .where(Message.conversation_id.in_(ids), Message.role == Role.USER.value)
             .group_by(Message.conversation_id).subquery())
    openings = dict(connection.execute(
        select(Message.conversation_id, func.coalesce(Message.redacted_content, Message.content))
        .join(first, (first.c.conversation_id == Message.conversation_id) & (first.c.position == Message.position))
    ).all())
    channels = dict(connection.execute(select(Conversation.id, Conversation.channel).where(Conversation.id.in_(ids))).all())
    return {i: content_key(channels[i], openings.get(i) or "") for i in ids}


Attach = Callable[[int, list[list]], None]


def example_attacher(session: Session, memory: TrainingMemory, *, preference: bool) -> Attach:
    """A function that appends to each exchange of a conversation the examples its reply's prompt is shown, as
    [[customer, reply], ...] (chat exchanges get their passages item first when grounding gave them none)."""

    def attach(conversation_id: int, exchanges: list[list]) -> None:
        keep = training_keep(memory.split_of, conversation_id)
        turns: list[tuple[str, str]] = []
        for exchange in exchanges:
            turns.append((USER, exchange[0]))
            found = recall(session, turns, brand_id=memory.brand_id, settings=memory.settings, keep=keep)
            if not preference and len(exchange) == 2:
                exchange.append([])  # no passages
            exchange.append([[example.customer, example.reply] for example in found.examples])
            replies = (exchange[1], exchange[4]) if preference else (exchange[1],)
            turns += [(ASSISTANT, text) for text in replies if text]

    return attach
