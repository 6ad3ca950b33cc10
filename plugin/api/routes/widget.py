"""The chat widget: start a conversation, send a customer message and get the reply streamed, read the history."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from sqlmodel import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from collector import recorder, review_queue
from core.db import session_scope
from core.errors import HouseStyleError, InputError, NotFoundError
from core.models import ApiKeyRole, Conversation, ReplyMode, Role
from core.settings import Settings
from plugin import assistant
from plugin.api.brand_scope import ChosenBrand
from plugin.api.deps import Caller, ReaderCaller, SettingsDep, StoreDep, WidgetCaller, limit_conversation
from plugin.api.schemas import (
    CONVERSATION_TOKEN_HEADER,
    ConversationOut,
    ConversationStart,
    CustomerMessage,
    History,
    MessageOut,
    ReplyOut,
)
from plugin.reply.errors import ModelServersUnavailable, ReplyDelayed
from plugin.reply.turns import Reply, Turn
from serving.errors import NoHealthyReplicaError

router = APIRouter(prefix="/widget", tags=["widget"])
log = logging.getLogger("housestyle.widget")

GENERATION_ERRORS = {
    503: {"description": "X-Message-Stored: true: no model server can answer now; the message is kept and the reply "
                         "follows (poll the conversation). X-Message-Stored: false: the store could not keep the "
                         "message; send it again after Retry-After."}
}


ConversationToken = Annotated[str | None, Header(
    alias=CONVERSATION_TOKEN_HEADER, description="The secret from the answer that started the conversation "
    "(widget keys must send it; agent and admin keys need not).")]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def conversation_for(session: Session, public_id: str, caller: Caller, token: str | None) -> Conversation:
    """The conversation a widget call names: a widget key reaches only one it started, by its secret.

    Any other (an imported one, a Chatwoot one, one started elsewhere, a wrong or missing secret) answers the same
    404 as a conversation that does not exist, so ids cannot be probed."""
    missing = NotFoundError(f"conversation {public_id} does not exist for this widget; start one with "
                            f"POST /widget/conversations and send its conversation_token as {CONVERSATION_TOKEN_HEADER}")
    rows = [conversation for conversation in recorder.conversations_named(session, public_id)
            if caller.may_act_on(conversation.brand_id)]  # another brand's conversation: as if it did not exist
    if caller.role != ApiKeyRole.WIDGET:
        if not rows:
            raise missing
        return rows[0]
    expected = token_hash(token or "")
    for conversation in rows:
        if conversation.access_token_hash and hmac.compare_digest(conversation.access_token_hash, expected):
            return conversation
    raise missing


def _conversation_out(conversation: Conversation, token: str | None = None) -> ConversationOut:
    return ConversationOut(
        conversation_id=conversation.external_id,
        conversation_token=token,
        channel=conversation.channel,
        mode=conversation.mode,
        status=conversation.status,
        created_at=conversation.created_at,
    )


def chosen_mode(settings: Settings, role: ApiKeyRole, channel: str, asked: ReplyMode | None) -> ReplyMode:
    """The mode a new conversation gets: an admin's choice, else the channel's configured mode; a customer (widget
    key) may pick only a channel in HOUSESTYLE_WIDGET_CHANNELS and a mode in HOUSESTYLE_WIDGET_MODES."""
    configured = assistant.mode_for_channel(settings, channel)
    if role != ApiKeyRole.WIDGET:
        return asked or configured
    if channel not in settings.widget_channels:
        raise InputError(f"channel '{channel}' is not one a widget may use; the operator lists them in "
                         f"HOUSESTYLE_WIDGET_CHANNELS ({', '.join(settings.widget_channels) or 'none'})")
    if asked is not None and asked != configured and asked.value not in settings.widget_modes:
        raise InputError(f"mode '{asked.value}' is not one a customer may choose here; the operator sets it "
                         "(HOUSESTYLE_CHANNEL_MODES, HOUSESTYLE_WIDGET_MODES): leave mode out")
    return asked or configured


@router.post("/conversations", response_model=ConversationOut, status_code=201, summary="Start a conversation")
def start_conversation(
    body: ConversationStart, caller: WidgetCaller, brand: ChosenBrand, store: StoreDep, settings: SettingsDep
) -> ConversationOut:
    """The answer carries the conversation's secret once: keep it (the widget keeps it in the tab's sessionStorage).
    The conversation belongs to the widget key's brand; its channel and mode are the operator's to allow."""
    mode = chosen_mode(settings, caller.role, body.channel, body.mode)
    token = secrets.token_urlsafe(24)
    with store.session() as session:
        conversation = recorder.start_conversation(
            session, channel=body.channel, customer_ref=body.customer_ref, mode=mode,
            known_values={"name": body.customer_name, "email": body.customer_email},
            access_token_hash=token_hash(token), brand_id=brand.id,
        )
    return _conversation_out(conversation, token)


@router.get(
    "/conversations/{conversation_id}", response_model=History, summary="The conversation as the customer sees it"
)
def conversation_history(
    conversation_id: str, caller: ReaderCaller, store: StoreDep, request: Request, token: ConversationToken = None
) -> History:
    """Poll this in assist mode: `agent_activity` says whether an agent has the draft or is typing, and the agent's
    approved or edited reply appears in `messages` once reviewed."""
    limit_conversation(request, caller, conversation_id)
    with store.session() as session:
        conversation = conversation_for(session, conversation_id, caller, token)
        pending = recorder.pending_drafts_of(session, conversation.id)
        messages = recorder.transcript(session, conversation.id)
    waiting = [draft for draft in pending if review_queue.awaits_agent(draft, conversation.mode)]
    awaiting = bool(waiting)
    return History(
        conversation_id=conversation.external_id,
        mode=conversation.mode,
        status=conversation.status,
        messages=[MessageOut.model_validate(m, from_attributes=True) for m in messages],
        awaiting_agent=awaiting,
        awaiting_reply=bool(messages) and messages[-1].role == Role.USER,
        agent_activity=review_queue.conversation_activity(waiting) if awaiting else None,
    )


@router.post(
    "/conversations/{conversation_id}/messages",
    response_model=ReplyOut,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or events when stream is true"},
        **GENERATION_ERRORS,
    },
    summary="Send the customer's message and get the assistant's reply",
)
async def send_customer_message(
    conversation_id: str, body: CustomerMessage, caller: WidgetCaller, request: Request,
    token: ConversationToken = None,
) -> ReplyOut | EventSourceResponse:
    """The message is stored first. auto mode: the reply streams as `delta` events, then one `reply` event.
    assist mode: the draft goes to the agents' queue and a `awaiting_agent` event ends the stream; poll the history
    for the agent's final text."""
    limit_conversation(request, caller, conversation_id)
    state = request.app.state
    settings = state.settings

    def find_and_store() -> Turn:
        with session_scope(settings.resolved_database_url) as session:
            internal_id = conversation_for(session, conversation_id, caller, token).id
        return assistant.receive_customer_message(settings, internal_id, body.content)

    turn = await run_in_threadpool(find_and_store)
    try:
        if not body.stream:
            reply = await assistant.generate_reply(settings, state.gateway, state.metrics, turn)
            return _reply_out(turn, reply)
        stream = await assistant.open_reply_stream(settings, state.gateway, state.metrics, turn)
    except (NoHealthyReplicaError, ModelServersUnavailable) as outage:
        raise ReplyDelayed(f"{outage}; the message is kept and the reply follows once a model server answers: poll "
                           f"GET /widget/conversations/{conversation_id} rather than sending it again",
                           getattr(outage, "retry_after_s", settings.retry_after_seconds)) from None
    return EventSourceResponse(_reply_events(turn, stream), sep="\n")


