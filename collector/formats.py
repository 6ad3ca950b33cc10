"""File records HouseStyle reads and writes: OpenAI chat, prompt/completion and HouseStyle JSONL lines.

Every format is a pydantic model, so a bad line fails with a reason a person can act on. `parse_record` turns one
JSONL line into the right model by looking at its keys.

The HouseStyle format is the richest: it keeps the assistant's draft and what the agent did with it.

    {"external_id": "gc-0001", "channel": "web", "customer_ref": "cust-42", "created_at": "2026-01-05T09:12:00Z",
     "messages": [
       {"role": "user", "content": "My new 'SuperWidget' won't turn on."},
       {"role": "assistant", "content": "<the text the customer got>", "draft": "<the assistant's draft>",
        "decision": "edited", "agent_id": "alice"}]}

Rules for an assistant turn (the same ones `collector.recorder.record_review` applies):
- `approved` (the default): the draft went out unchanged. `draft` may be left out (it is the content); if given it
  must equal `content`.
- `edited`: the agent changed the draft; both `draft` and `content` are needed. An "edit" that changed nothing is
  stored as `approved`.
- `rejected`: the draft did not go out; `draft` is needed. `content` is the reply the agent wrote from scratch, or
  `null` when the agent sent nothing: then the customer saw no reply to that message, and the exporter drops the
  exchange from training data.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from core.changes import same_text
from core.settings import Settings

DEFAULT_MAX_MESSAGE_CHARS: int = Settings.model_fields["max_message_chars"].default

Decision = Literal["approved", "edited", "rejected"]


def _no_nul(text: str) -> str:
    if "\x00" in text:  # Postgres text cannot hold NUL; refuse it on every store alike
        raise ValueError("contains a NUL character")
    return text


def _non_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return _no_nul(text)


NonBlankText = Annotated[str, AfterValidator(_non_blank)]
# the store's column widths, checked here so a long value is a bad line, not a failed transaction
Name200 = Annotated[str, StringConstraints(max_length=200), AfterValidator(_no_nul)]
NonBlankName200 = Annotated[str, StringConstraints(max_length=200), AfterValidator(_non_blank)]
NonBlankName100 = Annotated[str, StringConstraints(max_length=100), AfterValidator(_non_blank)]


def check_turn_order(roles: list[str]) -> None:
    """Conversations alternate user → assistant, start with the customer and end with a reply.

    Leading system messages are allowed (the caller decides what to do with them); one anywhere else is not.
    """
    turns = list(roles)
    while turns and turns[0] == "system":
        turns.pop(0)
    if not turns:
        raise ValueError("has no user or assistant messages")
    if "system" in turns:
        raise ValueError("has a system message after the conversation started; put it first or drop it")
    if "assistant" not in turns:
        raise ValueError("has no assistant turn; a conversation needs at least one reply")
    for index, role in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"has bad role order: message {index + 1} is '{role}' but '{expected}' was expected "
                "(turns must alternate user, assistant, user, ...)"
            )
    if turns[-1] != "assistant":
        raise ValueError("ends with a user turn that got no reply; drop it or add the assistant's answer")


# --- OpenAI chat JSONL ----------------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    """One message of an OpenAI chat record."""

    model_config = ConfigDict(extra="ignore")  # other tools add keys such as `weight`; they do not matter here

    role: Literal["system", "user", "assistant"]
    content: NonBlankText
    name: str | None = None


class ChatRecord(BaseModel):
    """An OpenAI chat fine-tuning line: `{"messages": [{"role": ..., "content": ...}, ...]}`."""

    model_config = ConfigDict(extra="ignore")

    messages: list[ChatMessage] = Field(min_length=1)

    @model_validator(mode="after")
    def _turns_alternate(self) -> ChatRecord:
        check_turn_order([message.role for message in self.messages])
        return self


# --- prompt/completion JSONL ----------------------------------------------------------------------------------


class PromptCompletionRecord(BaseModel):
    """A prompt/completion line: the customer's message and the reply, one exchange."""

    model_config = ConfigDict(extra="ignore")

    prompt: NonBlankText
    completion: NonBlankText


def surely_valid(record: dict[str, Any]) -> bool:
    """True when `record` certainly passes ChatRecord / PromptCompletionRecord above (every text a non-blank str
    without NUL, chat roles in turn order): the export's fast path at a tenth of the models' cost. Kept beside the
    models so a new rule lands in both; a record it is unsure of goes through the model, which words the problem."""
    if "messages" in record:
        messages = record["messages"]
        texts = [message["content"] for message in messages]
        try:
            check_turn_order([message["role"] for message in messages])
        except ValueError:
            return False
    else:
        texts = [record["prompt"], record["completion"]]
    return all(type(text) is str and text.strip() and "\x00" not in text for text in texts)


# --- HouseStyle JSONL -----------------------------------------------------------------------------------------


class HouseStyleTurn(BaseModel):
    """A turn of a HouseStyle record; assistant turns carry the draft and the agent's decision."""

    model_config = ConfigDict(extra="forbid")  # our own format: a misspelt key is a mistake, not noise

    role: Literal["user", "assistant"]
    content: NonBlankText | None = None
    draft: NonBlankText | None = None
    decision: Decision = "approved"
    agent_id: Name200 | None = None

    @model_validator(mode="after")
    def _decision_is_consistent(self) -> HouseStyleTurn:
        if self.role == "user":
            extra = {"draft", "decision", "agent_id"} & self.model_fields_set
            if extra:
                raise ValueError(f"a user turn cannot have {', '.join(sorted(extra))}; only assistant turns do")
            if self.content is None:
                raise ValueError("a user turn needs content")
            return self
        if self.decision == "approved":
            if self.content is None and self.draft is None:
                raise ValueError("an approved assistant turn needs content (the reply the customer got)")
            if self.content is not None and self.draft is not None and not same_text(self.draft, self.content):
                raise ValueError("decision is 'approved' but the draft differs from the content; use 'edited'")
            self.content = self.content if self.content is not None else self.draft
            self.draft = self.content
        elif self.decision == "edited":
            if self.content is None or self.draft is None:
                raise ValueError("an edited assistant turn needs both the draft and the content the agent sent")
            if same_text(self.draft, self.content):
                self.decision = "approved"  # nothing changed: what record_review stores too
        elif self.draft is None:
            raise ValueError("a rejected assistant turn needs the draft that was rejected")
        return self

    @property
    def final_text(self) -> str | None:
        """What the customer got for this turn (None: a rejected draft and no reply from the agent)."""
        return self.content


