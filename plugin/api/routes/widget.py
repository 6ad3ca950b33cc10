"""The chat widget: start a conversation, send a customer message and get the reply streamed, read the history."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlmodel import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from collector import recorder
from collector.db import session_scope
from collector.errors import HouseStyleError, NotFoundError
from collector.models import Conversation, Draft, DraftStatus, ReplyMode
from plugin import assistant
from plugin.api.deps import ReaderCaller, SettingsDep, StoreDep, WidgetCaller
from plugin.api.schemas import ConversationOut, ConversationStart, CustomerMessage, History, MessageOut, ReplyOut

router = APIRouter(prefix="/widget", tags=["widget"])
log = logging.getLogger("housestyle.widget")

GENERATION_ERRORS = {
    503: {"description": "No model server can answer now; the customer's message is stored. Retry after Retry-After."}
}


def conversation_by_public_id(session: Session, public_id: str) -> Conversation:
    """Widget calls name conversations by their random external id, so one customer cannot read another's."""
    conversation = session.execute(select(Conversation).where(Conversation.external_id == public_id)).scalars().first()
    if conversation is None:
        raise NotFoundError(f"conversation {public_id} does not exist; start one with POST /widget/conversations")
    return conversation


def _conversation_out(conversation: Conversation) -> ConversationOut:
    return ConversationOut(
        conversation_id=conversation.external_id,
        channel=conversation.channel,
        mode=conversation.mode,
        status=conversation.status,
        created_at=conversation.created_at,
    )


@router.post("/conversations", response_model=ConversationOut, status_code=201, summary="Start a conversation")
def start_conversation(
    body: ConversationStart, _: WidgetCaller, store: StoreDep, settings: SettingsDep
) -> ConversationOut:
    mode = body.mode or assistant.mode_for_channel(settings, body.channel)
    with store.session() as session:
        conversation = recorder.start_conversation(
            session, channel=body.channel, customer_ref=body.customer_ref, mode=mode,
            known_values={"name": body.customer_name, "email": body.customer_email},
        )
    return _conversation_out(conversation)


@router.get(
    "/conversations/{conversation_id}", response_model=History, summary="The conversation as the customer sees it"
)
def conversation_history(conversation_id: str, _: ReaderCaller, store: StoreDep) -> History:
    """Poll this in assist mode: `agent_activity` says whether an agent has the draft or is typing, and the agent's
    approved or edited reply appears in `messages` once reviewed."""
    with store.session() as session:
        conversation = conversation_by_public_id(session, conversation_id)
        pending = session.execute(
            select(Draft).where(Draft.conversation_id == conversation.id, Draft.status == DraftStatus.PENDING)
        ).scalars().all()
        messages = recorder.transcript(session, conversation.id)
    awaiting = bool(pending) and conversation.mode == ReplyMode.ASSIST
    return History(
        conversation_id=conversation.external_id,
        mode=conversation.mode,
        status=conversation.status,
        messages=[MessageOut.model_validate(m, from_attributes=True) for m in messages],
        awaiting_agent=awaiting,
        agent_activity=recorder.conversation_activity(pending) if awaiting else None,
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
    conversation_id: str, body: CustomerMessage, _: WidgetCaller, request: Request
) -> ReplyOut | EventSourceResponse:
    """The message is stored first. auto mode: the reply streams as `delta` events, then one `reply` event.
    assist mode: the draft goes to the agents' queue and a `awaiting_agent` event ends the stream; poll the history
    for the agent's final text."""
    state = request.app.state
    settings = state.settings

    def find_and_store() -> assistant.Turn:
        with session_scope(settings.resolved_database_url) as session:
            internal_id = conversation_by_public_id(session, conversation_id).id
        return assistant.receive_customer_message(settings, internal_id, body.content)

    turn = await run_in_threadpool(find_and_store)
    if not body.stream:
        reply = await assistant.generate_reply(settings, state.gateway, state.metrics, turn)
        return _reply_out(turn, reply)
    started = time.perf_counter()
    route, chunks = await assistant.open_reply_stream(settings, state.gateway, turn)
    return EventSourceResponse(_reply_events(request, turn, route, chunks, started), sep="\n")


def _reply_out(turn: assistant.Turn, reply: assistant.Reply) -> ReplyOut:
    draft = reply.draft
    message = None
    if turn.mode == ReplyMode.AUTO:
        message = MessageOut(
            position=draft.position, role="assistant", content=draft.content, created_at=draft.created_at
        )
    return ReplyOut(reply=message, awaiting_agent=turn.mode == ReplyMode.ASSIST, adapter_version=reply.version)


async def _reply_events(
    request: Request, turn: assistant.Turn, route, chunks, started: float
) -> AsyncIterator[ServerSentEvent]:
    state = request.app.state
    try:
        async for item in assistant.stream_reply(state.settings, state.metrics, turn, route, chunks, started):
            if isinstance(item, assistant.Reply):
                out = _reply_out(turn, item)
                yield ServerSentEvent(out.model_dump_json(), event="awaiting_agent" if out.awaiting_agent else "reply")
            elif turn.mode == ReplyMode.AUTO:  # in assist mode the customer never sees the draft
                yield ServerSentEvent(json.dumps({"text": item}), event="delta")
    except Exception as exc:  # the status line is sent already: report the failure as an event, never a traceback
        log.exception("reply stream failed")
        detail = str(exc) if isinstance(exc, HouseStyleError) else "the reply failed; try again"
        yield ServerSentEvent(json.dumps({"detail": detail}), event="error")
    finally:
        await chunks.aclose()
