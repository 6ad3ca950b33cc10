"""Answering customers: store their message, ask the serving gateway for a reply, and record it as a draft."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from collector import recorder
from collector.brands import settings_for
from collector.knowledge import Grounding, ground, record_grounding
from collector.pii.entities import KnownValues
from core.db import session_scope
from core.errors import InputError, StoreError
from core.models import DEFAULT_BRAND_ID, Brand, Draft, ReplyMode, Role
from core.prompts import build_messages, fit_messages
from core.settings import Settings
from plugin.api.errors import MessageNotStored, ModelServersUnavailable
from plugin.api.metrics import ServiceMetrics
from plugin.coverage_routing import coverage_handoff
from plugin.reply_guard import ReplyGuard
from serving.errors import UpstreamError


@dataclass
class Turn:
    """A customer message that is stored and waits for the assistant's reply."""

    conversation_id: int
    conversation_key: str  # stable per conversation: keeps it on one side of a canary split
    channel: str
    mode: ReplyMode
    prompt: list[dict[str, str]]
    guard: ReplyGuard  # fills the reply's placeholders from what this conversation knows
    handoff: str | None = None  # why this auto-mode turn goes to an agent before the customer sees it
    grounding: Grounding | None = None  # the knowledge passages its prompt carries (recorded with the draft)
    brand_id: int = DEFAULT_BRAND_ID  # whose adapters answer it
    model: str | None = None  # the brand's public model name (None: the installation's)


@dataclass
class Reply:
    draft: Draft | None  # None where the caller records the draft itself
    version: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def receive_customer_message(settings: Settings, conversation_id: int, content: str) -> Turn:
    """Store the customer's message (committed before any generation, so a model outage never loses it)."""
    try:
        with session_scope(settings.resolved_database_url) as session:
            recorder.add_message(session, conversation_id, Role.USER, content)  # missing or closed: says so
            conversation = recorder.get_conversation(session, conversation_id)  # the row add_message locked: no SQL
            return turn_of(settings, session, conversation)
    except StoreError as error:
        raise MessageNotStored(f"the message was NOT stored ({error}); send it again in a moment") from None


def turn_of(settings: Settings, session: Any, conversation: Any) -> Turn:
    """The turn awaiting a reply in this conversation: its prompt is the transcript as the customer saw it, under
    its brand's system prompt, with the knowledge passages retrieved for it; in auto mode, a topic the live version
    has not learned hands it over."""
    brand = settings_for(settings, session.get(Brand, conversation.brand_id))
    transcript = recorder.transcript_turns(session, conversation.id)
    grounding = ground(session, transcript, brand=brand.brand, settings=brand)
    mode = ReplyMode(conversation.mode)
    return Turn(
        conversation.id,
        conversation.external_id,
        conversation.channel,
        mode,
        build_messages(brand.system_prompt, transcript, grounding.passages),
        ReplyGuard(conversation.placeholders, KnownValues.from_stored(conversation.known_values)),
        handoff=coverage_handoff(brand, session, mode, transcript),
        grounding=grounding,
        brand_id=conversation.brand_id,
        model=brand.public_model_name,
    )


NO_REPLY = "the model gave no usable reply; an agent answers instead"


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
        return draft


def require_gateway(gateway: Any) -> Any:
    if gateway is None:
        raise ModelServersUnavailable(
            "no model server is configured for this service; start it with `housestyle serve` (not --no-vllm) "
            "or set HOUSESTYLE_VLLM_URLS"
        )
    return gateway


# conservative: English runs about 4 characters a token; digits, ids, names and emoji fewer
CHARS_PER_TOKEN = 2.0
TEMPLATE_TOKENS = 64  # what a chat template adds around the messages


def prompt_budget(settings: Settings, gateway: Any, *, shrink: int = 1) -> int | None:
    """Characters of conversation that fit the served model's context beside the reply (None: window unknown)."""
    window = getattr(gateway, "max_model_len", None)
    if not window:
        return None
    tokens = max(window - settings.reply_max_tokens - TEMPLATE_TOKENS, TEMPLATE_TOKENS)
    return int(tokens * CHARS_PER_TOKEN) // shrink


def too_long(error: UpstreamError) -> bool:
    """vLLM's answer to a prompt longer than its context window."""
    message = str(error).lower()
    return error.status_code == 400 and ("context" in message or "too long" in message or "maximum" in message)


