"""Group commit: one writer thread runs the writes that queued up while it was busy in one transaction, one commit.

The service records every API call after answering it. Done one transaction per call from the thread pool, each
call paid for its own session, commit and thread hand-off, and up to 40 threads took turns at the interpreter lock
the event loop needs (bench/plugin_load.py: recording was ~2.5 ms of the service's ~5.6 ms CPU per call). Here
the calls queue their write functions; the writer takes everything queued (up to `max_batch`), runs the functions
in order in one session and commits once. A caller that must know its write is stored waits for its future, which
resolves only after the commit. If any write of a batch fails, the batch is rolled back and each write is run again
in its own transaction, so one bad write fails alone and the others are stored as if it had never been there (a
write function must therefore touch nothing but the session it is given).
Kept by hand: SQLAlchemy has no group-commit helper.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlmodel import Session

from core.db import session_scope

log = logging.getLogger("housestyle.store")

T = TypeVar("T")
Write = Callable[[Session], Any]
_STOP = object()


class GroupCommit:
    """`submit(write)` queues `write(session)`; `close()` stores what is queued and stops the writer thread.

    The thread starts with the first write. On SQLite it is the one writer of the batch's transaction, so its write
    lock is taken once per batch (`core.db.SerialWriteConnection` queues it behind the other threads' writes).
    """

    def __init__(self, url: str, *, max_batch: int = 64, name: str = "housestyle-writer") -> None:
        self.url = url
        self.max_batch = max_batch
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, write: Callable[[Session], T]) -> Future[T]:
        """Queue a write; its future holds what `write` returned once the batch is committed (or its error)."""
        future: Future[T] = Future()
        self._ensure_started()
        self._queue.put((write, future))
        return future

    async def write(self, write: Callable[[Session], T]) -> T:
        """Queue a write and wait, without blocking the event loop, until it is committed; its result. A caller
        cancelled meanwhile (its client hung up) does not cancel the write."""
        return await asyncio.shield(asyncio.wrap_future(self.submit(write)))

    def submit_and_log(self, write: Write, what: str) -> None:
        """Queue a write nobody waits for (e.g. recording an answer already sent); a failure is logged."""

        def logged(future: Future) -> None:
            if future.exception() is not None:
                log.error("%s was not stored: %s", what, future.exception())

        self.submit(write).add_done_callback(logged)

    def close(self) -> None:
        """Commit everything queued so far, then stop the writer thread (a later `submit` starts a new one)."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[tuple[Write, Future]]) -> None:
        live = [(write, future) for write, future in batch if future.set_running_or_notify_cancel()]
        if len(live) == 1:
            self._run_alone(*live[0])
            return
        try:
            with session_scope(self.url) as session:
                results = [write(session) for write, _ in live]
        except Exception:  # noqa: BLE001 - a write failed: each again on its own, so that one fails alone
            for write, future in live:
                self._run_alone(write, future)
            return
        for (_, future), result in zip(live, results):
            future.set_result(result)

    def _run_alone(self, write: Write, future: Future) -> None:
        try:
            with session_scope(self.url) as session:
                result = write(session)
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits for this write
            future.set_exception(exc)
        else:
            future.set_result(result)
