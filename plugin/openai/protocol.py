"""The OpenAI chat-completions wire format, as pydantic models, apart from the serving logic and the route."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from plugin.storable import storable

Text = Annotated[str, AfterValidator(storable)]  # what the store can keep: no NUL, no lone surrogate


class ChatMessage(BaseModel):
    """One message of a chat request; content parts other than text are not supported by a text model."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: Text | None = Field(default=None, max_length=200)

    @field_validator("content")
    @classmethod
    def _text_parts(cls, content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        """A text part's `text` is a string: anything else is the caller's mistake (422), not our crash."""
        for part in content if isinstance(content, list) else ():
            if part.get("type") == "text" and not isinstance(part.get("text"), str):
                raise ValueError("a content part of type 'text' needs a string 'text'")
        return content

    @model_validator(mode="after")
    def _storable(self) -> ChatMessage:
        storable(self.text())  # every call is recorded: refuse what the store cannot keep (NUL, lone surrogates)
        return self

    def text(self) -> str:
        """The message's text, joining text parts when the client sent a list."""
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions. Unknown sampling fields pass through to vLLM untouched."""

    model_config = ConfigDict(extra="allow")

    model: Text = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request is supported.")
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: Text | None = Field(default=None, max_length=200,
                              description="Your end user's id; kept as the recorded conversation's customer_ref.")

    @model_validator(mode="after")
    def _extras_storable(self) -> ChatCompletionRequest:
        """Unknown fields go on to vLLM as JSON: refuse what cannot be sent as UTF-8 (a lone surrogate)."""
        try:
            json.dumps(self.model_extra or {}, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            raise ValueError(f"an extra field cannot be sent on as JSON: {type(exc).__name__}") from None
        return self


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = "stop"
    logprobs: Any = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    """The non-streaming answer; `system_fingerprint` names the adapter version that wrote it ("base" without one)."""

    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: Any = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