def fitted(settings: Settings, gateway: Any, turn: Turn, *, shrink: int = 1) -> Turn:
    """The turn with its prompt cut to the model's context (older turns first); a long history never blocks a reply."""
    budget = prompt_budget(settings, gateway, shrink=shrink)
    if budget is not None:
        turn.prompt = fit_messages(turn.prompt, budget)
    return turn


def reply_request(settings: Settings, turn: Turn, *, stream: bool) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": turn.model or settings.public_model_name,
        "messages": turn.prompt,
        "max_tokens": settings.reply_max_tokens,
        "temperature": settings.reply_temperature,
    }
    if stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request


async def chunk_dicts(chunks: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    """The gateway's stream as chunk dicts, whether it yields parsed chunks or raw server-sent-event text."""
    async for chunk in chunks:
        if isinstance(chunk, dict):
            yield chunk
            continue
        text = chunk.decode() if isinstance(chunk, bytes) else str(chunk)
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                yield json.loads(line[5:])


def chunk_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    return (choices[0].get("delta") or {}).get("content") or "" if choices else ""


async def generate_reply(settings: Settings, gateway: Any, metrics: ServiceMetrics, turn: Turn) -> Reply:
    """Ask the model for a reply to the stored turn and record it as a draft (auto mode: also sent)."""
    gateway = require_gateway(gateway)
    started = time.perf_counter()
    try:
        route, body = await gateway.chat(
            reply_request(settings, fitted(settings, gateway, turn), stream=False),
            conversation_key=turn.conversation_key, brand_id=turn.brand_id,
        )
    except UpstreamError as error:
        if not too_long(error):
            raise
        route, body = await gateway.chat(  # the estimate was off for this text: once more with half the room
            reply_request(settings, fitted(settings, gateway, turn, shrink=2), stream=False),
            conversation_key=turn.conversation_key, brand_id=turn.brand_id,
        )
    latency_ms = (time.perf_counter() - started) * 1000
    text = turn.guard.whole((body.get("choices") or [{}])[0].get("message", {}).get("content") or "")
    draft = await run_in_threadpool(record_reply, settings, turn, text, route.version, latency_ms)
    usage = body.get("usage") or {}
    reply = Reply(draft, route.version, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
    observe_reply(metrics, turn, reply)
    return reply


async def open_reply_stream(settings: Settings, gateway: Any, turn: Turn) -> tuple[Any, AsyncIterator[dict]]:
    """Start streaming a reply; raises (→ 503) before anything is sent when no model server can take it."""
    gateway = require_gateway(gateway)
    try:
        route, chunks = await gateway.stream_chat(
            reply_request(settings, fitted(settings, gateway, turn), stream=True),
            conversation_key=turn.conversation_key, brand_id=turn.brand_id,
        )
    except UpstreamError as error:
        if not too_long(error):
            raise
        route, chunks = await gateway.stream_chat(
            reply_request(settings, fitted(settings, gateway, turn, shrink=2), stream=True),
            conversation_key=turn.conversation_key, brand_id=turn.brand_id,
        )
    return route, chunk_dicts(chunks)


async def stream_reply(
    settings: Settings, metrics: ServiceMetrics, turn: Turn, route: Any, chunks: AsyncIterator[dict], started: float
) -> AsyncIterator[str | Reply]:
    """Yield the reply's text a sentence at a time (placeholders filled), then the recorded `Reply`."""
    pieces: list[str] = []
    usage: dict[str, int] = {}
    async for chunk in chunks:
        usage = chunk.get("usage") or usage
        piece = turn.guard.feed(chunk_text(chunk))
        if piece:
            pieces.append(piece)
            yield piece
    if rest := turn.guard.finish():
        pieces.append(rest)
        yield rest
    latency_ms = (time.perf_counter() - started) * 1000
    draft = await run_in_threadpool(record_reply, settings, turn, "".join(pieces), route.version, latency_ms)
    reply = Reply(draft, route.version, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
    observe_reply(metrics, turn, reply)
    yield reply


def observe_reply(metrics: ServiceMetrics, turn: Turn, reply: Reply) -> None:
    metrics.generations.labels(turn.channel, reply.version or "base").inc()
    metrics.count_tokens(reply.version, reply.prompt_tokens, reply.completion_tokens)


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
