"""The one reply path, whoever asks (the widget, Chatwoot, the OpenAI API, the redrafter): store the customer's
message, ground it in the knowledge base and the brand's answer memory, build the prompt, relay it to the model server (whole or streamed), guard
the reply, record it as a draft and count it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from collector import recorder
from collector.brands import settings_for
from collector.coverage.handoff import coverage_handoff
from collector.knowledge import Grounding, ground, ground_from_memory, record_grounding
from collector.memory import Recall, recall, recall_from_memory, record_recall
from collector.pii.entities import KnownValues
from core.db import session_scope
from core.errors import ConflictError, InputError, StoreError
from core.models import Brand, Conversation, Draft, ReplyMode, Role
from core.prompts import build_messages
from core.settings import Settings
from plugin.metrics import ServiceMetrics
from plugin.reply.errors import MessageNotStored
from plugin.reply.turns import Delta, Reply, Turn
from plugin.reply.upstream import chunk_dicts, chunk_text, message_text, open_reply
from plugin.reply_guard import ReplyGuard

# how old a read of the knowledge revision a turn the store does not hold trusts: a document added by another
# process (the CLI) is used within this, one added by this service at once
KNOWLEDGE_RECHECK_S = 2.0
NO_REPLY = "the model gave no usable reply; an agent answers instead"


def receive_customer_message(settings: Settings, conversation_id: int, content: str) -> Turn:
    """Store the customer's message (committed before any generation, so a model outage never loses it)."""
    try:
        with session_scope(settings.resolved_database_url) as session:
            try:
                recorder.add_message(session, conversation_id, Role.USER, content)  # missing or closed: says so
            except ConflictError:  # closed while idle: the customer came back to the same conversation
                if not recorder.reopen_idle_closed(session, recorder.get_conversation(session, conversation_id)):
                    raise
                recorder.add_message(session, conversation_id, Role.USER, content)
            conversation = recorder.get_conversation(session, conversation_id)  # the row add_message locked: no SQL
            return turn_of(settings, session, conversation)
    except StoreError as error:
        raise MessageNotStored(f"the message was NOT stored ({error}); send it again in a moment") from None


def turn_of(settings: Settings, session: Session, conversation: Conversation) -> Turn:
    """The turn awaiting a reply in this conversation: its prompt is the transcript as the customer saw it, under
    its brand's system prompt, with the knowledge passages and the brand's past exchanges retrieved for it; in auto mode, a topic the live version
    has not learned hands it over."""
    brand = settings_for(settings, session.get(Brand, conversation.brand_id))
    transcript = recorder.transcript_turns(session, conversation.id)
    grounding = ground(session, transcript, brand=brand.brand, settings=brand)
    recalled = recall(session, transcript, brand_id=conversation.brand_id, settings=brand)
    mode = ReplyMode(conversation.mode)
    return Turn(
        conversation.id,
        conversation.external_id,
        conversation.channel,
        mode,
        build_messages(brand.system_prompt, transcript, grounding.passages, recalled.examples),
        reply_parameters(settings, brand.public_model_name or settings.public_model_name),
        guard=ReplyGuard(conversation.placeholders, KnownValues.from_stored(conversation.known_values)),
        handoff=coverage_handoff(brand, session, mode, transcript),
        grounding=grounding,
        recall=recalled,
        brand_id=conversation.brand_id,
    )


def reply_parameters(settings: Settings, model: str) -> dict[str, Any]:
    """The service's own request for a reply (HOUSESTYLE_REPLY_MAX_TOKENS, HOUSESTYLE_REPLY_TEMPERATURE)."""
    return {"model": model, "max_tokens": settings.reply_max_tokens, "temperature": settings.reply_temperature}


async def recall_turns(settings: Settings, brand_id: int, turns: Iterable[tuple[str, str]]) -> Recall | None:
    """The brand's past exchanges most like a conversation the store does not hold (an API call's messages); None
    when answer memory is off. From the index in memory when the store's stamp was read lately, else in a thread."""
    if settings.memory_examples <= 0:
        return None
    turns = list(turns)
    recent = recall_from_memory(settings.resolved_database_url, turns, brand_id=brand_id, settings=settings,
                                max_age_s=KNOWLEDGE_RECHECK_S)
    if recent is not None:
        return recent
    return await asyncio.to_thread(recall, settings.resolved_database_url, turns, brand_id=brand_id,
                                   settings=settings)


async def ground_turns(settings: Settings, turns: Iterable[tuple[str, str]]) -> Grounding | None:
    """The brand's passages for a conversation the store does not hold (an API call's messages); None when the brand
    has grounding off. From the index in memory when its revision was read lately, else in a thread (retrieval
    reads the store, may rebuild the index)."""
    if not settings.knowledge_grounding:
        return None
    turns = list(turns)
    recent = ground_from_memory(settings.resolved_database_url, turns, brand=settings.brand, settings=settings,
                                max_age_s=KNOWLEDGE_RECHECK_S)
    if recent is not None:
        return recent
    return await asyncio.to_thread(ground, settings.resolved_database_url, turns, brand=settings.brand,
                                   settings=settings)


