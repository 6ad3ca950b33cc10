"""The one way into the store: engines, sessions, and schema upgrades for SQLite and Postgres.

Every entry point (a CLI command, the service, a benchmark) calls `open_store(url)` once: it upgrades the schema
(Alembic, under a lock so concurrent starts do not migrate side by side) and returns the URL. After that,
`session_scope(url)` is a plain transaction; it never migrates behind the caller's back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlmodel import Session, create_engine

from core.errors import StoreError
from core.models import HealthProbe
from core.writer import SQLITE_BUSY_TIMEOUT_MS, SerialWriteConnection, writer_queue

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Accept the URLs people paste (`postgres://`, `postgresql://`) and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _sqlite_connect_args(database: str | None) -> dict:
    """pysqlite's arguments: any thread may use a pooled connection, SQLite's busy timeout (other processes), and
    this process's writer queue for the file."""
    return {
        "check_same_thread": False,
        "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        "factory": partial(SerialWriteConnection, writers=writer_queue(database)),
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


def migrate(connection: Connection, revision: str = "head") -> None:
    """Run the migrations up to `revision` on `connection`, inside its transaction (in the schema its search_path
    names first: a restore builds its staging schema this way)."""
    config = _alembic_config(connection.engine.url.render_as_string(hide_password=False))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest schema revision this code knows (read once per process: the scripts do not change under it)."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(_alembic_config("")).get_current_head())


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the store's schema up to date (safe to call on every start). A store already at the head is only read
    (alembic's environment and scripts cost 40-300 ms a call, paid by every process and test that opens a store)."""
    url = normalise_url(url)
    engine = get_engine(url)
    try:
        with engine.begin() as connection:
            if revision == "head" and _revision_on(connection) == head_revision():
                return
            migrate(connection, revision)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreError(
            f"cannot reach the store at {describe_url(url)}: {reason}; "
            "check HOUSESTYLE_DATABASE_URL and that the database server is running"
        ) from None


def current_revision(url: str) -> str | None:
    """The schema revision the store is at, or None for an empty database."""
    with get_engine(url).connect() as connection:
        return _revision_on(connection)


def _revision_on(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

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


PROBE_BYTES = 8192  # more than a page: writing it needs the store to be able to grow


def can_write(url: str) -> bool:
    """True when the store takes a write (a row of PROBE_BYTES written and deleted in one committed transaction):
    reads keep working on a full disk, writes do not, and a customer's message is a write."""
    try:
        with session_scope(url) as session:
            probe = HealthProbe(payload="x" * PROBE_BYTES)
            session.add(probe)
            session.flush()
            session.delete(probe)
        return True
    except (StoreError, Exception):  # any failure means "cannot write", which is what /ready reports
        return False
