"""The one way into the store: engines, sessions, and schema upgrades for SQLite and Postgres.

Every entry point (a CLI command, the service, a benchmark) calls `open_store(url)` once: it upgrades the schema
(Alembic, under a lock so concurrent starts do not migrate side by side) and returns the URL. After that,
`session_scope(url)` is a plain transaction; it never migrates behind the caller's back.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlmodel import Session, create_engine

from collector.errors import StoreError
from collector.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> str:
    """Accept the URLs people paste (`postgres://`, `postgresql://`) and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


READ_STATEMENTS = ("SELECT", "PRAGMA")  # neither starts a write transaction nor takes SQLite's write lock


class WriterQueue:
    """The lock that one store file's writers in this process queue on (see `SerialWriteConnection`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


_writer_queues: dict[str, WriterQueue] = {}


def _writer_queue(database: str | None) -> WriterQueue:
    if not database or database == ":memory:":
        return WriterQueue()  # a private in-memory store: its engine's own queue
    return _writer_queues.setdefault(os.path.realpath(database), WriterQueue())


def _fresh_queues_in_child() -> None:
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


def _sqlite_connect_args(database: str | None) -> dict:
    """pysqlite's arguments: any thread may use a pooled connection, SQLite's busy timeout (other processes), and
    this process's writer queue for the file."""
    return {
        "check_same_thread": False,
        "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        "factory": partial(SerialWriteConnection, writers=_writer_queue(database)),
    }


def _set_sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_private_file(path: Path) -> None:
    """Create `path` (and its folder) readable by its owner only, if it does not exist yet.

    The store holds customers' conversations: a SQLite file must not be world-readable whatever the umask, and
    SQLite gives its -wal and -shm files the database file's permissions.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the store file {path}: {exc.strerror}; check HOUSESTYLE_HOME") from None


@lru_cache(maxsize=16)
def get_engine(url: str) -> Engine:
    """The engine for a store URL, created once per process."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"'{url}' is not a database URL; set HOUSESTYLE_DATABASE_URL to sqlite:///path.db or postgresql://user@host/db"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            create_private_file(Path(parsed.database))
        engine = create_engine(url, connect_args=_sqlite_connect_args(parsed.database))
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise StoreError(f"unsupported database '{parsed.get_backend_name()}'; use sqlite:/// or postgresql:// URLs")
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except NoSuchModuleError as exc:
        raise StoreError(f"cannot use '{url}': {exc}") from None


def describe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(normalise_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the store's schema up to date (safe to call on every start)."""
    url = normalise_url(url)
    engine = get_engine(url)
    try:
        with engine.begin() as connection:
            config = _alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreError(
            f"cannot reach the store at {describe_url(url)}: {reason}; "
            "check HOUSESTYLE_DATABASE_URL and that the database server is running"
        ) from None


def current_revision(url: str) -> str | None:
    """The schema revision the store is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def table_names(url: str) -> list[str]:
    return sorted(inspect(get_engine(url)).get_table_names())


_opened: set[str] = set()
_open_lock = threading.Lock()  # two threads opening one store must not run the migrations side by side


def open_store(url: str) -> str:
    """Make the store at `url` ready for this process (schema upgraded, once per process); returns the URL."""
    url = normalise_url(url)
    if url not in _opened:
        with _open_lock:
            if url not in _opened:
                upgrade(url)
                _opened.add(url)
    return url


def entry_settings(brand: str | None = None) -> Settings:
    """For entry points (CLI commands): this process's settings, with their store opened, for `brand` (a --brand;
    default HOUSESTYLE_BRAND): the brand's own company, prompt, public name, gate and schedule over the rest."""
    from collector.brands import brand_settings  # brands reads the store this module opens

    settings = get_settings()
    open_store(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        return brand_settings(settings, session, brand)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error (open the store first: `open_store`)."""
    url = normalise_url(url)
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StoreError(f"the store at {describe_url(url)} failed: {reason}") from None
        except BaseException:
            session.rollback()
            raise


def known_revisions() -> set[str]:
    """Every schema revision this code's migrations know."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_alembic_config("")).walk_revisions()}


def head_revision() -> str:
    """The newest schema revision this code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("")).get_current_head()


PROBE_BYTES = 8192  # more than a page: writing it needs the store to be able to grow


def can_write(url: str) -> bool:
    """True when the store takes a write (a row of PROBE_BYTES written and deleted in one committed transaction):
    reads keep working on a full disk, writes do not, and a customer's message is a write."""
    from collector.models import HealthProbe

    try:
        with session_scope(url) as session:
            probe = HealthProbe(payload="x" * PROBE_BYTES)
            session.add(probe)
            session.flush()
            session.delete(probe)
        return True
    except (StoreError, Exception):  # any failure means "cannot write", which is what /ready reports
        return False
