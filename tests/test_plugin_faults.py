"""Hostile input and faults: text a store cannot keep is a 422, a full store refuses a message clearly (and /ready
says so), a message too long for the model's context never blocks its conversation, and a message stored while
the model was down gets its reply when the model is back."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from sqlalchemy import event, func, select, text

from core.db import get_engine, session_scope
from core.models import Draft, Message
from core.settings import get_settings
from serving.gateway import ServingGateway
from tests.fixtures.service import start_widget_conversation


def stored_messages(url: str, content: str) -> int:
    with session_scope(url) as session:
        return session.execute(select(func.count()).select_from(Message).where(Message.content == content)).scalar_one()


def test_text_no_store_can_keep_is_refused_with_422_and_nothing_is_stored(plugin_service, store_url: str) -> None:
    widget, agent = plugin_service.client("widget"), plugin_service.client("agent")
    conversation = start_widget_conversation(widget)
    nul = conversation.send("hello\x00there")
    assert nul.status_code == 422 and "NUL" in nul.text
    # a lone surrogate is valid JSON (an escape) but not Unicode text: refused, and the 422 itself stays valid JSON
    surrogate = widget.post(f"/widget/conversations/{conversation.id}/messages", headers={
        **conversation.headers, "Content-Type": "application/json"}, content=b'{"content": "hi \\ud800 there"}')
    assert surrogate.status_code == 422 and "unicode" in surrogate.json()["detail"][0]["msg"]
    assert conversation.history()["messages"] == []  # neither was stored
    api = agent.post("/v1/chat/completions", json={"model": get_settings().public_model_name,
                                                    "messages": [{"role": "user", "content": "a\x00b"}]})
    assert api.status_code == 422
    odd_key = widget.post("/widget/conversations", json={"customer_name": "Zo\x00e"})
    assert odd_key.status_code == 422


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_full_store_refuses_the_message_in_so_many_words_and_ready_says_so(plugin_service, store_url: str) -> None:
    widget = plugin_service.client("widget")
    conversation = start_widget_conversation(widget, mode="assist")
    engine = get_engine(store_url)
    with engine.connect() as connection:
        connection.execute(text("VACUUM"))  # no free pages left (migrations that rebuild tables leave some)
        pages = connection.execute(text("PRAGMA page_count")).scalar()

    def full(dbapi_connection, _record) -> None:  # SQLite's own "database or disk is full" (SQLITE_FULL)
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(engine, "connect", full)
    engine.dispose()
    try:
        refused = conversation.send("x" * 6000)
        ready = plugin_service.client().get("/ready").json()
    finally:
        event.remove(engine, "connect", full)
        engine.dispose()
    assert refused.status_code == 503 and refused.headers["X-Message-Stored"] == "false"
    assert "the message was NOT stored" in refused.json()["detail"] and "full" in refused.json()["detail"]
    assert ready["database"] is False and "cannot write" in ready["detail"]
    assert plugin_service.client().get("/ready").json()["database"] is True  # room again: honest both ways
    assert conversation.history()["messages"] == []


@pytest.mark.vllm
def test_a_message_longer_than_the_context_is_answered_and_the_conversation_goes_on(
    store_url: str, serving_settings, start_service
) -> None:
    settings = get_settings()
    service = start_service(gateway=ServingGateway(settings, database_url=settings.resolved_database_url),
                            reply_max_tokens=16)
    conversation = start_widget_conversation(service.client("widget"), mode="auto")
    story = ("I bought the SuperWidget last month and it worked fine until yesterday, when it stopped charging. "
             "I tried another cable, another outlet and a restart. ")
    pasted = (story * 60)[:7600] + " Can you help me, please? My SuperWidget won't charge."
    assert 7000 < len(pasted) <= 8000  # about 1,900 tokens: more than the tiny base's 2,048 leave beside a reply
    first = conversation.send(pasted)  # vLLM takes it: the prompt is cut to the context (before: a 400, for good)
    assert first.status_code == 200, first.text
    if first.json()["awaiting_agent"]:  # the tiny base may say nothing to such a prompt: an agent answers then
        with session_scope(store_url) as session:
            handed = session.execute(select(Draft).order_by(Draft.id.desc())).scalars().first()
        assert handed.handoff_reason and "no usable reply" in handed.handoff_reason
        assert handed.id in [d["draft_id"] for d in service.client("agent").get("/reviews/queue").json()]
        assert service.client("agent").post(f"/reviews/{handed.id}/edit", json={
            "final_text": "Sorry about that! Please send it to us for a replacement."}).status_code == 200
    for message in ("is there any news?", "thanks"):  # and the conversation goes on
        answer = conversation.send(message)
        assert answer.status_code == 200, answer.text
    with session_scope(store_url) as session:
        prompts = session.execute(select(Draft.prompt).order_by(Draft.id)).scalars().all()
    assert "[…]" in prompts[0][-1]["content"] and sum(len(m["content"]) for m in prompts[0]) < len(pasted)
    assert prompts[-1][-1]["content"] == "thanks"


def assist_drafts(agent) -> list[tuple[str, str]]:
    """(mode, the customer's last words) of each assist-mode draft waiting in the agents' queue."""
    queue = agent.get("/reviews/queue").json()
    return [(item["mode"], item["context"][-1]["content"]) for item in queue if item["mode"] == "assist"]


@pytest.mark.vllm
@pytest.mark.slow
def test_messages_sent_while_vllm_is_down_are_kept_and_answered_once_it_is_back(
    store_url: str, serving_settings, start_service, vllm_server
) -> None:
    settings = get_settings()
    gateway = ServingGateway(settings, database_url=settings.resolved_database_url)
    service = start_service(gateway=gateway, reply_max_tokens=16, redraft_after_s=0, redraft_interval_s=1)
    widget = service.client("widget")
    auto, assist = start_widget_conversation(widget, mode="auto"), start_widget_conversation(widget, mode="assist")
    server = vllm_server.server
    supervision = asyncio.new_event_loop()  # the serving layer restarts a dead vLLM, as in production
    threading.Thread(target=supervision.run_forever, daemon=True).start()
    supervision.call_soon_threadsafe(server.supervise)
    try:
        os.killpg(server.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while gateway.ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        for conversation in (auto, assist):
            kept = conversation.send("Is anyone there?")
            assert kept.status_code == 503 and kept.headers["X-Message-Stored"] == "true", kept.text
            assert "poll" in kept.json()["detail"] and conversation.history()["awaiting_reply"] is True
        deadline = time.monotonic() + 600  # the supervisor restarts vLLM, the gateway re-admits it, the redrafter acts
        agent = service.client("agent")
        # one conversation after the other, in no promised order: wait for both, the reply and the queued draft
        while (auto.history()["awaiting_reply"] or not assist_drafts(agent)) and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop_supervising(), supervision).result(60)
        supervision.call_soon_threadsafe(supervision.stop)
    auto_history = auto.history()
    assert [m["role"] for m in auto_history["messages"]] == ["user", "assistant"]  # the reply the widget polls for
    assert auto_history["awaiting_reply"] is False
    assert assist_drafts(agent) == [("assist", "Is anyone there?")]  # assist: the draft waits in the agents' queue
    assert stored_messages(store_url, "Is anyone there?") == 2  # each stored once: nobody had to send it again