class HouseStyleRecord(BaseModel):
    """One conversation in HouseStyle JSONL, as in the bundled GadgetCorp sample."""

    model_config = ConfigDict(extra="forbid")

    external_id: NonBlankName200
    channel: NonBlankName100 | None = None  # None: the importer's --channel
    customer_ref: Name200 | None = None
    created_at: AwareDatetime | None = None  # None: the time of import
    messages: list[HouseStyleTurn] = Field(min_length=1)

    @model_validator(mode="after")
    def _normalise(self) -> HouseStyleRecord:
        if self.created_at is not None:
            self.created_at = self.created_at.astimezone(UTC)
        check_turn_order([turn.role for turn in self.messages])
        return self


FileRecord = ChatRecord | PromptCompletionRecord | HouseStyleRecord

HOUSESTYLE_KEYS = {"external_id", "channel", "customer_ref", "created_at"}


class RecordError(ValueError):
    """A line that is not a usable record; the message says why in one line."""


def first_problem(error: ValidationError) -> str:
    """The first of pydantic's error messages, without its "Value error, " prefix: a one-line reason for a user."""
    return str(error.errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")


def _describe(error: ValidationError) -> str:
    """Pydantic's errors as one line: `messages.1.content: must not be empty; ...`."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def record_kind(data: dict[str, Any]) -> type[FileRecord]:
    """Which format a decoded line is, from its keys."""
    if "messages" in data:
        if HOUSESTYLE_KEYS & data.keys():
            return HouseStyleRecord
        if isinstance(data["messages"], list) and any(
            isinstance(m, dict) and {"draft", "decision", "agent_id"} & m.keys() for m in data["messages"]
        ):
            return HouseStyleRecord
        return ChatRecord
    if "prompt" in data or "completion" in data:
        return PromptCompletionRecord
    keys = ", ".join(sorted(data)) or "none"
    raise RecordError(
        f"unknown record shape (keys: {keys}); expected 'messages' (OpenAI chat or HouseStyle) "
        "or 'prompt' and 'completion'"
    )


def parse_record(line: str, *, max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS) -> FileRecord:
    """One JSONL line as a chat, prompt/completion or HouseStyle record; RecordError says why not.

    A message longer than `max_message_chars` (HOUSESTYLE_MAX_MESSAGE_CHARS) makes the line bad: no support
    message is that long, and one such text would cost export and training gigabytes.
    """
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:  # json's C decoder recurses per level: a 100,000-deep line must not be a traceback
        raise RecordError(
            "invalid JSON: nested too deeply (a record is an object holding a list of messages)"
        ) from None
    if not isinstance(data, dict):
        raise RecordError(f"expected a JSON object, got {type(data).__name__}")
    kind = record_kind(data)
    _check_lengths(data, max_message_chars)  # before validation, which would copy a huge text again
    try:
        record = kind.model_validate(data)
    except ValidationError as exc:
        raise RecordError(f"not a valid {KIND_NAMES[kind]} record: {_describe(exc)}") from None
    except RecursionError:
        raise RecordError(f"not a valid {KIND_NAMES[kind]} record: nested too deeply") from None
    return record


def _check_lengths(data: dict[str, Any], limit: int) -> None:
    """RecordError naming the first text of a decoded line longer than `limit` characters."""
    texts = [("the prompt", data.get("prompt")), ("the completion", data.get("completion"))]
    messages = data.get("messages")
    for number, message in enumerate(messages if isinstance(messages, list) else [], start=1):
        if isinstance(message, dict):
            texts += [(f"message {number}", message.get("content")), (f"the draft of message {number}", message.get("draft"))]
    for label, text in texts:
        if isinstance(text, str) and len(text) > limit:
            raise RecordError(
                f"{label} is {len(text):,} characters long; the longest accepted is {limit:,} "
                "(split it, or raise HOUSESTYLE_MAX_MESSAGE_CHARS)"
            )


KIND_NAMES: dict[type[BaseModel], str] = {
    ChatRecord: "OpenAI chat",
    PromptCompletionRecord: "prompt/completion",
    HouseStyleRecord: "HouseStyle",
}


def as_housestyle(
    record: FileRecord, *, external_id: str, channel: str | None = None, created_at: datetime | None = None
) -> HouseStyleRecord:
    """Any record in the richest format: chat and prompt/completion replies become approved turns, system dropped."""
    if isinstance(record, HouseStyleRecord):
        return record
    if isinstance(record, PromptCompletionRecord):
        turns = [HouseStyleTurn(role="user", content=record.prompt), HouseStyleTurn(role="assistant", content=record.completion)]
    else:
        turns = [
            HouseStyleTurn(role=message.role, content=message.content)  # type: ignore[arg-type]
            for message in record.messages
            if message.role != "system"
        ]
    return HouseStyleRecord(external_id=external_id, channel=channel, created_at=created_at, messages=turns)
