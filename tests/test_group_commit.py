"""The service's store writer: API calls that arrive together are stored with one commit, and one bad write fails
alone, on SQLite and Postgres."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select
from sqlmodel import Session

from collector import recorder
from core import db
from core.errors import InputError
from core.group_commit import GroupCommit
from core.models import Conversation, Draft, ReplyMode, Role


def api_exchange(question: str):
    """A write as the service queues it for one `/v1/chat/completions` call: the question, and the sent reply."""

    def write(session: Session) -> int:
        conversation = recorder.start_conversation(session, channel="api", mode=ReplyMode.AUTO, source="api")
        recorder.add_messages(session, conversation.id, [(Role.USER, question)])
        recorder.record_draft(session, conversation.id, "Have you tried another outlet?", adapter_version="v1")
        return conversation.id

    return write


@pytest.fixture
def commits(store_url: str) -> Iterator[list[int]]:
    """One entry per transaction the store's engine commits."""
    seen: list[int] = []
    engine = db.get_engine(store_url)

    def count(_connection) -> None:
        seen.append(1)

    event.listen(engine, "commit", count)
    yield seen
    event.remove(engine, "commit", count)


def test_calls_that_queue_while_the_writer_is_busy_are_stored_together_with_one_commit(
    store_url: str, commits: list[int]
) -> None:
    writer = GroupCommit(store_url)
    busy = threading.Event()

    def slow_first(session: Session) -> int:
        busy.wait(60)  # the writer is busy: the next calls queue up behind it
        return api_exchange("My SuperWidget is dead.")(session)

    first = writer.submit(slow_first)
    queued = [writer.submit(api_exchange(f"Where is order GC-{n}?")) for n in range(20)]
    busy.set()
    conversation_ids = [first.result(60)] + [future.result(60) for future in queued]
    writer.close()

    assert len(commits) <= 2  # the first call (alone, or already with the others), then the twenty together
    with db.session_scope(store_url) as session:
        assert session.execute(select(func.count()).select_from(Conversation)).scalar_one() == 21
        for conversation_id in conversation_ids:
            assert [m.role for m in recorder.transcript(session, conversation_id)] == [Role.USER, Role.ASSISTANT]


def test_one_bad_write_fails_alone_and_the_rest_of_its_batch_is_stored(store_url: str) -> None:
    writer = GroupCommit(store_url)
    busy = threading.Event()

    def bad(session: Session) -> None:
        conversation = recorder.start_conversation(session, channel="api", customer_ref="bad")
        recorder.add_message(session, conversation.id, Role.USER, "   ")  # refused: no text

    first = writer.submit(lambda session: busy.wait(60))
    good, failing, also_good = (writer.submit(api_exchange("Do you ship to Canada?")), writer.submit(bad),
                                writer.submit(api_exchange("Can I return my NanoCharger?")))
    busy.set()
    first.result(60)
    with pytest.raises(InputError, match="non-empty"):
        failing.result(60)
    stored = [good.result(60), also_good.result(60)]
    writer.close()

    with db.session_scope(store_url) as session:
        conversations = session.execute(select(Conversation)).scalars().all()
        drafts = session.execute(select(Draft)).scalars().all()
    assert sorted(c.id for c in conversations) == sorted(stored)  # nothing of the bad write, all of the others
    assert len(drafts) == 2


def test_a_closed_writer_has_stored_everything_it_was_given_and_starts_again_on_the_next_write(
    store_url: str,
) -> None:
    writer = GroupCommit(store_url)
    futures = [writer.submit(api_exchange(f"Question {n}")) for n in range(10)]
    writer.close()
    assert all(future.done() for future in futures)
    assert writer.submit(api_exchange("One more")).result(60)
    writer.close()
    with db.session_scope(store_url) as session:
        assert session.execute(select(func.count()).select_from(Conversation)).scalar_one() == 11