def record_reply(settings: Settings, turn: Turn, text: str, version: str | None, latency_ms: float) -> Draft:
    """The draft; a model that said nothing (or only what the reply guard had to remove) hands the turn to an agent,
    so no customer message ever goes unanswered and none gets an empty reply."""
    handoff = turn.handoff or (NO_REPLY if not text.strip() else None)
    with session_scope(settings.resolved_database_url) as session:
        draft = recorder.record_draft(
            session, turn.conversation_id, text.strip() and text, prompt=turn.prompt, adapter_version=version,
            latency_ms=latency_ms, handoff_reason=handoff,
        )
        if turn.grounding is not None:
            record_grounding(session, draft.id, turn.grounding)
        if turn.recall is not None:
            record_recall(session, draft.id, turn.recall)
        return draft


def record_exchange(
    session: Session, turn: Turn, *, turns: Iterable[tuple[Role, str]], customer_ref: str | None, reply: Reply | None
) -> None:
    """A turn whose conversation was not stored (an API call), stored now as one auto-mode conversation on its
    channel: its messages, then the reply as a sent draft (if any) with the passages its prompt carried."""
    draft_id = recorder.record_exchange(
        session,
        turns=[(role, text) for role, text in turns if text.strip()],
        reply=reply.text if reply is not None else None,
        prompt=turn.prompt,
        adapter_version=reply.version if reply is not None else None,
        latency_ms=reply.latency_ms if reply is not None else None,
        external_id=turn.conversation_key,
        channel=turn.channel,
        customer_ref=customer_ref,
        source=turn.channel,  # API calls: channel and source "api"
        brand_id=turn.brand_id,
    )
    if draft_id is not None and turn.grounding is not None:
        record_grounding(session, draft_id, turn.grounding)
    if draft_id is not None and turn.recall is not None:
        record_recall(session, draft_id, turn.recall)


async def generate_reply(settings: Settings, gateway: Any, metrics: ServiceMetrics, turn: Turn) -> Reply:
    """Ask the model for the whole reply to the turn and record it as a draft (auto mode: also sent)."""
    started = time.perf_counter()
    route, answer = await open_reply(settings, gateway, turn, stream=False)
    text = message_text(answer)
    guarded = turn.guard.whole(text) if turn.guard is not None else text
    return await conclude(settings, metrics, turn, route, guarded, answer.get("usage"), started, answer)


class ReplyStream:
    """A reply as the model streams it: iterate it for `Delta`s, then the recorded `Reply`; `aclose()` ends it (the
    replica stops generating and the version's in-flight count is released)."""

    def __init__(
        self, settings: Settings, metrics: ServiceMetrics, turn: Turn, route: Any, chunks: Any, started: float
    ) -> None:
        self.settings, self.metrics, self.turn, self.route = settings, metrics, turn, route
        self._chunks = chunks
        self._started = started

    def __aiter__(self) -> AsyncIterator[Delta | Reply]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[Delta | Reply]:
        guard = self.turn.guard
        pieces: list[str] = []
        usage: dict[str, int] | None = None
        async for chunk in chunk_dicts(self._chunks):
            usage = chunk.get("usage") or usage
            text = chunk_text(chunk)
            piece = guard.feed(text) if guard is not None else text  # guarded: a sentence at a time
            pieces.append(piece)
            yield Delta(piece, chunk)
        if guard is not None and (rest := guard.finish()):
            pieces.append(rest)
            yield Delta(rest)
        yield await conclude(self.settings, self.metrics, self.turn, self.route, "".join(pieces), usage,
                             self._started)

    async def aclose(self) -> None:
        await self._chunks.aclose()


async def open_reply_stream(settings: Settings, gateway: Any, metrics: ServiceMetrics, turn: Turn) -> ReplyStream:
    """Start streaming the turn's reply; raises (→ 503) before anything is sent when no model server can take it."""
    started = time.perf_counter()
    route, chunks = await open_reply(settings, gateway, turn, stream=True)
    return ReplyStream(settings, metrics, turn, route, chunks, started)


async def conclude(
    settings: Settings, metrics: ServiceMetrics, turn: Turn, route: Any, text: str, usage: dict[str, int] | None,
    started: float, answer: dict[str, Any] | None = None,
) -> Reply:
    """The reply once the model has finished: recorded as the turn's draft and counted."""
    latency_ms = (time.perf_counter() - started) * 1000
    draft = None
    if turn.conversation_id is not None:  # a turn not stored yet is recorded by its caller, with its messages
        draft = await run_in_threadpool(record_reply, settings, turn, text, route.version, latency_ms)
    metrics.count_reply(turn.channel, route.version, usage)
    return Reply(draft, route.version, text, latency_ms, usage, answer)


def mode_for_channel(settings: Settings, channel: str) -> ReplyMode:
    """The channel's configured reply mode (HOUSESTYLE_CHANNEL_MODES), else HOUSESTYLE_DEFAULT_REPLY_MODE."""
    value = settings.channel_modes.get(channel, settings.default_reply_mode)
    try:
        return ReplyMode(value)
    except ValueError:
        raise InputError(
            f"reply mode '{value}' for channel '{channel}' is not auto or assist; "
            "fix HOUSESTYLE_CHANNEL_MODES / HOUSESTYLE_DEFAULT_REPLY_MODE"
        ) from None
