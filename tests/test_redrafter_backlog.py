"""Issue 28 item 1: the redrafter has no silent cap. It pages through every candidate (a message stored during an
outage is answered however many conversations were active that day), closes conversations idle for
HOUSESTYLE_CONVERSATION_IDLE_CLOSE_MINUTES (they stop being candidates), and reports its backlog as a gauge."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import update

from collector import recorder
from core.db import session_scope
from core.errors import ConflictError
from core.models import Conversation, ConversationStatus, Role, utcnow
from core.settings import get_settings
from plugin import redrafter
from plugin.connectors import chatwoot
from plugin.connectors.chatwoot_payloads import ChatwootEvent
from plugin.metrics import ServiceMetrics

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=utcnow().tzinfo)


@pytest.mark.parametrize(
    ("idle_for", "setting", "idle"),
    [
        (timedelta(minutes=59), 60, False),
        (timedelta(minutes=60), 60, True),  # the boundary counts as idle, as close_idle's `<=` does
        (timedelta(minutes=61), 60, True),
        (timedelta(0), 60, False),
        (timedelta(days=365), None, False),  # unset: never closed
        (timedelta(days=365), 0, False),  # HOUSESTYLE_CONVERSATION_IDLE_CLOSE_MINUTES=0: never closed
        (timedelta(minutes=2), 1.5, True),  # fractions of a minute
        (timedelta(seconds=89), 1.5, False),
    ],
)
def test_idleness_is_decided_by_one_pure_rule(idle_for: timedelta, setting: float | None, idle: bool) -> None:
    """Catches `<=` turned into `<` (the boundary row), minutes read as hours or seconds, and 0 or None read as
    "close at once" instead of "never"."""
    assert redrafter.is_idle(NOW - idle_for, NOW, setting) is idle


def conversation(url: str, *, age: timedelta, last: Role | None = Role.USER, channel: str = "web") -> int:
    """A live conversation last touched `age` ago whose last turn is `last` (None: no turn)."""
    with session_scope(url) as session:
        conversation_id = recorder.start_conversation(session, channel=channel).id
        if last is not None:
            recorder.add_message(session, conversation_id, last, "hello" if last == Role.USER else "hi there")
        session.execute(update(Conversation).where(Conversation.id == conversation_id)
                        .values(updated_at=utcnow() - age))
    return conversation_id


def status_of(url: str, conversation_id: int) -> ConversationStatus:
    with session_scope(url) as session:
        return ConversationStatus(session.get(Conversation, conversation_id).status)


def test_close_idle_closes_only_live_conversations_quiet_that_long(store_url: str) -> None:
    """Catches a dropped `updated_at <= cutoff` (every open conversation closed) and a dropped `channel != "api"`."""
    quiet = conversation(store_url, age=timedelta(hours=2))
    recent = conversation(store_url, age=timedelta(minutes=5))
    api_call = conversation(store_url, age=timedelta(hours=2), channel="api")
    assert redrafter.close_idle(store_url, idle_close_minutes=None) == 0
    assert status_of(store_url, quiet) == ConversationStatus.OPEN
    assert redrafter.close_idle(store_url, idle_close_minutes=60) == 1
    assert [status_of(store_url, c) for c in (quiet, recent, api_call)] == [
        ConversationStatus.CLOSED, ConversationStatus.OPEN, ConversationStatus.OPEN]


def test_the_unanswered_message_behind_many_answered_conversations_is_found(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reproduction, scaled down: more answered conversations than one page (the old code read a fixed 100, oldest
    first), then the one message an outage left unanswered, the newest of the day; a conversation with a draft
    waiting is not one, one whose customer wrote again after a reply is. Catches a pager that stops after its first
    page (`following` always None), a dropped pending-draft or later-message condition."""
    monkeypatch.setattr(redrafter, "PAGE", 3)
    answered = [conversation(store_url, age=timedelta(hours=5, minutes=i), last=Role.ASSISTANT) for i in range(10)]
    no_turn = conversation(store_url, age=timedelta(hours=4), last=None)
    drafted = conversation(store_url, age=timedelta(hours=3))
    asked_again = conversation(store_url, age=timedelta(hours=2), last=Role.ASSISTANT)
    with session_scope(store_url) as session:
        recorder.record_draft(session, drafted, "a draft waits for an agent")
        recorder.add_message(session, asked_again, Role.USER, "and one more thing")
        session.execute(update(Conversation).where(Conversation.id.in_([drafted, asked_again]))
                        .values(updated_at=utcnow() - timedelta(hours=2)))
    waiting = conversation(store_url, age=timedelta(minutes=10))
    too_old = conversation(store_url, age=timedelta(days=2))  # past LOOK_BACK: the agents' to pick up
    found = redrafter.unanswered(store_url, after_s=60)
    assert found == [asked_again, waiting]
    assert not {no_turn, too_old, drafted, *answered} & set(found)


