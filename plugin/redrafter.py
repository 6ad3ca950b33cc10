"""Inside `housestyle serve`: no customer message silently misses its reply. A message stored while no model server
could answer (an outage, a restart) gets its draft once one is back: in the agents' queue (assist), or as the
reply the customer's widget is polling for (auto), or posted to Chatwoot.

Every `interval` seconds it looks at open conversations whose last turn is the customer's, older than `after`
seconds (a reply still being generated is not touched) and with no draft waiting; OpenAI-API calls are left out
(their caller got the error and retries itself). A pass pages through every candidate (no silent cap: issue 28
item 1), first closing conversations idle for HOUSESTYLE_CONVERSATION_IDLE_CLOSE_MINUTES, and sets the
`housestyle_redraft_backlog` gauge to the conversations still waiting for their reply.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from fastapi import FastAPI
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import aliased

from core.db import session_scope
from core.errors import HouseStyleError
from core.models import Conversation, ConversationStatus, Draft, DraftStatus, Message, Role, utcnow
from plugin import assistant
from plugin.connectors import chatwoot

log = logging.getLogger("housestyle.redraft")

LOOK_BACK = timedelta(days=1)  # older silences are for agents to pick up, not for a late automatic reply
PAGE = 100  # candidate conversations read per query: a pass pages through all of them, never stopping at a cap


def is_idle(updated_at: datetime, now: datetime, idle_close_minutes: float | None) -> bool:
    """Whether a conversation last touched at `updated_at` has gone quiet long enough to be closed; the boundary
    counts as idle (`close_idle` asks the store the same question: `updated_at <= idle_cutoff(...)`)."""
    cutoff = idle_cutoff(now, idle_close_minutes)
    return cutoff is not None and updated_at <= cutoff


def idle_cutoff(now: datetime, idle_close_minutes: float | None) -> datetime | None:
    """Conversations untouched since this time are idle; None: HOUSESTYLE_CONVERSATION_IDLE_CLOSE_MINUTES is 0."""
    if idle_close_minutes is None or idle_close_minutes <= 0:
        return None
    return now - timedelta(minutes=idle_close_minutes)


def close_idle(url: str, *, idle_close_minutes: float | None, now: datetime | None = None) -> int:
    """Close open live conversations (not API calls) idle that long: they stop being redraft candidates. A turn stored
    meanwhile moves `updated_at` on, so the one UPDATE never closes a conversation that has just spoken."""
    cutoff = idle_cutoff(now or utcnow(), idle_close_minutes)
    if cutoff is None:
        return 0
    with session_scope(url) as session:
        result = session.execute(
            update(Conversation)
            .where(Conversation.status == ConversationStatus.OPEN, Conversation.channel != "api",
                   Conversation.updated_at <= cutoff)
            .values(status=ConversationStatus.CLOSED)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount or 0


Key = tuple[datetime, int]


def unanswered_page(
    url: str, *, now: datetime, after_s: float, after: Key | None = None, page: int = PAGE
) -> tuple[list[int], Key | None]:
    """One page of open conversations (not API calls) whose last turn is a customer message with no reply and no
    draft waiting, in (updated_at, id) order after `after`; the key to ask for the next page, None after the last.
    The store does the filtering (one query a page), so a busy day's answered conversations cost no round trips."""
    last, later = aliased(Message), aliased(Message)
    waiting = select(last.id).where(
        last.conversation_id == Conversation.id, last.role == Role.USER,
        ~select(later.id).where(later.conversation_id == last.conversation_id, later.position > last.position).exists(),
        ~select(Draft.id).where(Draft.conversation_id == last.conversation_id, Draft.position > last.position,
                                Draft.status == DraftStatus.PENDING).exists(),
    ).exists()
    query = select(Conversation.id, Conversation.updated_at).where(
        Conversation.status == ConversationStatus.OPEN, Conversation.channel != "api",
        Conversation.updated_at >= now - LOOK_BACK, Conversation.updated_at <= now - timedelta(seconds=after_s),
        waiting,
    )
    if after is not None:
        query = query.where(or_(Conversation.updated_at > after[0],
                                and_(Conversation.updated_at == after[0], Conversation.id > after[1])))
    with session_scope(url) as session:
        rows = session.execute(query.order_by(Conversation.updated_at, Conversation.id).limit(page)).all()
    following = (rows[-1].updated_at, rows[-1].id) if len(rows) == page else None
    return [row.id for row in rows], following


def unanswered(url: str, *, after_s: float, now: datetime | None = None) -> list[int]:
    """Every conversation waiting for a redraft, page by page (tests and the backlog count use it)."""
    now = now or utcnow()
    found: list[int] = []
    key: Key | None = None
    while True:
        ids, key = unanswered_page(url, now=now, after_s=after_s, after=key, page=PAGE)
        found.extend(ids)
        if key is None:
            return found


class Redrafter:
    """The loop; `redraft_once()` is one pass (tests call it directly)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.settings = app.state.settings
        self.in_flight: set[int] = set()  # conversations this service is answering right now

    async def redraft_once(self) -> int:
        """Close idle conversations, then page through every unanswered one: drafted while a model server answers,
        counted either way (the backlog gauge: conversations still waiting for their reply after this pass)."""
        gateway = self.app.state.gateway
        ready = gateway is not None and gateway.ready()
        url = self.settings.resolved_database_url
        now = utcnow()
        idle_minutes = self.settings.conversation_idle_close_minutes
        closed = await asyncio.to_thread(close_idle, url, idle_close_minutes=idle_minutes, now=now)
        if closed:
            log.info("closed %s conversations idle for %s minutes", closed, idle_minutes)
        waiting = done = 0
        key: Key | None = None
        while True:
            ids, key = await asyncio.to_thread(unanswered_page, url, now=now, after_s=self.settings.redraft_after_s,
                                               after=key, page=PAGE)
            waiting += len(ids)
            for conversation_id in ids if ready else ():
                if conversation_id in self.in_flight:
                    continue
                try:
                    await self._draft(conversation_id)
                    done += 1
                except HouseStyleError as exc:  # the model went away again: the next pass tries again
                    log.warning("no draft yet for conversation %s: %s", conversation_id, exc)
                    ready = False
                    break
            self._backlog(waiting - done)
            if key is None:
                return done

    def _backlog(self, count: int) -> None:
        metrics = getattr(self.app.state, "metrics", None)
        if metrics is not None:
            metrics.redraft_backlog.set(count)

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
