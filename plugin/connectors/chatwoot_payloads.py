"""Chatwoot's agent-bot webhook payloads as the connector reads them, and what the webhook answers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ChatwootRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int


class ChatwootSender(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int | None = None
    name: str | None = None
    type: str | None = None  # contact, user (an agent), agent_bot


class ChatwootEvent(BaseModel):
    """The parts of a Chatwoot webhook payload the connector reads; everything else is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    event: str
    id: int | None = None  # the message id
    content: str | None = None
    message_type: str | int | None = None  # incoming, outgoing, activity, template (older payloads: 0, 1, 2, 3)
    private: bool = False
    conversation: ChatwootRef | None = None
    account: ChatwootRef | None = None
    inbox: ChatwootRef | None = None  # HOUSESTYLE_CHATWOOT_INBOX_BRANDS maps it to a brand
    sender: ChatwootSender | None = None


class EventOutcome(BaseModel):
    """What the webhook did with an event, returned to Chatwoot (which ignores it) and handy in logs and tests."""

    action: str  # draft-requested, review-recorded, message-recorded, ignored
    detail: str | None = None