def test_a_pass_drafts_every_page_and_reports_the_backlog(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """While no model server is ready a pass drafts nothing but counts every waiting conversation (all pages); once
    one is back it drafts them all and the gauge drops to 0; a conversation idle past the setting is closed first
    and never drafted. Catches a backlog of `waiting` instead of `waiting - done`, counting only the first page,
    and closing after (instead of before) reading candidates."""
    monkeypatch.setattr(redrafter, "PAGE", 2)
    waiting = [conversation(store_url, age=timedelta(minutes=10 + i)) for i in range(5)]
    idle = conversation(store_url, age=timedelta(hours=3))
    for i in range(4):
        conversation(store_url, age=timedelta(minutes=20 + i), last=Role.ASSISTANT)

    settings = get_settings().model_copy(update={"conversation_idle_close_minutes": 120, "redraft_after_s": 60})
    gateway = SimpleNamespace(up=False)
    gateway.ready = lambda: gateway.up
    metrics = ServiceMetrics(store_url)
    app = SimpleNamespace(state=SimpleNamespace(settings=settings, gateway=gateway, metrics=metrics))
    drafted: list[int] = []

    async def draft(self, conversation_id: int) -> None:
        drafted.append(conversation_id)
        with session_scope(store_url) as session:
            recorder.add_message(session, conversation_id, Role.ASSISTANT, "answered")

    monkeypatch.setattr(redrafter.Redrafter, "_draft", draft)
    loop = redrafter.Redrafter(app)

    def backlog() -> float:
        return metrics.registry.get_sample_value("housestyle_redraft_backlog")

    assert asyncio.run(loop.redraft_once()) == 0
    assert backlog() == len(waiting) and drafted == []
    assert status_of(store_url, idle) == ConversationStatus.CLOSED

    gateway.up = True
    assert asyncio.run(loop.redraft_once()) == len(waiting)
    assert sorted(drafted) == sorted(waiting) and backlog() == 0
    assert asyncio.run(loop.redraft_once()) == 0 and backlog() == 0


def test_a_chatwoot_conversation_closed_while_idle_is_reopened_by_its_next_message(store_url: str) -> None:
    """Idle-closing must not make Chatwoot's next message a refused turn (409, lost). Catches the reopen removed."""
    event = ChatwootEvent(event="message_created", content="still there?", message_type="incoming",
                          conversation={"id": 42}, account={"id": 1}, sender={"id": 7, "type": "contact"})
    settings = get_settings()
    chatwoot.store_customer_message(settings, event)
    with session_scope(store_url) as session:
        conversation_id = recorder.find_conversation(session, "chatwoot", "1:42").id
        session.execute(update(Conversation).where(Conversation.id == conversation_id)
                        .values(updated_at=utcnow() - timedelta(days=3)))
    assert redrafter.close_idle(store_url, idle_close_minutes=60) == 1
    chatwoot.store_customer_message(settings, event)
    assert status_of(store_url, conversation_id) == ConversationStatus.OPEN
    with session_scope(store_url) as session:
        assert [m.content for m in recorder.transcript(session, conversation_id)] == ["still there?"] * 2


def test_a_widget_customer_back_after_an_idle_close_writes_in_the_same_conversation(store_url: str) -> None:
    """The widget's next message reopens an idle-closed conversation instead of a 409 "closed; start a new one".
    Catches the reopen removed from `assistant.receive_customer_message`, or reopening what was not live."""
    from plugin import assistant

    settings = get_settings()
    quiet = conversation(store_url, age=timedelta(hours=2))
    assert redrafter.close_idle(store_url, idle_close_minutes=60) == 1
    assistant.receive_customer_message(settings, quiet, "are you still there?")
    assert status_of(store_url, quiet) == ConversationStatus.OPEN
    with session_scope(store_url) as session:
        assert [m.content for m in recorder.transcript(session, quiet)] == ["hello", "are you still there?"]
        imported = recorder.start_conversation(session, channel="web", source="import").id
        session.execute(update(Conversation).where(Conversation.id == imported)
                        .values(status=ConversationStatus.CLOSED))
    with pytest.raises(ConflictError, match="closed"):  # imported history is not a live conversation to reopen
        assistant.receive_customer_message(settings, imported, "hello?")
