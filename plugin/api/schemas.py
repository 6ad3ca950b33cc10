"""Every request and response body of the plugin's own API (widget, reviews, admin, web UI).

The OpenAI wire format lives apart, in `plugin.openai.protocol`; Chatwoot's payloads beside its connector, in
`plugin.connectors.chatwoot_payloads`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from collector.stats import BASE_LABEL
from core.models import ApiKeyRole, ReplyMode, ReviewDecision, Role, RunStatus
from core.registry import VERSION_ID_PATTERN
from plugin.storable import storable

LOG_TAIL_CHARS = 2000  # the dashboard shows the end of a run's log; the whole log can be megabytes
CONVERSATION_TOKEN_HEADER = "X-Conversation-Token"

Text = Annotated[str, AfterValidator(storable)]


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: `detail` says what to fix (a 422 of a malformed body lists each problem)."""

    detail: str | list[dict[str, Any]]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "The request cannot be carried out as asked; `detail` says why",
        401: "Missing, unknown or revoked API key",
        403: "This key's role may not do this",
        404: "No such thing (for a widget key: none it started)",
        409: "Not possible in the current state (already reviewed, claimed by another agent, already live, ...)",
        413: "Request body over HOUSESTYLE_MAX_REQUEST_BYTES",
        422: "A value is not usable: a list of problems for a malformed body, else one sentence",
        429: "Over a rate limit; retry after Retry-After",
        503: "Not available right now (no model server, the store cannot write); retry after Retry-After",
    }.items()
}


class Identified(BaseModel):
    """Bodies that once named who acted: the API key names them now; an old client's own name must agree."""

    agent: str | None = Field(None, max_length=200,
                              description="Ignored when it equals the API key's name; anything else is refused: "
                              "who acted always comes from the key.")


# --- widget -----------------------------------------------------------------------------------
class ConversationStart(BaseModel):
    channel: Text = Field("web", min_length=1, max_length=100,
                          description="For a widget key, one of HOUSESTYLE_WIDGET_CHANNELS.")
    customer_ref: Text | None = Field(None, max_length=200)
    mode: ReplyMode | None = Field(None, description="auto or assist; default: the channel's configured mode. A "
                                   "widget key may ask only for that one or one in HOUSESTYLE_WIDGET_MODES.")
    customer_name: Text | None = Field(None, max_length=200, description="A signed-in customer's name, if your site "
                                       "knows it: redacted exactly wherever it appears, and used in replies.")
    customer_email: Text | None = Field(None, max_length=320, description="A signed-in customer's email, likewise.")


class ConversationOut(BaseModel):
    conversation_id: str = Field(description="The conversation's unguessable public id; widget calls use it.")
    conversation_token: str | None = Field(
        None, description=f"Only in the answer that starts it: the conversation's secret. A widget key's later calls "
        f"on it send it as the {CONVERSATION_TOKEN_HEADER} header; no other widget client can reach it.")
    channel: str
    mode: ReplyMode
    status: str
    created_at: datetime


class CustomerMessage(BaseModel):
    content: Text = Field(min_length=1, max_length=8000)
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
    awaiting_reply: bool = Field(False, description="True while the customer's last message has no reply yet (an "
                                 "agent is reviewing it, or the model was unavailable and the service will answer).")
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
class PassageOut(BaseModel):
    """A knowledge-base passage a draft's prompt carried."""

    id: int
    document: str = Field(description="The knowledge document's name, e.g. gadgetcorp_products.md.")
    title: str = Field(description="Its heading path, e.g. 'MegaGadget › MegaGadget warranty'.")
    text: str = Field(description="Its text as the knowledge base has it now (\"\" once the document is removed).")
    score: float = Field(description="Its retrieval score for the conversation (BM25).")


class RecalledOut(BaseModel):
    """A past exchange of the brand (answer memory, redacted) a draft's prompt carried as an example."""

    review_id: int = Field(description="The review that made it; mark it outdated with POST "
                           "/reviews/{draft_id}/recalled/{review_id}/outdated.")
    customer: str = Field(description="What that customer asked (redacted).")
    reply: str = Field(description="What the agent sent them (redacted).")
    score: float = Field(description="Its retrieval score for the conversation (BM25).")


class OutdatedOut(BaseModel):
    review_id: int
    outdated: bool = Field(True, description="It is never offered as an example again.")
    already: bool = Field(description="It was marked outdated before.")


