"""One refresh at a time: the store-held job lock works across processes on SQLite and Postgres."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest

from collector import locks
from collector.errors import ConflictError


def _try_in_child(url: str, queue: multiprocessing.Queue) -> None:
    queue.put(locks.try_acquire("refresh", locks.new_holder_id(), ttl=timedelta(minutes=5), url=url))


def test_second_process_cannot_take_a_held_lock(store_url: str) -> None:
    with locks.job_lock("refresh", url=store_url):
        queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(target=_try_in_child, args=(store_url, queue))
        child.start()
        child.join(60)
        assert queue.get(timeout=5) is False
        with pytest.raises(ConflictError, match="already running"):
            with locks.job_lock("refresh", url=store_url):
                pass
    # released: the next one gets it
    with locks.job_lock("refresh", url=store_url):
        pass


def test_an_expired_lock_from_a_dead_holder_is_taken_over(store_url: str) -> None:
    assert locks.try_acquire("refresh", "dead-host:1:x", ttl=timedelta(seconds=-1), url=store_url)
    assert locks.try_acquire("refresh", "alive-host:2:y", ttl=timedelta(minutes=5), url=store_url)
    assert not locks.try_acquire("refresh", "third:3:z", ttl=timedelta(minutes=5), url=store_url)
    assert locks.renew("refresh", "alive-host:2:y", ttl=timedelta(minutes=5), url=store_url)
    assert not locks.renew("refresh", "dead-host:1:x", ttl=timedelta(minutes=5), url=store_url)
