"""OpenAI-compatible API: `/v1/models` and `/v1/chat/completions`, so the official SDK works unchanged against us.

Access: agent and admin keys. Widget keys live in public web pages, so they may not use the model as a general API.
The messages go through the one prompt builder (`core.prompts`): the caller's first system/developer message
is the system prompt, else the company's, followed by the brand's knowledge passages retrieved for the conversation
(as the widget does), so a plain user question gets the prompt the adapter was trained with; the passages are kept
with the recorded draft, so its training example carries them too.
Every call is recorded as a conversation on channel "api" in auto mode: the reply is a draft that was sent. The
recording is queued to the service's store writer after the answer has gone out (no added latency; the writer
commits the calls that arrive together in one transaction: `core.group_commit`); when no model can answer,
the caller's messages are stored before the 503.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlmodel import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from collector import recorder
from collector.knowledge import Grounding, ground, ground_from_memory, record_grounding
from core.errors import HouseStyleError, NotFoundError
from core.models import DEFAULT_BRAND_ID, Role
from core.prompts import build_messages
from plugin import assistant
from plugin.api.brand_scope import BrandEntry, DirectoryDep, visible_brands
from plugin.api.deps import AgentCaller, Caller
from plugin.api.metrics import ServiceMetrics
from plugin.api.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model, ModelList, Usage

router = APIRouter(prefix="/v1", tags=["openai"])

TRANSCRIPT_ROLES = {"system": Role.SYSTEM, "developer": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}
STARTED_AT = int(time.time())
# how old a read of the knowledge revision the API trusts: a document added by another process (the CLI) is used
# within this, one added by this service at once
KNOWLEDGE_RECHECK_S = 2.0


@dataclass
class ApiCall:
    """One chat-completions call: its future conversation id (also the canary key) and what it sent."""

    external_id: str
    body: ChatCompletionRequest
    prompt: list[dict[str, Any]]
    brand_id: int = DEFAULT_BRAND_ID
    grounding: Grounding | None = None  # the knowledge passages its prompt carries

    @classmethod
    def from_request(
        cls, body: ChatCompletionRequest, company_prompt: str, brand_id: int = DEFAULT_BRAND_ID,
        grounding: Grounding | None = None,
    ) -> ApiCall:
        turns = request_turns(body)
        system = next((text for role, text in turns if role == Role.SYSTEM), company_prompt)
        passages = grounding.passages if grounding is not None else ()
        return cls(uuid.uuid4().hex, body, build_messages(system, turns, passages), brand_id, grounding)


def request_turns(body: ChatCompletionRequest) -> list[tuple[Role, str]]:
    """The call's messages as (role, text) turns; tool and function messages are not part of the conversation."""
    return [(TRANSCRIPT_ROLES[m.role], m.text()) for m in body.messages if m.role in TRANSCRIPT_ROLES]


async def ground_call(body: ChatCompletionRequest, brand: BrandEntry) -> Grounding | None:
    """The brand's passages for the call's conversation; None when the brand has grounding off. From the index in
    memory when its revision was read lately, else in a thread (retrieval reads the store, may rebuild the index)."""
    settings = brand.settings
    if not settings.knowledge_grounding:
        return None
    turns = request_turns(body)
    recent = ground_from_memory(settings.resolved_database_url, turns, brand=settings.brand, settings=settings,
                                max_age_s=KNOWLEDGE_RECHECK_S)
    if recent is not None:
        return recent
    return await asyncio.to_thread(ground, settings.resolved_database_url, turns, brand=settings.brand,
                                   settings=settings)


def write_call(
    call: ApiCall, reply: str | None, version: str | None, latency_ms: float | None, session: Session
) -> None:
    """The call as one auto-mode conversation: the caller's messages, then the reply as a sent draft (if any)."""
    draft_id = recorder.record_exchange(
        session,
        turns=[(role, text) for role, text in request_turns(call.body) if text.strip()],
        reply=reply,
        prompt=call.prompt,
        adapter_version=version,
        latency_ms=latency_ms,
        external_id=call.external_id,
        channel="api",
        customer_ref=call.body.user,
        source="api",
        brand_id=call.brand_id,
    )
    if draft_id is not None and call.grounding is not None:
        record_grounding(session, draft_id, call.grounding)


