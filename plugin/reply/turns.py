"""What goes through the reply path: a `Turn` waiting for its reply, the `Delta`s of a streamed one, the `Reply`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.knowledge import Grounding
from collector.memory import Recall
from core.models import DEFAULT_BRAND_ID, Draft, ReplyMode
from plugin.reply_guard import ReplyGuard


@dataclass
class Turn:
    """A customer's message waiting for the assistant's reply, whichever channel it came on."""

    conversation_id: int | None  # None: not stored yet (an API call: stored with its reply, `record_exchange`)
    conversation_key: str  # stable per conversation: keeps it on one side of a canary split
    channel: str
    mode: ReplyMode
    prompt: list[dict[str, str]]
    parameters: dict[str, Any]  # the model request besides its messages: the public model name, sampling
    guard: ReplyGuard | None = None  # fills the reply's placeholders; None: the text goes out as the model wrote it
    fit_prompt: bool = True  # cut to the model's context; an API caller's prompt goes as it was sent
    handoff: str | None = None  # why this auto-mode turn goes to an agent before the customer sees it
    grounding: Grounding | None = None  # the knowledge passages its prompt carries (recorded with the draft)
    recall: Recall | None = None  # the brand's past exchanges its prompt carries as examples (recorded too)
    brand_id: int = DEFAULT_BRAND_ID  # whose adapters answer it


@dataclass
class Delta:
    """A piece of a streamed reply: the text that may go out now, and the model's chunk it came in."""

    text: str  # "" while the guard holds back a sentence whose end has not come yet
    chunk: dict[str, Any] | None = None  # None: the text the guard held back, after the model's last chunk


@dataclass
class Reply:
    draft: Draft | None  # None: the turn's conversation is not stored yet; its caller records it
    version: str | None  # the adapter version that wrote it (None: the base model)
    text: str  # as the customer gets it (guarded)
    latency_ms: float
    usage: dict[str, int] | None = None  # the model's token counts, when it reported them
    body: dict[str, Any] | None = None  # the model's whole answer, when not streamed
