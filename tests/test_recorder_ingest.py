"""Where each recorded turn lands in the transcript: the slot rules the importer copies from the recorder."""

from __future__ import annotations

from sqlmodel import select

from collector import db, recorder
from collector.models import Draft, Message, Role


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
