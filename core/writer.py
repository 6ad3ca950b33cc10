"""SQLite's writer queue: this process's threads take turns to write one store file, in the process, not in
SQLite's busy handler (see `SerialWriteConnection`)."""

from __future__ import annotations

import os
import sqlite3
import threading

SQLITE_BUSY_TIMEOUT_MS = 30_000

READ_STATEMENTS = ("SELECT", "PRAGMA")  # neither starts a write transaction nor takes SQLite's write lock


class WriterQueue:
    """The lock that one store file's writers in this process queue on (see `SerialWriteConnection`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


_writer_queues: dict[str, WriterQueue] = {}


def writer_queue(database: str | None) -> WriterQueue:
    if not database or database == ":memory:":
        return WriterQueue()  # a private in-memory store: its engine's own queue
    return _writer_queues.setdefault(os.path.realpath(database), WriterQueue())


def _fresh_queues_in_child() -> None:
    """After a fork: a lock held by a thread at fork time would never be released in the child."""
    for queue in _writer_queues.values():  # a lock held by a thread at fork time would never be released here
        queue.lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_queues_in_child)


class SerialWriteConnection(sqlite3.Connection):
    """A SQLite connection whose write transactions queue on one lock per store file in this process.

    SQLite lets one writer in at a time; the others wait in its busy handler, which sleeps in growing steps (1, 2,
    5 ... 100 ms) between tries, so while a transaction holds the write lock for a millisecond, the other threads
    that want it sleep ten to a hundred times as long (p99 of a customer's message in the hundreds of ms under 8
    concurrent requests). Here a thread about to start a write transaction first takes its store's `WriterQueue`
    lock, and is woken the moment the previous writer commits or rolls back; SQLite's busy handler is left to
    arbitrate between processes (the redaction worker, a CLI command). Reads never wait: WAL readers do not block
    writers. Kept by hand: neither SQLAlchemy nor pysqlite has an in-process writer queue.
    """

    def __init__(self, *args, writers: WriterQueue, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.writers = writers
        self.write_lock: threading.Lock | None = None  # the lock this connection holds, while it holds it

    def cursor(self, factory=None):  # noqa: ANN001, ANN201 - sqlite3's own signature
        return super().cursor(factory or SerialWriteCursor)

    def before_statement(self, statement: str) -> None:
        """Before a statement that may start a write transaction: wait for this process's current writer."""
        if self.write_lock is not None or self.in_transaction:
            return
        if statement.lstrip()[:6].upper().startswith(READ_STATEMENTS):
            return
        lock = self.writers.lock
        if not lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise sqlite3.OperationalError(
                f"database is locked (another thread of this process held its write lock for "
                f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s)"
            )
        self.write_lock = lock

    def after_statement(self) -> None:
        """After a statement, a commit or a rollback: the next writer's turn, unless a transaction is still open."""
        if self.write_lock is not None and not self.in_transaction:
            self._release()

    def _release(self) -> None:
        lock, self.write_lock = self.write_lock, None
        if lock is not None:
            lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.after_statement()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.after_statement()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()


class SerialWriteCursor(sqlite3.Cursor):
    """A cursor that waits for its connection's turn to write (see `SerialWriteConnection`)."""

    def execute(self, statement, parameters=()):  # noqa: ANN001, ANN201 - sqlite3's own signature
        self.connection.before_statement(statement)
        try:
            return super().execute(statement, parameters)
        finally:
            self.connection.after_statement()

    def executemany(self, statement, parameters):  # noqa: ANN001, ANN201
        self.connection.before_statement(statement)
        try:
            return super().executemany(statement, parameters)
        finally:
            self.connection.after_statement()