async def queue_call(
    state: Any, call: ApiCall, reply: str | None, version: str | None, latency_ms: float | None
) -> None:
    """Once the answer has gone out: queue its recording (async, so Starlette runs it on the loop, not a thread)."""
    state.store_writer.submit_and_log(partial(write_call, call, reply, version, latency_ms), "an API call")


async def store_call(
    state: Any, call: ApiCall, reply: str | None = None, version: str | None = None, latency_ms: float | None = None
) -> None:
    """Record the call and wait until it is committed (the caller's words are kept before an error answer)."""
    await state.store_writer.write(partial(write_call, call, reply, version, latency_ms))


def count_call(metrics: ServiceMetrics, version: str | None, usage: Usage | None) -> None:
    metrics.generations.labels("api", version or "base").inc()
    if usage is not None:
        metrics.count_tokens(version, usage.prompt_tokens, usage.completion_tokens)


def _upstream_request(call: ApiCall) -> dict[str, Any]:
    request = call.body.model_dump(exclude_none=True, exclude={"stream", "stream_options"})
    request["messages"] = call.prompt
    if call.body.stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}  # always: the token metrics need it
    return request


@router.get("/models", response_model=ModelList, summary="The public model names this key may use")
async def list_models(caller: AgentCaller, directory: DirectoryDep) -> ModelList:
    """One model per brand the key may act on (one brand: one model): its public name; adapter versions change
    behind it without clients noticing."""
    return ModelList(data=[
        Model(id=entry.public_model_name, created=STARTED_AT, owned_by=entry.settings.company_name)
        for entry in visible_brands(await directory.entries(), caller)
    ])


def brand_of_model(entries: dict[int, BrandEntry], caller: Caller, model: str) -> BrandEntry:
    """The brand answering behind a public model name, if this key may use it."""
    for entry in visible_brands(entries, caller):
        if entry.public_model_name == model:
            return entry
    names = ", ".join(f"'{entry.public_model_name}'" for entry in visible_brands(entries, caller))
    raise NotFoundError(f"model '{model}' does not exist; use {names} (GET /v1/models)")


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "chat.completion, or chunks when stream"},
        503: {"description": "No model server can answer now; retry after Retry-After"},
    },
    summary="Create a chat completion (OpenAI format)",
)
async def create_chat_completion(
    body: ChatCompletionRequest, caller: AgentCaller, directory: DirectoryDep, request: Request
) -> Any:
    """The model name picks the brand: its adapters answer and the call is recorded among its conversations."""
    state = request.app.state
    brand = brand_of_model(await directory.entries(), caller, body.model)
    call = ApiCall.from_request(body, brand.settings.system_prompt, brand.id, await ground_call(body, brand))
    started = time.perf_counter()
    try:
        gateway = assistant.require_gateway(state.gateway)
        if body.stream:
            route, chunks = await gateway.stream_chat(_upstream_request(call), conversation_key=call.external_id,
                                                      brand_id=brand.id)
        else:
            route, payload = await gateway.chat(_upstream_request(call), conversation_key=call.external_id,
                                                brand_id=brand.id)
    except HouseStyleError:
        await store_call(state, call)  # the caller's words are kept
        raise
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventSourceResponse(_relay_chunks(request, call, route, chunks, started, include_usage), sep="\n")
    completion = ChatCompletion.model_validate(payload)
    latency_ms = (time.perf_counter() - started) * 1000
    text = completion.choices[0].message.content if completion.choices else None
    count_call(state.metrics, route.version, completion.usage)
    return Response(completion.model_dump_json(), media_type="application/json", background=BackgroundTask(
        queue_call, state, call, text, route.version, latency_ms))


async def _relay_chunks(
    request: Request, call: ApiCall, route: Any, chunks: AsyncIterator[dict], started: float, include_usage: bool
) -> AsyncIterator[ServerSentEvent]:
    state = request.app.state
    pieces: list[str] = []
    usage: Usage | None = None
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
            yield ServerSentEvent(chunk.model_dump_json())
        latency_ms = (time.perf_counter() - started) * 1000
        count_call(state.metrics, route.version, usage)
        # recorded before [DONE]: clients hang up at [DONE], which would cancel anything after it
        await store_call(state, call, "".join(pieces), route.version, latency_ms)
        yield ServerSentEvent("[DONE]")
    except HouseStyleError as exc:  # the status line is sent already: the SDK raises on an `error` event
        await store_call(state, call)
        yield ServerSentEvent(json.dumps({"error": {"message": str(exc), "type": "upstream_error"}}))
    finally:
        await chunks.aclose()
