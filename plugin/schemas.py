"""Request and response bodies of the plugin's own API (widget, reviews, admin); the OpenAI format is in protocol."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from collector.models import ReplyMode, ReviewDecision, Role


# --- widget -----------------------------------------------------------------------------------
class ConversationStart(BaseModel):
    channel: str = Field("web", min_length=1, max_length=100)
    customer_ref: str | None = Field(None, max_length=200)
    mode: ReplyMode | None = Field(None, description="auto or assist; default: the channel's configured mode.")


class ConversationOut(BaseModel):
    conversation_id: str = Field(description="The conversation's unguessable public id; widget calls use it.")
    channel: str
    mode: ReplyMode
    status: str
    created_at: datetime


class CustomerMessage(BaseModel):
    content: str = Field(min_length=1, max_length=8000)
    stream: bool = Field(True, description="true: answer as server-sent events; false: one JSON answer.")


class MessageOut(BaseModel):
    position: int
    role: Role
    content: str
    created_at: datetime


class History(BaseModel):
    conversation_id: str
    mode: ReplyMode
    status: str
    messages: list[MessageOut]
    awaiting_agent: bool = Field(description="True while an assistant draft waits for an agent (assist mode).")
    agent_activity: Literal["waiting", "reviewing", "typing"] | None = Field(
        default=None,
        description="While awaiting an agent: waiting (nobody has the draft yet), reviewing (an agent claimed it), "
        "typing (that agent is writing the reply). Never names the agent.",
    )


class ReplyOut(BaseModel):
    """The answer to a customer message: the reply (auto mode), or nothing yet while an agent reviews (assist)."""

    reply: MessageOut | None
    awaiting_agent: bool
    adapter_version: str | None


# --- reviews ----------------------------------------------------------------------------------
class PendingDraft(BaseModel):
    draft_id: int
    conversation_id: int
    channel: str
    mode: ReplyMode
    draft: str
    adapter_version: str | None
    latency_ms: float | None
    created_at: datetime
    claimed_by: str | None
    claimed_until: datetime | None
    context: list[MessageOut] = Field(description="The conversation so far, as the customer saw it.")


class ClaimIn(BaseModel):
    agent: str | None = Field(None, max_length=200, description="Agent id; default the API key's name.")


class ClaimOut(BaseModel):
    draft_id: int
    claimed_by: str
    claimed_until: datetime
    typing_until: datetime | None = None


class ApproveIn(ClaimIn):
    pass


class EditIn(ClaimIn):
    final_text: str = Field(min_length=1, max_length=8000)
    reason: str | None = Field(None, max_length=2000)


class RejectIn(ClaimIn):
    reply: str | None = Field(None, max_length=8000, description="The reply the agent wrote instead, if any.")
    reason: str | None = Field(None, max_length=2000)


class DiffOp(BaseModel):
    op: Literal["equal", "insert", "delete", "replace"]
    before: str
    after: str


class ReviewOut(BaseModel):
    draft_id: int
    decision: ReviewDecision
    draft: str
    final_text: str | None
    agent: str
    edit_distance: float
    diff: list[DiffOp] = Field(description="Word-level changes from the draft to the final text.")


# --- admin ------------------------------------------------------------------------------------
class AdapterOut(BaseModel):
    version: str
    status: str
    canary_share: float
    base_model: str
    rank: int
    created_at: datetime
    metrics: dict | None = None


class AdaptersOut(BaseModel):
    adapters: list[AdapterOut]
    serving: dict | None = Field(None, description="The serving gateway's view: live, canary, replicas.")


class AdapterChange(BaseModel):
    actor: str | None = Field(None, max_length=200, description="Who made the change; default the key's name.")
    reason: str | None = Field(None, max_length=2000)


class RollbackIn(AdapterChange):
    version: str | None = Field(None, description="Version to go back to; default the one live before.")


class CanaryIn(AdapterChange):
    share: float = Field(ge=0, le=1, description="Share of new conversations the version answers (0 stops it).")


class VersionStats(BaseModel):
    adapter_version: str | None
    drafts: int
    pending: int
    approved: int
    edited: int
    rejected: int


class StatsOut(BaseModel):
    conversations: int
    conversations_by_channel: dict[str, int]
    drafts: int
    drafts_by_decision: dict[str, int] = Field(description="pending, approved, edited, rejected")
    per_adapter_version: list[VersionStats]


class ExportIn(BaseModel):
    format: Literal["chat", "prompt-completion", "hf"] = "chat"
    decisions: list[ReviewDecision] = Field(default_factory=lambda: [ReviewDecision.APPROVED, ReviewDecision.EDITED])
    channels: list[str] = Field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None
    redact: bool = True
    dedup: bool = True
    seed: int = 0


class ExportOut(BaseModel):
    path: str
    summary: str
    manifest: dict


# --- health -----------------------------------------------------------------------------------
class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    ready: bool
    database: bool
    model_servers: bool
    detail: str | None = None
