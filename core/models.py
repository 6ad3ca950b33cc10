"""The store's tables: conversations, their messages, assistant drafts, agent reviews, and the adapter registry."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, overload

from sqlalchemy import JSON, Column, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Timezone-aware UTC now: the store keeps every time in UTC, the same way on SQLite and Postgres."""
    return datetime.now(UTC)


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
def as_utc(moment: datetime | None) -> datetime | None:
    """Times without a zone are UTC, as everywhere in the store (SQLite hands them back without one)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# Enum columns are stored as their plain string values, so later migrations can add values without ALTER TYPE.
ENUM_TEXT = String(20)


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class ConversationStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ReplyMode(StrEnum):
    AUTO = "auto"  # the assistant answers the customer directly; agents may review afterwards
    ASSIST = "assist"  # the assistant's reply is a draft; the customer sees the agent's final text


class DraftStatus(StrEnum):
    PENDING = "pending"
    REVIEWED = "reviewed"


class ReviewDecision(StrEnum):
    APPROVED = "approved"  # sent unchanged
    EDITED = "edited"  # sent after the agent changed it
    REJECTED = "rejected"  # not sent; the agent may have written a reply from scratch


class AdapterStatus(StrEnum):
    CANDIDATE = "candidate"  # trained and registered, never served to customers
    CANARY = "canary"  # serving a share of new conversations
    LIVE = "live"  # behind the public model name
    RETIRED = "retired"  # was live, replaced; kept on disk for rollback
    REJECTED = "rejected"  # failed the evaluation gate or validation


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


DEFAULT_BRAND_ID = 1  # the brand every install starts with (and that existing data belongs to)
DEFAULT_BRAND = "default"


def brand_column(**extra: Any) -> Any:
    """The brand a row belongs to: the default brand unless told otherwise (also for rows from before brands)."""
    return Field(default=DEFAULT_BRAND_ID, foreign_key="brand.id", index=True,
                 sa_column_kwargs={"server_default": str(DEFAULT_BRAND_ID)}, **extra)


class Brand(SQLModel, table=True):
    """A house style of its own: company, voice, public model name, adapter lineage, keys, data, gate and loop.

    Every setting left None takes the installation's (HOUSESTYLE_*), so one brand looks exactly like no brands."""

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, max_length=50)  # what --brand, keys and the API name it by
    company_name: str | None = Field(default=None, max_length=200)
    system_prompt: str | None = Field(default=None, sa_column=Column(Text))
    public_model_name: str | None = Field(default=None, unique=True, max_length=200)
    golden_path: str | None = Field(default=None, sa_column=Column(Text))  # JSONL of its golden set
    gate_min_chrf_gain: float | None = None
    gate_min_loss_gain: float | None = None
    gate_golden_tolerance: float | None = None
    refresh_interval_minutes: float | None = None
    refresh_min_new_reviews: int | None = None
    refresh_canary_share: float | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Conversation(SQLModel, table=True):
    """One support conversation, from the chat widget, a platform such as Chatwoot, the API, or an import."""

    # a platform's ids are its own within a brand: two brands' platforms may both have a conversation #42
    __table_args__ = (UniqueConstraint("brand_id", "channel", "external_id",
                                       name="uq_conversation_brand_id_channel_external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    brand_id: int = brand_column()
    external_id: str = Field(index=True, max_length=200)
    channel: str = Field(default="web", index=True, max_length=100)
    customer_ref: str | None = Field(default=None, max_length=200)
    mode: ReplyMode = Field(default=ReplyMode.ASSIST, sa_type=ENUM_TEXT)
    status: ConversationStatus = Field(default=ConversationStatus.OPEN, sa_type=ENUM_TEXT)
    source: str = Field(default="live", max_length=50)  # live, import, sample, api
    content_hash: str | None = Field(default=None, index=True, max_length=64)  # import de-duplication
    # personal values the platform told us (name, email, phone): redacted exactly wherever they appear
    known_values: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # the conversation's placeholder table from its last redaction (<PERSON_1> -> value): fills replies' placeholders
    placeholders: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    raw_purged_at: datetime | None = None  # raw text replaced by its redacted form (HOUSESTYLE_RAW_RETENTION_DAYS)
    # sha256 of the secret the widget got when it started this conversation; None: no widget may reach it
    access_token_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class Message(SQLModel, table=True):
    """A turn of the transcript as the customer saw it; assistant turns point at the draft they came from."""

    __table_args__ = (UniqueConstraint("conversation_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True, ondelete="CASCADE")
    position: int
    role: Role = Field(sa_type=ENUM_TEXT)
    content: str = Field(sa_column=Column(Text, nullable=False))
    redacted_content: str | None = Field(default=None, sa_column=Column(Text))  # None: not redacted yet
    draft_id: int | None = Field(default=None, foreign_key="draft.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)


class Draft(SQLModel, table=True):
    """The assistant's suggested reply to the customer's latest message, kept forever beside the agent's final text."""

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True, ondelete="CASCADE")
    position: int  # the transcript position this draft answers (the assistant turn's slot)
    content: str = Field(sa_column=Column(Text, nullable=False))
    redacted_content: str | None = Field(default=None, sa_column=Column(Text))  # None: not redacted yet
    prompt: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    adapter_version: str | None = Field(default=None, index=True, max_length=100)  # None: base model or imported
    latency_ms: float | None = None
    status: DraftStatus = Field(default=DraftStatus.PENDING, index=True, sa_type=ENUM_TEXT)
    claimed_by: str | None = Field(default=None, max_length=200)
    claimed_until: datetime | None = None
    typing_until: datetime | None = None  # the claiming agent is writing a reply (the customer's widget says so)
    # set when an auto-mode reply must not go out before an agent has looked (no reply, a topic not learned): why
    handoff_reason: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Review(SQLModel, table=True):
    """What an agent did with a draft: approved it, edited it, or rejected it."""

    id: int | None = Field(default=None, primary_key=True)
    draft_id: int = Field(foreign_key="draft.id", unique=True, ondelete="CASCADE")
    decision: ReviewDecision = Field(index=True, sa_type=ENUM_TEXT)
    final_text: str | None = Field(default=None, sa_column=Column(Text))  # what the customer got (None: nothing)
    redacted_final_text: str | None = Field(default=None, sa_column=Column(Text))  # None: not redacted (or no text)
    agent_id: str = Field(max_length=200)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    edit_distance: float = 0.0  # normalised Levenshtein distance draft -> final, 0 (same) .. 1
    created_at: datetime = Field(default_factory=utcnow, index=True)


class TrainingRun(SQLModel, table=True):
    """One training or refresh run: its steps, progress, logs and outcome."""

    id: int | None = Field(default=None, primary_key=True)
    brand_id: int = brand_column()
    kind: str = Field(default="train", max_length=50)  # train, refresh
    status: RunStatus = Field(default=RunStatus.QUEUED, index=True, sa_type=ENUM_TEXT)
    step: str | None = Field(default=None, max_length=100)  # export, train, evaluate, gate, swap, done
    progress: float = 0.0  # 0..1 within the current step
    params: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    metrics: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    log: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    error: str | None = Field(default=None, sa_column=Column(Text))
    adapter_version: str | None = Field(default=None, max_length=100)
    holder: str | None = Field(default=None, index=True, max_length=200)  # job lock holder (machine:pid:random)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class AdapterVersion(SQLModel, table=True):
    """A registered LoRA adapter: an immutable folder, its lineage and its place in the promotion lifecycle."""

    id: int | None = Field(default=None, primary_key=True)
    brand_id: int = brand_column()
    version: str = Field(unique=True, max_length=100)  # e.g. v0003-1a2b3c4d; also the unique vLLM lora name
    path: str = Field(sa_column=Column(Text, nullable=False))
    base_model: str = Field(sa_column=Column(Text, nullable=False))
    base_model_hash: str | None = Field(default=None, max_length=64)
    dataset_hash: str | None = Field(default=None, max_length=64)
    rank: int
    status: AdapterStatus = Field(default=AdapterStatus.CANDIDATE, index=True, sa_type=ENUM_TEXT)
    canary_share: float = 0.0
    metrics: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    manifest: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    training_run_id: int | None = Field(default=None, foreign_key="trainingrun.id")
    created_at: datetime = Field(default_factory=utcnow)
    # what vLLM answered to the fixed probe set when the version was first loaded (JSON of
    # `serving.fingerprint.Fingerprint`); plain text, so "none recorded yet" is SQL NULL and recording it once is
    # one conditional UPDATE on every database
    fingerprint: str | None = Field(default=None, sa_column=Column(Text))
    # shared replicas (HOUSESTYLE_SHARED_REPLICAS): the vLLM name every service on the store serves the version under
    # while it is live or a canary; a fresh one each time it goes live or becomes a canary (a name is never reused)
    vllm_name: str | None = Field(default=None, sa_column=Column(Text))


class AdapterEvent(SQLModel, table=True):
    """History of the registry: who promoted, rolled back or canaried which version, and why."""

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(index=True, max_length=100)
    action: str = Field(max_length=50)  # register, promote, rollback, canary, canary-end, reject, retire, rolled-back
    actor: str = Field(default="system", max_length=200)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class ApiKeyRole(StrEnum):
    WIDGET = "widget"  # the chat widget: start conversations, post customer messages, read their history
    AGENT = "agent"  # support agents: the review queue, reading conversations, the OpenAI-compatible API
    ADMIN = "admin"  # everything, including adapters, data stats and exports


class ApiKey(SQLModel, table=True):
    """A key for the plugin service's API; only its sha256 is stored, the key itself is shown once at creation."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)  # who holds it, e.g. "alice" or "website-widget"; the agent id in reviews
    # brand slugs the key may act on; None: every brand. A widget key names exactly one (its conversations land there)
    brands: list[int] | None = Field(default=None, sa_column=Column(JSON))  # brand ids; None: every brand
    role: ApiKeyRole = Field(sa_type=ENUM_TEXT)
    key_hash: str = Field(unique=True, max_length=64)  # sha256 hex of the full key
    prefix: str = Field(max_length=16)  # the key's first characters, to tell keys apart in listings
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class JobLock(SQLModel, table=True):
    """A named lock held in the store so one job (e.g. a refresh) runs at a time across processes and hosts."""

    name: str = Field(primary_key=True, max_length=100)
    holder: str = Field(max_length=200)  # host:pid:random of the process holding it
    acquired_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime  # a holder that died stops renewing; after this anyone may take the lock


class ServedNames(SQLModel, table=True):
    """One running service's vLLM adapter names on shared replicas: those it routes to or still has requests on."""

    holder: str = Field(primary_key=True, max_length=200)  # the service: machine:pid:random
    names: str = Field(default="", sa_column=Column(Text, nullable=False))  # space-separated vLLM names
    expires_at: datetime  # renewed on every registry re-read; a service that stops renewing holds nothing


class WorkerMark(SQLModel, table=True):
    """How far a background job has got through an append-only table (e.g. the redaction worker's last message id)."""

    name: str = Field(primary_key=True, max_length=100)
    position: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """Who did what to customers' data and when (erasure, retention purges); never the personal values themselves."""

    id: int | None = Field(default=None, primary_key=True)
    action: str = Field(max_length=50, index=True)  # forget, purge-raw
    actor: str = Field(max_length=200)
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class HealthProbe(SQLModel, table=True):
    """Scratch rows `/ready` writes and deletes in one transaction: a store that cannot grow (a full disk) says so."""

    id: int | None = Field(default=None, primary_key=True)
    payload: str = Field(sa_column=Column(Text, nullable=False))


class MemoryOutdated(SQLModel, table=True):
    """An agent's mark on a reviewed exchange: outdated, so answer memory never offers it again (`collector.memory`)."""

    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(foreign_key="review.id", unique=True, ondelete="CASCADE")
    actor: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


class MemoryUse(SQLModel, table=True):
    """A past exchange (its review) a draft's prompt carried as an example, best first (rank 0): what the console
    shows under the draft, and what a correction of that draft supersedes."""

    draft_id: int = Field(foreign_key="draft.id", primary_key=True, ondelete="CASCADE")
    review_id: int = Field(foreign_key="review.id", primary_key=True, index=True, ondelete="CASCADE")
    rank: int = 0
    score: float = 0.0
