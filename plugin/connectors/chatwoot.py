"""The Chatwoot connector: turn agent-bot webhook events into drafts and reviews, and post drafts back to Chatwoot.

Chatwoot calls the bot's webhook with `message_created` events. A customer's (incoming) message gets a draft,
posted as a private note for the agents (assist mode) or as the reply itself (auto mode). An agent's public
(outgoing) message is matched to the conversation's latest pending draft: the same text is an approval; a text at
least `chatwoot_edit_threshold` similar (`core.changes.similarity`, 1 - normalised edit distance, default
0.5) is an edit; anything less was written from scratch, so the draft counts as rejected and the agent's text is
kept as the reply. Light edits (a greeting, a fixed order number) keep most characters and score well above 0.5;
replies written anew share little beyond common words and score below it.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import FastAPI
from sqlmodel import Session

from collector import recorder, review_queue
from collector.brands import brand_id
from core.changes import same_text, similarity
from core.db import session_scope
from core.errors import HouseStyleError, InputError
from core.models import DEFAULT_BRAND_ID, ReplyMode, ReviewDecision, Role
from core.settings import Settings
from plugin import assistant
from plugin.connectors.chatwoot_payloads import NAME_CHARS, ChatwootEvent, EventOutcome
from plugin.metrics import ServiceMetrics
from plugin.reply.turns import Turn
from plugin.storable import storable_text

log = logging.getLogger("housestyle.chatwoot")

CHANNEL = "chatwoot"
BOT_SENDER_TYPES = {"agent_bot", "agentbot", "bot"}


MESSAGE_TYPES = {0: "incoming", 1: "outgoing", 2: "activity", 3: "template"}


def message_type(event: ChatwootEvent) -> str | None:
    if isinstance(event.message_type, int):
        return MESSAGE_TYPES.get(event.message_type)
    return event.message_type


def decide(draft: str, sent: str, threshold: float) -> ReviewDecision:
    """What an agent's Chatwoot reply did with the pending draft: unchanged, edited (similar enough), or rejected."""
    if same_text(draft, sent):
        return ReviewDecision.APPROVED
    return ReviewDecision.EDITED if similarity(draft, sent) >= threshold else ReviewDecision.REJECTED


