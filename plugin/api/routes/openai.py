"""OpenAI-compatible API: `/v1/models` and `/v1/chat/completions`, so the official SDK works unchanged against us.

Access: agent and admin keys. Widget keys live in public web pages, so they may not use the model as a general API.
The model name picks the brand; `plugin.openai.serving` serves the call on the one reply path and records it.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from core.errors import NotFoundError
from plugin.api.brand_scope import BrandEntry, DirectoryDep, visible_brands
from plugin.api.deps import AgentCaller, Caller
from plugin.openai.protocol import ChatCompletion, ChatCompletionRequest, Model, ModelList
from plugin.openai.serving import ChatServing

router = APIRouter(prefix="/v1", tags=["openai"])

STARTED_AT = int(time.time())


async def get_serving(request: Request) -> ChatServing:
    state = request.app.state
    return ChatServing(state.settings, state.gateway, state.metrics, state.store_writer)


ServingDep = Annotated[ChatServing, Depends(get_serving)]


@router.get("/models", response_model=ModelList, summary="The public model names this key may use")
async def list_models(caller: AgentCaller, directory: DirectoryDep) -> ModelList:
    """One model per brand the key may act on (one brand: one model): its public name; adapter versions change
    behind it without clients noticing."""
    return ModelList(data=[
        Model(id=entry.public_model_name, created=STARTED_AT, owned_by=entry.settings.company_name)
        for entry in visible_brands(await directory.entries(caller.brands), caller)
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
    body: ChatCompletionRequest, caller: AgentCaller, directory: DirectoryDep, serving: ServingDep
) -> Any:
    """The model name picks the brand: its adapters answer and the call is recorded among its conversations."""
    brand = brand_of_model(await directory.entries(caller.brands), caller, body.model)
    if body.stream:
        return EventSourceResponse(await serving.stream(body, brand), sep="\n")
    completion, record = await serving.complete(body, brand)
    return Response(completion.model_dump_json(), media_type="application/json", background=BackgroundTask(record))
