"""Chatwoot's agent-bot webhook payloads as the connector reads them, and what the webhook answers."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from plugin.storable import storable_text

MAX_ID = 2**53 - 1  # Chatwoot's ids are Postgres integers; anything larger is not one of its ids (and overflows ours)
NAME_CHARS = 200  # what the store keeps of a contact's or agent's name (and an agent id)
CONTACT_CHARS = 320  # an email address or phone number at most


def platform_text(limit: int) -> BeforeValidator:
    """A validator keeping what the store can of a platform's text field: NUL and lone surrogates replaced, cut to
    `limit` characters. Refusing it would lose the customer's message, which Chatwoot never resends."""

    def clean(value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a phone number sent as a number
        return storable_text(value).strip()[:limit] or None if isinstance(value, str) else value

    return BeforeValidator(clean)


PlatformId = Annotated[int, Field(ge=0, le=MAX_ID)]
Name = Annotated[str | None, platform_text(NAME_CHARS)]
Contact = Annotated[str | None, platform_text(CONTACT_CHARS)]


class ChatwootRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: PlatformId


class ChatwootSender(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: PlatformId | None = None
    name: Name = None
    email: Contact = None
    phone_number: Contact = None
    type: Annotated[str | None, platform_text(50)] = None  # contact, user (an agent), agent_bot


class ChatwootEvent(BaseModel):
    """The parts of a Chatwoot webhook payload the connector reads; everything else is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    event: str
    id: PlatformId | None = None  # the message id
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
