"""Where each recorded turn lands in the transcript: the slot rules the importer copies from the recorder."""

from __future__ import annotations

import pytest
from sqlmodel import select

from collector import recorder
from core import db
from core.models import Draft, Message, ReplyMode, Role


def test_turns_drafts_and_unsent_replies_take_the_slots_agents_expect(store_url: str) -> None:
    with db.session_scope(store_url) as session:
        conversation = recorder.start_conversation(session)
        recorder.add_messages(session, conversation.id, [(Role.USER, "Hi."), (Role.USER, "My NanoCharger is hot.")])
        spam_answer = recorder.record_draft(session, conversation.id, "Thanks for your message!")
        recorder.record_review(session, spam_answer.id, "rejected", agent_id="alice")  # nothing sent
        recorder.add_message(session, conversation.id, Role.USER, "Hello??")
        pending = recorder.record_draft(session, conversation.id, "Let it cool down first.")
        # a turn added straight to the session, not yet flushed, still counts
        session.add(Message(conversation_id=conversation.id, position=pending.position + 1, role=Role.USER, content="Anyone?"))
        recorder.record_draft(session, conversation.id, "Sorry for the wait!")
        recorder.record_review(session, pending.id, "approved", agent_id="alice")

    with db.session_scope(store_url) as session:
        transcript = [(m.position, m.content) for m in recorder.transcript(session, conversation.id)]
        drafts = [(d.position, d.content) for d in session.exec(select(Draft).order_by(Draft.id)).all()]
    # a draft answers the slot after the last turn or pending draft; a rejected, unsent one gives its slot back
    assert drafts == [(2, "Thanks for your message!"), (3, "Let it cool down first."), (5, "Sorry for the wait!")]
    assert transcript == [(0, "Hi."), (1, "My NanoCharger is hot."), (2, "Hello??"), (3, "Let it cool down first."), (4, "Anyone?")]


def stored_rows(session, conversation_id: int) -> dict:
    """A conversation's rows as the store holds them, without ids and times."""
    conversation = recorder.get_conversation(session, conversation_id)
    return {
        "conversation": (conversation.channel, conversation.mode, conversation.status, conversation.source,
                          conversation.brand_id, conversation.customer_ref, conversation.external_id),
        "messages": [(m.position, m.role, m.content, m.draft_id is not None)
                     for m in recorder.transcript(session, conversation_id)],
        "drafts": [(d.position, d.content, d.status, d.prompt, d.adapter_version, d.latency_ms, d.handoff_reason)
                   for d in session.exec(select(Draft).where(Draft.conversation_id == conversation_id)).all()],
    }


@pytest.mark.parametrize(
    ("turns", "reply"),
    [
        ([(Role.USER, "My SuperWidget is dead.")], "Have you tried another outlet?"),
        ([(Role.SYSTEM, "Be brief."), (Role.USER, "Hi"), (Role.ASSISTANT, "Hello!"), (Role.USER, "Refund?")], "Yes."),
        ([(Role.USER, "Anyone there?")], None),  # the model gave nothing: the caller's words alone
        ([(Role.USER, "Anyone there?")], "   "),
    ],
    ids=["one-question", "a-whole-api-transcript", "no-reply", "blank-reply"],
)
def test_an_api_call_recorded_in_one_go_lands_as_the_step_by_step_recorder_puts_it(
    store_url: str, turns: list, reply: str | None
) -> None:
    prompt = [{"role": "user", "content": turns[-1][1]}]
    with db.session_scope(store_url) as session:
        stepwise = recorder.start_conversation(session, external_id="call-1", channel="api", customer_ref="u-7",
                                               mode=ReplyMode.AUTO, source="api")
        recorder.add_messages(session, stepwise.id, turns)
        if reply and reply.strip():
            recorder.record_draft(session, stepwise.id, reply, prompt=prompt, adapter_version="v0001-abcdef12",
                                  latency_ms=12.5)
        draft_id = recorder.record_exchange(session, turns=turns, reply=reply, prompt=prompt,
                                            adapter_version="v0001-abcdef12", latency_ms=12.5, external_id="call-2",
                                            customer_ref="u-7")
        at_once = recorder.find_conversation(session, "api", "call-2")
    with db.session_scope(store_url) as session:
        expected, got = stored_rows(session, stepwise.id), stored_rows(session, at_once.id)
    assert got["conversation"][:-1] == expected["conversation"][:-1]
    assert (got["messages"], got["drafts"]) == (expected["messages"], expected["drafts"])
    assert (draft_id is None) == (not expected["drafts"])
