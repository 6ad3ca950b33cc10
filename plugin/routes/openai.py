"""OpenAI-compatible API: `/v1/models` and `/v1/chat/completions`, so the official SDK works unchanged against us.

Access: agent and admin keys. Widget keys live in public web pages, so they may not use the model as a general API.
Every call is recorded as a conversation on channel "api" in auto mode: the reply is a draft that was sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from collector import recorder
from collector.db import session_scope
from collector.errors import HouseStyleError, NotFoundError
from collector.models import ReplyMode, Role
from plugin import assistant
from plugin.deps import AgentCaller, SettingsDep
from plugin.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model, ModelList, Usage

router = APIRouter(prefix="/v1", tags=["openai"])

TRANSCRIPT_ROLES = {"system": Role.SYSTEM, "developer": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}
STARTED_AT = int(time.time())


@router.get("/models", response_model=ModelList, summary="The public model name")
def list_models(_: AgentCaller, settings: SettingsDep) -> ModelList:
    """One model: the public name; adapter versions change behind it without clients noticing."""
    return ModelList(data=[Model(id=settings.public_model_name, created=STARTED_AT, owned_by=settings.company_name)])


def _record_request(settings, body: ChatCompletionRequest) -> assistant.Turn:
    """Store the call as an auto-mode conversation before generating (an outage never loses the customer's words)."""
    turns = [(TRANSCRIPT_ROLES[m.role], m.text()) for m in body.messages if m.role in TRANSCRIPT_ROLES and m.text().strip()]
    prompt = [m.model_dump(exclude_none=True) for m in body.messages]
    with session_scope(settings.resolved_database_url) as session:
        conversation = recorder.start_conversation(
            session, channel="api", customer_ref=body.user, mode=ReplyMode.AUTO, source="api"
        )
        if turns:
            recorder.add_messages(session, conversation.id, turns)
        return assistant.Turn(conversation.id, conversation.external_id, "api", ReplyMode.AUTO, prompt)


def _upstream_request(body: ChatCompletionRequest, turn: assistant.Turn) -> dict[str, Any]:
    request = body.model_dump(exclude_none=True, exclude={"stream", "stream_options"})
    request["messages"] = turn.prompt
    if body.stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}  # always: the token metrics need it
    return request


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}, "description": "chat.completion, or chunks when stream"},
               503: {"description": "No model server can answer now; retry after Retry-After"}},
    summary="Create a chat completion (OpenAI format)",
)
async def create_chat_completion(
    body: ChatCompletionRequest, _: AgentCaller, request: Request
) -> ChatCompletion | EventSourceResponse:
    state = request.app.state
    settings = state.settings
    if body.model != settings.public_model_name:
        raise NotFoundError(f"model '{body.model}' does not exist; use '{settings.public_model_name}' (GET /v1/models)")
    turn = await run_in_threadpool(_record_request, settings, body)
    gateway = assistant.require_gateway(state.gateway)
    started = time.perf_counter()
    if not body.stream:
        route, payload = await gateway.chat(_upstream_request(body, turn), conversation_key=turn.conversation_key)
        completion = ChatCompletion.model_validate(payload)
        latency_ms = (time.perf_counter() - started) * 1000
        text = completion.choices[0].message.content if completion.choices else None
        await run_in_threadpool(_record_reply, settings, turn, text, route.version, latency_ms)
        usage = completion.usage or Usage()
        assistant.observe_reply(state.metrics, turn, assistant.Reply(None, route.version, usage.prompt_tokens,
                                                                      usage.completion_tokens))
        return completion
    route, chunks = await gateway.stream_chat(_upstream_request(body, turn), conversation_key=turn.conversation_key)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return EventSourceResponse(_relay_chunks(request, turn, route, chunks, started, include_usage), sep="\n")


def _record_reply(settings, turn: assistant.Turn, text: str | None, version: str | None, latency_ms: float) -> None:
    if text and text.strip():
        assistant.record_reply(settings, turn, text, version, latency_ms)


async def _relay_chunks(
    request: Request, turn: assistant.Turn, route, chunks: AsyncIterator[dict], started: float, include_usage: bool
) -> AsyncIterator[ServerSentEvent | str]:
    state = request.app.state
    pieces: list[str] = []
    usage = Usage()
    try:
        async for raw in chunks:
            chunk = ChatCompletionChunk.model_validate(raw)
            if chunk.usage is not None:
                usage = chunk.usage
                if not include_usage:
                    if not chunk.choices:
                        continue
                    chunk.usage = None
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
            yield ServerSentEvent(chunk.model_dump_json(exclude_none=False))
        latency_ms = (time.perf_counter() - started) * 1000
        await run_in_threadpool(_record_reply, state.settings, turn, "".join(pieces), route.version, latency_ms)
        assistant.observe_reply(state.metrics, turn, assistant.Reply(None, route.version, usage.prompt_tokens,
                                                                     usage.completion_tokens))
        yield ServerSentEvent("[DONE]")
    except HouseStyleError as exc:  # the status line is sent already: the SDK raises on an `error` event
        yield ServerSentEvent(json.dumps({"error": {"message": str(exc), "type": "upstream_error"}}))
    finally:
        await chunks.aclose()