class ChatwootClient:
    """The one HTTP client for a Chatwoot instance: posts the bot's messages and notes."""

    def __init__(self, settings: Settings) -> None:
        if not settings.chatwoot_url or not settings.chatwoot_api_token:
            raise InputError("set HOUSESTYLE_CHATWOOT_URL and HOUSESTYLE_CHATWOOT_API_TOKEN to connect to Chatwoot")
        self.http = httpx.AsyncClient(
            base_url=settings.chatwoot_url.rstrip("/"),
            headers={"api_access_token": settings.chatwoot_api_token},
            timeout=httpx.Timeout(15.0),
        )
        self.posted_ids: set[int] = set()  # our own messages come back as webhooks: ignore them

    async def post_message(self, account_id: int, conversation_id: int, content: str, *, private: bool) -> dict:
        response = await self.http.post(
            f"/api/v1/accounts/{account_id}/conversations/{conversation_id}/messages",
            json={"content": content, "message_type": "outgoing", "private": private, "content_type": "text"},
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        if isinstance(body.get("id"), int):
            self.posted_ids.add(body["id"])
        return body

    async def close(self) -> None:
        await self.http.aclose()


def client_for(app: FastAPI) -> ChatwootClient:
    client = getattr(app.state, "chatwoot_client", None)
    if client is None:
        client = app.state.chatwoot_client = ChatwootClient(app.state.settings)
    return client


async def close_client(app: FastAPI) -> None:
    client = getattr(app.state, "chatwoot_client", None)
    if client is not None:
        await client.close()
        app.state.chatwoot_client = None


def external_id(event: ChatwootEvent) -> str:
    return f"{event.account.id}:{event.conversation.id}"  # type: ignore[union-attr]


def contact_values(event: ChatwootEvent) -> dict[str, str]:
    """The contact's name, email and phone as Chatwoot sends them with the customer's message."""
    sender = event.sender.model_dump() if event.sender else {}
    values = {"name": sender.get("name"), "email": sender.get("email"), "phone": sender.get("phone_number")}
    return {key: str(value).strip() for key, value in values.items() if value and str(value).strip()}


def brand_of_inbox(session: Session, settings: Settings, event: ChatwootEvent) -> int:
    """The brand a Chatwoot inbox belongs to (HOUSESTYLE_CHATWOOT_INBOX_BRANDS); an inbox not named: the default."""
    slug = settings.chatwoot_inbox_brands.get(str(event.inbox.id)) if event.inbox and event.inbox.id else None
    return DEFAULT_BRAND_ID if slug is None else brand_id(session, slug)


def store_customer_message(settings: Settings, event: ChatwootEvent) -> Turn:
    """Find or open the conversation for this Chatwoot conversation and store the customer's message.

    The contact's name, email and phone are kept with the conversation: redacted exactly wherever they appear, and
    used to fill a reply's placeholders."""
    known = contact_values(event)
    with session_scope(settings.resolved_database_url) as session:
        brand = brand_of_inbox(session, settings, event)
        conversation = recorder.find_conversation(session, CHANNEL, external_id(event), brand_id=brand)
        if conversation is None:
            sender = event.sender.id if event.sender else None
            conversation = recorder.start_conversation(
                session,
                external_id=external_id(event),
                channel=CHANNEL,
                customer_ref=f"chatwoot-contact:{sender}" if sender is not None else None,
                mode=assistant.mode_for_channel(settings, CHANNEL),
                known_values=known,
                brand_id=brand,
            )
        else:
            recorder.reopen_idle_closed(session, conversation)
            if known and {**(conversation.known_values or {}), **known} != conversation.known_values:
                conversation.known_values = {**(conversation.known_values or {}), **known}
                session.add(conversation)
        conversation_id = conversation.id
    return assistant.receive_customer_message(settings, conversation_id, storable_text(event.content or ""))


def record_agent_message(settings: Settings, metrics: ServiceMetrics, event: ChatwootEvent) -> EventOutcome:
    """An agent's public reply: the review of the latest pending draft (counted as the review queue counts its
    reviews), or a plain turn when there is none."""
    agent = f"chatwoot:{(event.sender.name or event.sender.id) if event.sender else 'agent'}"[:NAME_CHARS]
    content = storable_text(event.content or "")
    with session_scope(settings.resolved_database_url) as session:
        conversation = recorder.find_conversation(session, CHANNEL, external_id(event),
                                                  brand_id=brand_of_inbox(session, settings, event))
        if conversation is None:
            return EventOutcome(action="ignored", detail="conversation started before HouseStyle was connected")
        recorder.reopen_idle_closed(session, conversation)
        draft = recorder.pending_draft(session, conversation.id) if conversation.mode == ReplyMode.ASSIST else None
        if draft is None:
            recorder.add_message(session, conversation.id, Role.ASSISTANT, content)
            return EventOutcome(action="message-recorded", detail="no pending draft: kept as the agent's own reply")
        decision = decide(draft.content, content, settings.chatwoot_edit_threshold)
        review = recorder.record_review(
            session,
            draft.id,
            decision,
            agent_id=agent,
            final_text=None if decision == ReviewDecision.APPROVED else content,
            reason="agent wrote the reply from scratch in Chatwoot" if decision == ReviewDecision.REJECTED else None,
        )
        decided, version, draft_id = review.decision, draft.adapter_version, draft.id
    metrics.count_review(decided, version)  # once committed
    return EventOutcome(action="review-recorded", detail=f"draft {draft_id} {decided.value}")


async def draft_and_post(app: FastAPI, turn: Turn, account_id: int, conversation_id: int) -> None:
    """Generate the draft and post it: a private note for agents (assist) or the reply itself (auto).

    Runs after the webhook has answered (Chatwoot does not wait for the model); failures are logged, the customer's
    message is stored either way.
    """
    state = app.state
    metrics: ServiceMetrics = state.metrics
    try:
        reply = await assistant.generate_reply(state.settings, state.gateway, metrics, turn)
        await client_for(app).post_message(
            account_id,
            conversation_id,
            reply.draft.content,
            # assist, or auto handed to an agent (a topic not learned): a note for agents, never the customer
            private=review_queue.awaits_agent(reply.draft, turn.mode),  # type: ignore[arg-type]
        )
    except (HouseStyleError, httpx.HTTPError) as exc:
        log.error("no draft for chatwoot conversation %s:%s: %s", account_id, conversation_id, exc)
    except Exception:
        log.exception("drafting for chatwoot conversation %s:%s failed", account_id, conversation_id)
