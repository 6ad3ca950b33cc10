"""Serving `/v1/chat/completions` on the one reply path (`plugin.assistant`): a request becomes a turn, the model's
answer an OpenAI completion or its chunks, and the call a recorded conversation.

The messages go through the one prompt builder (`core.prompts`): the caller's first system/developer message is the
system prompt, else the brand's, followed by the brand's knowledge passages and past exchanges (answer memory)
retrieved for the conversation (as the widget does), so a plain user question gets the prompt the adapter was trained with; the passages are kept with the
recorded draft, so its training example carries them too. The caller's own fields (sampling, limits) go to vLLM
untouched, its messages are not cut to the context, and the answer comes back as the model wrote it.
Every call is recorded as a conversation on channel "api" in auto mode: the reply is a draft that was sent. The
recording is queued to the service's store writer after the answer has gone out (no added latency; the writer
commits the calls that arrive together in one transaction: `core.group_commit`); when no model can answer, the
caller's messages are stored before the error.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from sqlmodel import Session
from sse_starlette import ServerSentEvent

from collector.knowledge import Grounding
from collector.memory import Recall
from core.errors import HouseStyleError
from core.group_commit import GroupCommit
from core.models import DEFAULT_BRAND_ID, ReplyMode, Role
from core.prompts import build_messages
from core.settings import Settings
from plugin import assistant
from plugin.metrics import ServiceMetrics
from plugin.openai.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from plugin.reply.turns import Reply, Turn

API_CHANNEL = "api"
TRANSCRIPT_ROLES = {"system": Role.SYSTEM, "developer": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}


class AnsweringBrand(Protocol):
    """The brand behind a public model name (the routes' `BrandEntry`): its id and its settings."""

    @property
    def id(self) -> int: ...

    @property
    def settings(self) -> Settings: ...


@dataclass
class ApiCall:
    """One chat-completions call: what it sent, and its turn on the reply path, keyed by a new id (the recorded
    conversation's external id, also the canary key)."""

    body: ChatCompletionRequest
    turn: Turn

    @property
    def prompt(self) -> list[dict[str, str]]:
        return self.turn.prompt

    @classmethod
    def from_request(
        cls, body: ChatCompletionRequest, company_prompt: str, brand_id: int = DEFAULT_BRAND_ID,
        grounding: Grounding | None = None, recall: Recall | None = None,
    ) -> ApiCall:
        turns = request_turns(body)
        system = next((text for role, text in turns if role == Role.SYSTEM), company_prompt)
        passages = grounding.passages if grounding is not None else ()
        examples = recall.examples if recall is not None else ()
        return cls(body, Turn(
            conversation_id=None,  # stored with its reply, once answered
            conversation_key=uuid.uuid4().hex,
            channel=API_CHANNEL,
            mode=ReplyMode.AUTO,
            prompt=build_messages(system, turns, passages, examples),
            parameters=body.model_dump(exclude_none=True, exclude={"messages", "stream", "stream_options"}),
            guard=None,  # the caller owns what it does with the model's words
            fit_prompt=False,  # the caller's messages go as sent: too long is vLLM's 400, not a silent cut
            grounding=grounding,
            recall=recall,
            brand_id=brand_id,
        ))


def request_turns(body: ChatCompletionRequest) -> list[tuple[Role, str]]:
    """The call's messages as (role, text) turns; tool and function messages are not part of the conversation."""
    return [(TRANSCRIPT_ROLES[m.role], m.text()) for m in body.messages if m.role in TRANSCRIPT_ROLES]


async def ground_call(body: ChatCompletionRequest, brand: AnsweringBrand) -> Grounding | None:
    """The brand's passages for the call's conversation; None when the brand has grounding off."""
    return await assistant.ground_turns(brand.settings, request_turns(body))


def write_call(call: ApiCall, reply: Reply | None, session: Session) -> None:
    """The call as one auto-mode conversation: the caller's messages, then the reply as a sent draft (if any)."""
    assistant.record_exchange(session, call.turn, turns=request_turns(call.body), customer_ref=call.body.user,
                              reply=reply)


@dataclass(frozen=True)
class ChatServing:
    """Chat completions for the route, with what the service lends them: its settings, gateway (None: no model
    servers), metrics and the store writer the calls are recorded through."""

    settings: Settings
    gateway: Any
    metrics: ServiceMetrics
    writer: GroupCommit

    async def call_for(self, body: ChatCompletionRequest, brand: AnsweringBrand) -> ApiCall:
        turns = request_turns(body)
        return ApiCall.from_request(body, brand.settings.system_prompt, brand.id, await ground_call(body, brand),
                                    await assistant.recall_turns(brand.settings, brand.id, turns))

    async def complete(
        self, body: ChatCompletionRequest, brand: AnsweringBrand
    ) -> tuple[ChatCompletion, Callable[[], Awaitable[None]]]:
        """The whole answer, and what records the call once it has gone out."""
        call = await self.call_for(body, brand)
        try:
            reply = await assistant.generate_reply(self.settings, self.gateway, self.metrics, call.turn)
        except HouseStyleError:
            await self.store(call)  # the caller's words are kept
            raise
        return ChatCompletion.model_validate(reply.body), partial(self.queue, call, reply)

    async def stream(self, body: ChatCompletionRequest, brand: AnsweringBrand) -> AsyncIterator[ServerSentEvent]:
        """The answer's chunks as server-sent events; raises before any is sent when no model server takes the call."""
        call = await self.call_for(body, brand)
        try:
            stream = await assistant.open_reply_stream(self.settings, self.gateway, self.metrics, call.turn)
        except HouseStyleError:
            await self.store(call)
            raise
        return self._events(call, stream, include_usage=bool(body.stream_options and body.stream_options.include_usage))

    async def _events(
        self, call: ApiCall, stream: assistant.ReplyStream, *, include_usage: bool
    ) -> AsyncIterator[ServerSentEvent]:
        try:
            async for item in stream:
                if isinstance(item, Reply):
                    # recorded before [DONE]: clients hang up at [DONE], which would cancel anything after it
                    await self.store(call, item)
                    yield ServerSentEvent("[DONE]")
                elif item.chunk is not None:
                    chunk = ChatCompletionChunk.model_validate(item.chunk)
                    if chunk.usage is not None and not include_usage:  # asked for by us, for the metrics
                        if not chunk.choices:
                            continue
                        chunk.usage = None
                    yield ServerSentEvent(chunk.model_dump_json())
        except HouseStyleError as exc:  # the status line is sent already: the SDK raises on an `error` event
            await self.store(call)
            yield ServerSentEvent(json.dumps({"error": {"message": str(exc), "type": "upstream_error"}}))
        finally:
            await stream.aclose()

    async def queue(self, call: ApiCall, reply: Reply) -> None:
        """Once the answer has gone out: queue its recording (async, so Starlette runs it on the loop, not a thread)."""
        self.writer.submit_and_log(partial(write_call, call, reply), "an API call")

    async def store(self, call: ApiCall, reply: Reply | None = None) -> None:
        """Record the call and wait until it is committed (the caller's words are kept before an error answer)."""
        await self.writer.write(partial(write_call, call, reply))
