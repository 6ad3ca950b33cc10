"""Chatwoot agent-bot webhook: customers' messages become drafts, agents' replies become reviews."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from plugin.connectors import chatwoot
from plugin.connectors.chatwoot import BOT_SENDER_TYPES
from plugin.connectors.chatwoot_payloads import ChatwootEvent, EventOutcome

router = APIRouter(prefix="/chatwoot", tags=["chatwoot"])


async def check_webhook_token(
    request: Request, token: Annotated[str | None, Query(description="The shared webhook secret.")] = None
) -> None:
    """Chatwoot cannot sign agent-bot webhooks, so its URL carries a shared secret: ...?token=SECRET."""
    expected = request.app.state.settings.chatwoot_webhook_token
    if not expected:
        raise HTTPException(
            401, detail="set HOUSESTYLE_CHATWOOT_WEBHOOK_TOKEN and add ?token=<it> to the bot's webhook URL"
        )
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(
            401, detail="wrong or missing ?token= on the webhook URL; it must equal HOUSESTYLE_CHATWOOT_WEBHOOK_TOKEN"
        )


@router.post(
    "/webhook",
    response_model=EventOutcome,
    dependencies=[Depends(check_webhook_token)],
    summary="Chatwoot agent-bot webhook (token in the URL)",
)
async def chatwoot_webhook(event: ChatwootEvent, request: Request, background: BackgroundTasks) -> EventOutcome:
    settings = request.app.state.settings
    if event.event != "message_created" or event.conversation is None or event.account is None:
        return EventOutcome(action="ignored", detail=f"event {event.event} needs no action")
    sender_type = (event.sender.type or "").lower() if event.sender else ""
    client = getattr(request.app.state, "chatwoot_client", None)
    if sender_type in BOT_SENDER_TYPES or (client is not None and event.id in client.posted_ids):
        return EventOutcome(action="ignored", detail="the bot's own message")
    if not (event.content or "").strip():
        return EventOutcome(action="ignored", detail="no text")
    kind = chatwoot.message_type(event)
    if kind == "incoming" and not event.private:
        turn = await run_in_threadpool(chatwoot.store_customer_message, settings, event)
        background.add_task(chatwoot.draft_and_post, request.app, turn, event.account.id, event.conversation.id)
        return EventOutcome(action="draft-requested", detail=f"mode {turn.mode.value}")
    if kind == "outgoing" and not event.private:
        return await run_in_threadpool(chatwoot.record_agent_message, settings, request.app.state.metrics, event)
    return EventOutcome(action="ignored", detail="private notes and activity messages are not conversation turns")
