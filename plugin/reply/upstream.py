"""Asking the model server for a turn's reply: the request, the prompt cut to the model's context, the one retry
when the model still finds it too long, and its answer's text, whole or chunk by chunk."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from core.prompts import fit_messages
from core.settings import Settings
from plugin.reply.errors import ModelServersUnavailable
from plugin.reply.turns import Turn
from serving.errors import UpstreamError

# conservative: English runs about 4 characters a token; digits, ids, names and emoji fewer
CHARS_PER_TOKEN = 2.0
TEMPLATE_TOKENS = 64  # what a chat template adds around the messages


def require_gateway(gateway: Any) -> Any:
    if gateway is None:
        raise ModelServersUnavailable(
            "no model server is configured for this service; start it with `housestyle serve` (not --no-vllm) "
            "or set HOUSESTYLE_VLLM_URLS"
        )
    return gateway


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


def model_request(settings: Settings, gateway: Any, turn: Turn, *, stream: bool, shrink: int = 1) -> dict[str, Any]:
    """The chat request for the turn; its prompt first cut to the model's context (older turns first), so a long
    history never blocks a reply (the draft records the prompt as cut)."""
    if turn.fit_prompt and (budget := prompt_budget(settings, gateway, shrink=shrink)) is not None:
        turn.prompt = fit_messages(turn.prompt, budget)
    request = {**turn.parameters, "messages": turn.prompt}
    if stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}  # always: the token metrics need it
    return request


async def open_reply(settings: Settings, gateway: Any, turn: Turn, *, stream: bool) -> tuple[Any, Any]:
    """Send the turn to the model server: (route, answer) or, streaming, (route, chunks). Raises before anything is
    relayed when no model server can take it.

    The one retry for a prompt over the context: the estimate was off for this text, so once more with half the
    room (a turn sent as its caller wrote it is not cut, and gets vLLM's refusal)."""
    gateway = require_gateway(gateway)
    send = gateway.stream_chat if stream else gateway.chat
    try:
        return await send(model_request(settings, gateway, turn, stream=stream),
                          conversation_key=turn.conversation_key, brand_id=turn.brand_id)
    except UpstreamError as error:
        if not (turn.fit_prompt and too_long(error)):
            raise
        return await send(model_request(settings, gateway, turn, stream=stream, shrink=2),
                          conversation_key=turn.conversation_key, brand_id=turn.brand_id)


def message_text(answer: dict[str, Any]) -> str:
    """The text of a whole (not streamed) answer; "" when the model gave none."""
    return (answer.get("choices") or [{}])[0].get("message", {}).get("content") or ""


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