def _reply_out(turn: Turn, reply: Reply) -> ReplyOut:
    draft = reply.draft
    waits = review_queue.awaits_agent(draft, turn.mode)
    message = None
    if not waits:  # auto mode: the reply went out
        message = MessageOut(
            position=draft.position, role="assistant", content=draft.content, created_at=draft.created_at
        )
    return ReplyOut(reply=message, awaiting_agent=waits, adapter_version=reply.version)


async def _reply_events(turn: Turn, stream: assistant.ReplyStream) -> AsyncIterator[ServerSentEvent]:
    try:
        async for item in stream:
            if isinstance(item, Reply):
                out = _reply_out(turn, item)
                yield ServerSentEvent(out.model_dump_json(), event="awaiting_agent" if out.awaiting_agent else "reply")
            elif item.text and turn.mode == ReplyMode.AUTO and turn.handoff is None:  # assist, handed over: no draft
                yield ServerSentEvent(json.dumps({"text": item.text}), event="delta")
    except Exception as exc:  # the status line is sent already: report the failure as an event, never a traceback
        log.exception("reply stream failed")
        detail = str(exc) if isinstance(exc, HouseStyleError) else "the reply failed; try again"
        yield ServerSentEvent(json.dumps({"detail": detail}), event="error")
    finally:
        await stream.aclose()
