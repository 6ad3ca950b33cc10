"""The conversation store: schema upgrades, and recording a support exchange on SQLite and Postgres."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlmodel import select

from collector import recorder, review_queue
from core import db
from core.errors import ConflictError, InputError, StoreError
from core.models import Draft, DraftStatus, Message, ReplyMode, Review, ReviewDecision, Role


def test_upgrade_creates_every_table_and_is_idempotent(store_url: str) -> None:
    db.upgrade(store_url)
    db.upgrade(store_url)
    assert db.current_revision(store_url) == db.head_revision()
    assert {"conversation", "message", "draft", "review", "adapterversion", "trainingrun", "adapterevent"} <= set(
        db.table_names(store_url)
    )


def test_agent_edit_keeps_draft_and_final_text(store_url: str) -> None:
    with db.session_scope(store_url) as session:
        conversation = recorder.start_conversation(session, channel="web", mode=ReplyMode.ASSIST)
        recorder.add_message(session, conversation.id, Role.USER, "My SuperWidget is dead.")
        draft = recorder.record_draft(session, conversation.id, "Try charging it.", adapter_version="v1", latency_ms=42)
        recorder.record_review(
            session,
            draft.id,
            ReviewDecision.EDITED,
            agent_id="alice",
            final_text="I'm sorry to hear you're having trouble with your SuperWidget!",
        )
    with db.session_scope(store_url) as session:
        stored_draft = session.get(Draft, draft.id)
        review = session.exec(select(Review).where(Review.draft_id == draft.id)).one()
        messages = recorder.transcript(session, conversation.id)
    assert stored_draft.content == "Try charging it." and stored_draft.status == DraftStatus.REVIEWED
    assert review.decision == ReviewDecision.EDITED and 0 < review.edit_distance <= 1
    assert [(m.role, m.content) for m in messages] == [
        (Role.USER, "My SuperWidget is dead."),
        (Role.ASSISTANT, "I'm sorry to hear you're having trouble with your SuperWidget!"),
    ]


def test_auto_mode_reply_reaches_transcript_before_review(store_url: str) -> None:
    with db.session_scope(store_url) as session:
        conversation = recorder.start_conversation(session, mode=ReplyMode.AUTO)
        recorder.add_message(session, conversation.id, "user", "Where is my order?")
        draft = recorder.record_draft(session, conversation.id, "It ships tomorrow.")
        assert [m.content for m in recorder.transcript(session, conversation.id)][-1] == "It ships tomorrow."
        recorder.record_review(session, draft.id, "approved", agent_id="bob")
        assert len(session.exec(select(Message).where(Message.conversation_id == conversation.id)).all()) == 2


def test_a_draft_is_reviewed_once_and_claims_keep_agents_apart(store_url: str) -> None:
    with db.session_scope(store_url) as session:
        conversation = recorder.start_conversation(session)
        recorder.add_message(session, conversation.id, "user", "Hello?")
        draft = recorder.record_draft(session, conversation.id, "Hi! How can I help?")
        review_queue.claim_draft(session, draft.id, "alice")
        with pytest.raises(ConflictError, match="alice"):
            review_queue.claim_draft(session, draft.id, "bob")
        recorder.record_review(session, draft.id, "approved", agent_id="alice")
        with pytest.raises(ConflictError, match="already reviewed"):
            recorder.record_review(session, draft.id, "rejected", agent_id="alice")


def test_unreachable_postgres_gives_one_line_error_naming_the_fix() -> None:
    with pytest.raises(StoreError, match="HOUSESTYLE_DATABASE_URL") as info:
        db.upgrade("postgresql://nobody@127.0.0.1:1/none")
    assert "\n" not in str(info.value)


def test_malformed_url_is_refused_clearly() -> None:
    with pytest.raises(StoreError, match="not a database URL|unsupported"):
        db.get_engine("definitely not a url")


def test_migrations_build_exactly_the_schema_the_models_describe(store_url: str) -> None:
    """A model change without its migration (or the reverse) fails here, on both stores."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    db.upgrade(store_url)
    with db.get_engine(store_url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


def test_the_customer_learns_an_agent_has_the_draft_and_is_typing_until_the_signal_lapses(store_url: str) -> None:
    from datetime import timedelta

    with db.session_scope(store_url) as session:
        conversation = recorder.start_conversation(session, channel="web", mode=ReplyMode.ASSIST)
        recorder.add_message(session, conversation.id, Role.USER, "Is my SuperWidget still under warranty?")
        draft = recorder.record_draft(session, conversation.id, "Yes.")
        assert review_queue.agent_activity(draft) == "waiting"
        review_queue.claim_draft(session, draft.id, "alice", ttl=timedelta(minutes=5))
        assert review_queue.agent_activity(draft) == "reviewing"
        recorder.add_message(session, conversation.id, Role.USER, "And the charger too?")  # a follow-up, own draft
        follow_up = recorder.record_draft(session, conversation.id, "The charger has one year.")
        assert follow_up.position == draft.position + 2
        assert review_queue.conversation_activity([follow_up, draft]) == "reviewing"  # the furthest along wins
        review_queue.mark_typing(session, draft.id, "alice", ttl=timedelta(minutes=5))
        assert review_queue.agent_activity(draft) == "typing"
        with pytest.raises(ConflictError, match="alice"):
            review_queue.mark_typing(session, draft.id, "bob", ttl=timedelta(minutes=5))
        assert review_queue.agent_activity(draft, now=draft.typing_until + timedelta(seconds=1)) == "reviewing"
        recorder.record_review(session, draft.id, ReviewDecision.APPROVED, agent_id="alice")
        assert review_queue.agent_activity(draft) is None


@contextmanager
def sqlite_busy_handler_off(url: str) -> Iterator[None]:
    """New connections of the store give up at once on a lock another connection holds (SQLite's busy timeout 0):
    a thread that reached SQLite's write lock while another held it would fail with "database is locked"."""
    engine = db.get_engine(url)

    def no_waiting(dbapi_connection, _record) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    engine.dispose()
    event.listen(engine, "connect", no_waiting)
    try:
        yield
    finally:
        event.remove(engine, "connect", no_waiting)
        engine.dispose()


def record_api_exchange(url: str, question: str) -> int:
    """What the service records for one `/v1/chat/completions` call: one transaction, three writes."""
    with db.session_scope(url) as session:
        conversation = recorder.start_conversation(session, channel="api", mode=ReplyMode.AUTO, source="api")
        recorder.add_messages(session, conversation.id, [(Role.SYSTEM, "You are GadgetCorp's assistant."),
                                                         (Role.USER, question)])
        recorder.record_draft(session, conversation.id, "Have you tried another outlet?", adapter_version="v1")
        return conversation.id


def test_many_threads_recording_at_once_all_succeed_and_sqlite_never_makes_one_wait(store_url: str) -> None:
    """The service records from up to 40 worker threads at once. On SQLite they queue in the process for the one
    write lock, so none ever reaches SQLite's busy handler (which sleeps in growing steps): with that handler off,
    not one write is refused. Every exchange is stored whole, and turns sent to one conversation at once all land
    in their own slots."""
    threads, calls = 16, 8
    with db.session_scope(store_url) as session:
        shared = recorder.start_conversation(session, channel="web", mode=ReplyMode.ASSIST).id
    start = threading.Barrier(threads)

    def customer(index: int) -> list[int]:
        start.wait()
        ids = []
        for call in range(calls):
            ids.append(record_api_exchange(store_url, f"Question {index}.{call}: my SuperWidget is dead."))
            with db.session_scope(store_url) as session:
                recorder.add_message(session, shared, Role.USER, f"Customer {index}, message {call}.")
        return ids

    with sqlite_busy_handler_off(store_url) if store_url.startswith("sqlite") else nullcontext():
        with ThreadPoolExecutor(threads) as pool:
            recorded = [conversation_id for ids in pool.map(customer, range(threads)) for conversation_id in ids]

    assert len(set(recorded)) == threads * calls
    with db.session_scope(store_url) as session:
        for conversation_id in recorded[::17]:
            assert [m.role for m in recorder.transcript(session, conversation_id)] == [
                Role.SYSTEM, Role.USER, Role.ASSISTANT]
        drafts = session.exec(select(Draft).where(Draft.conversation_id.in_(recorded))).all()
        positions = [m.position for m in recorder.transcript(session, shared)]
    assert len(drafts) == threads * calls
    assert positions == list(range(threads * calls))


def test_on_sqlite_a_failed_write_and_an_open_read_do_not_hold_up_the_next_writer(housestyle_home: Path) -> None:
    """A transaction that fails after writing gives the write lock back with its rollback; a session that only
    reads never takes it. With SQLite's busy handler off, the writer in another thread gets through at once."""
    url = db.open_store(f"sqlite:///{housestyle_home / 'store.db'}")
    with sqlite_busy_handler_off(url):
        with pytest.raises(InputError):
            with db.session_scope(url) as session:
                conversation = recorder.start_conversation(session)
                recorder.add_message(session, conversation.id, Role.USER, "   ")  # refused: empty text
        with db.session_scope(url) as reading:
            assert reading.exec(select(Message)).all() == []
            with ThreadPoolExecutor(1) as pool:
                assert pool.submit(record_api_exchange, url, "Where is my order?").result(timeout=60)
    with db.session_scope(url) as session:
        assert len(session.exec(select(Draft)).all()) == 1
