"""Inside `housestyle serve`: no customer message silently misses its reply. A message stored while no model server
could answer (an outage, a restart) gets its draft once one is back: in the agents' queue (assist), or as the
reply the customer's widget is polling for (auto), or posted to Chatwoot.

Every `interval` seconds it looks at open conversations whose last turn is the customer's, older than `after`
seconds (a reply still being generated is not touched) and with no draft waiting; OpenAI-API calls are left out
(their caller got the error and retries itself).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import select

from core.db import session_scope
from core.errors import HouseStyleError
from core.models import Conversation, ConversationStatus, Draft, DraftStatus, Message, Role, utcnow
from plugin import assistant
from plugin.connectors import chatwoot

log = logging.getLogger("housestyle.redraft")

LOOK_BACK = timedelta(days=1)  # older silences are for agents to pick up, not for a late automatic reply
BATCH = 20


def unanswered(url: str, *, after_s: float) -> list[int]:
    """Open conversations (not API calls) whose last turn is a customer message with no reply and no draft waiting."""
    now = utcnow()
    with session_scope(url) as session:
        candidates = session.execute(
            select(Conversation.id).where(
                Conversation.status == ConversationStatus.OPEN, Conversation.channel != "api",
                Conversation.updated_at >= now - LOOK_BACK, Conversation.updated_at <= now - timedelta(seconds=after_s),
            ).order_by(Conversation.updated_at).limit(BATCH * 5)
        ).scalars().all()
        found = []
        for conversation_id in candidates:
            last = session.execute(select(Message.role, Message.position).where(
                Message.conversation_id == conversation_id).order_by(Message.position.desc()).limit(1)).first()
            if last is None or last.role != Role.USER:
                continue
            drafted = session.execute(select(Draft.id).where(
                Draft.conversation_id == conversation_id, Draft.position > last.position,
                Draft.status == DraftStatus.PENDING).limit(1)).first()
            if drafted is None:
                found.append(conversation_id)
            if len(found) >= BATCH:
                break
        return found


class Redrafter:
    """The loop; `redraft_once()` is one pass (tests call it directly)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.settings = app.state.settings
        self.in_flight: set[int] = set()  # conversations this service is answering right now

    async def redraft_once(self) -> int:
        gateway = self.app.state.gateway
        if gateway is None or not gateway.ready():
            return 0
        url = self.settings.resolved_database_url
        ids = await asyncio.to_thread(unanswered, url, after_s=self.settings.redraft_after_s)
        done = 0
        for conversation_id in ids:
            if conversation_id in self.in_flight:
                continue
            try:
                await self._draft(conversation_id)
                done += 1
            except HouseStyleError as exc:  # the model went away again: the next pass tries again
                log.warning("no draft yet for conversation %s: %s", conversation_id, exc)
                break
        return done

    async def _draft(self, conversation_id: int) -> None:
        state = self.app.state

        def load() -> tuple[assistant.Turn, str]:
            with session_scope(self.settings.resolved_database_url) as session:
                conversation = session.get(Conversation, conversation_id)
                return assistant.turn_of(self.settings, session, conversation), conversation.external_id

        turn, external_id = await asyncio.to_thread(load)
        self.in_flight.add(conversation_id)
        try:
            if turn.channel == chatwoot.CHANNEL:
                account, _, chatwoot_conversation = external_id.partition(":")
                await chatwoot.draft_and_post(self.app, turn, int(account), int(chatwoot_conversation))
            else:
                await assistant.generate_reply(self.settings, state.gateway, state.metrics, turn)
            log.info("drafted the reply conversation %s was waiting for", conversation_id)
        finally:
            self.in_flight.discard(conversation_id)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.redraft_interval_s)
            try:
                await self.redraft_once()
            except Exception:  # the loop must outlive one bad pass
                log.exception("redraft pass failed; it keeps running")