class PendingDraft(BaseModel):
    draft_id: int
    conversation_id: int
    brand_id: int = 1
    channel: str
    mode: ReplyMode
    draft: str
    adapter_version: str | None
    latency_ms: float | None
    created_at: datetime
    claimed_by: str | None
    claimed_until: datetime | None
    handoff_reason: str | None = Field(None, description="Why an auto-mode draft waits for an agent before the "
                                       "customer sees it (no usable reply, a topic the model has not learned).")
    context: list[MessageOut] = Field(description="The conversation so far, as the customer saw it.")
    passages: list[PassageOut] = Field(default_factory=list, description="The knowledge-base passages the draft's "
                                       "prompt carried, best first (none: it was not grounded).")
    recalled: list[RecalledOut] = Field(default_factory=list, description="The brand's past replies (answer "
                                        "memory) the draft's prompt carried as examples, best first.")


class ClaimIn(Identified):
    pass


class ClaimOut(BaseModel):
    draft_id: int
    claimed_by: str
    claimed_until: datetime
    typing_until: datetime | None = None


class ApproveIn(ClaimIn):
    pass


class EditIn(ClaimIn):
    final_text: Text = Field(min_length=1, max_length=8000)
    reason: Text | None = Field(None, max_length=2000)


class RejectIn(ClaimIn):
    reply: Text | None = Field(None, max_length=8000, description="The reply the agent wrote instead, if any.")
    reason: Text | None = Field(None, max_length=2000)


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
    actor: str | None = Field(None, max_length=200, description="Who made the change: always the API key's name; "
                              "a different name is refused (only the local `housestyle adapters` CLI names its user).")
    reason: Text | None = Field(None, max_length=2000)


class RollbackIn(AdapterChange):
    version: str | None = Field(None, pattern=VERSION_ID_PATTERN, max_length=100,
                                description="Version to go back to; default the one live before.")


class CanaryIn(AdapterChange):
    share: float = Field(ge=0, le=1, description="Share of new conversations the version answers (0 stops it).")


class VersionDrafts(BaseModel):
    """Every draft of one version in the store, imported history and undecided drafts included."""

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
    per_adapter_version: list[VersionDrafts]


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


class RefreshStarted(BaseModel):
    detail: str
    run_id: int = Field(description="The refresh's run; follow it at GET /admin/runs/{run_id}.")


class VersionQuality(BaseModel):
    version: str
    reviews: int
    approved: int
    edited: int
    rejected: int
    correction_rate: float = Field(description="(edited + rejected) / reviews: what the automatic rollback acts on.")
    acceptance_rate: float
    edit_rate: float
    rejection_rate: float
    mean_edit_distance: float


# --- web UI (read-only JSON for the pages) ---------------------------------------------------
class BrandOut(BaseModel):
    name: str = Field(description="The brand's name, as ?brand= takes it.")
    company_name: str
    public_model_name: str


class MeOut(BaseModel):
    name: str = Field(description="The key's name (the agent id in reviews).")
    role: ApiKeyRole
    brands: list[BrandOut] = Field(default_factory=list, description="The brands this key may see and act on.")


class RunOut(BaseModel):
    id: int
    kind: str
    status: RunStatus
    step: str | None
    progress: float = Field(description="0..1 within the current step.")
    adapter_version: str | None
    metrics: dict[str, Any] | None
    error: str | None
    log_tail: str = Field(description=f"The last {LOG_TAIL_CHARS} characters of the run's log.")
    started_at: datetime
    finished_at: datetime | None


class CorrectionRatePoint(BaseModel):
    start: datetime = Field(description="Start of the time bucket (UTC).")
    reviews: int
    approved: int
    edited: int
    rejected: int
    correction_rate: float = Field(description="(edited + rejected) / reviews in this bucket.")


class CorrectionRateSeries(BaseModel):
    version: str = Field(description=f"Adapter version; '{BASE_LABEL}' for drafts of the base model alone.")
    points: list[CorrectionRatePoint]


class CorrectionRateOut(BaseModel):
    since: datetime
    until: datetime
    bucket_minutes: int
    series: list[CorrectionRateSeries]


class AdapterEventOut(BaseModel):
    version: str
    action: str
    actor: str
    reason: str | None
    created_at: datetime


# --- health -----------------------------------------------------------------------------------
class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    ready: bool
    database: bool
    model_servers: bool
    detail: str | None = None
