"""`housestyle db backup` / `db restore`: a whole store to one file and back, for SQLite and Postgres alike.

A backup is the database's own format, so the usual tools read it too: a SQLite database file (written with
SQLite's online backup API, safe while the service runs) or a `pg_dump` custom-format archive. Either is written
to a temporary file beside `--out` with mode 0600 and renamed into place when complete: never a half-written backup.

A backup carries a seal (`<file>.seal.json`, collector/backup_seal.py): its sha256 signed with this installation's
backup key. A restore verifies it first, so only files `housestyle db backup` wrote here (or on a host holding the
same key) are read at all; `--trust-unsealed` skips that for an older or foreign backup, never the checks below.
A restore then checks that the file is a HouseStyle backup (the store's tables and a schema revision this code
knows) and refuses anything else, treating the file as untrusted input (issue 28): a SQLite file holding triggers,
views or tables the schema does not have is refused (a planted trigger survived a restore and undid a later
`forget`); a pg_dump archive holding anything but tables, their data, sequences, defaults, constraints and indexes
(functions, procedures, triggers, views, rules, extensions ...) or a table the schema does not have is refused
before anything of it is read (a CHECK constraint calling a planted function ran `COPY ... TO PROGRAM`), and so is
one whose schema has a CHECK constraint, a generated column or a default calling anything but its sequence. Either
kind is restored into a fresh place (a temporary database, a staging schema) and swapped in only after an
integrity check: every table and column of the current schema present (a file with hollow tables broke the store
with "no such table: brand"). It never half-restores:
- SQLite: the backup is copied into a temporary database beside the store and upgraded to the current schema
  there; then SQLite's backup API copies it over the store in one write transaction (readers see the old store or
  the new one, never a mix), and the temporary file goes.
- Postgres (collector/backup_staging.py): none of the archive's DDL runs. A fresh staging schema is built by our
  own migrations at the backup's revision, only the archive's rows (`pg_restore --data-only`) are loaded into it,
  it is upgraded and checked (tables, columns, no code, revision, row counts, foreign keys), and the live tables
  are swapped for the staged ones, all in one transaction: any failure rolls it back and the store is as it was.
A store that already holds data is only replaced with `force` (`--force`): a restore is not a merge. Stop
`housestyle serve` before restoring; it keeps caches of what it read.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from collector.backup_seal import check_seal, write_seal
from collector.backup_staging import restore_staged
from core.db import (
    create_private_file,
    describe_url,
    get_engine,
    known_revisions,
    normalise_url,
    session_scope,
    upgrade,
)
from core.errors import InputError, StoreError
from core.models import AdapterVersion, ApiKey, Conversation, Message, Review, TrainingRun

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_CUSTOM_MAGIC = b"PGDMP"
# a HouseStyle store has at least these tables (and the schema revision in alembic_version)
REQUIRED_TABLES = frozenset({"alembic_version", "conversation", "message", "draft", "review", "adapterversion"})
DATA_TABLES = (Conversation, Message, Review, AdapterVersion, ApiKey, TrainingRun)  # "the store holds data"


class BackupSummary(BaseModel):
    """What a backup or restore covered, for the one-line summary."""

    path: Path
    store: str  # the store's URL, password hidden
    kind: str  # sqlite | postgres
    revision: str  # schema revision of the backup
    conversations: int


def _kind(url: str) -> str:
    backend = make_url(normalise_url(url)).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(f"cannot back up a {backend} store; HouseStyle stores are SQLite or Postgres")
    return "sqlite" if backend == "sqlite" else "postgres"


def _conversations(url: str) -> int:
    with session_scope(url) as session:
        return session.execute(select(func.count()).select_from(Conversation)).scalar_one()


def holds_data(url: str) -> bool:
    """Whether the store has any rows that a restore would replace (an empty or brand-new store has none)."""
    engine = get_engine(normalise_url(url))
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            return any(
                connection.execute(select(model.__table__.c.id).limit(1)).first() is not None
                for model in DATA_TABLES if model.__tablename__ in tables
            )
    except OperationalError as exc:
        raise StoreError(f"cannot reach the store at {describe_url(url)}: {str(exc.orig).splitlines()[0]}") from None


@contextmanager
def _private_temp_beside(path: Path, suffix: str) -> Iterator[Path]:
    """A fresh 0600 file in `path`'s folder (so the final rename stays on one file system), removed unless kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(descriptor)
    os.chmod(name, 0o600)
    temp = Path(name)
    try:
        yield temp
    finally:
        temp.unlink(missing_ok=True)
        for extra in ("-wal", "-shm", "-journal"):
            Path(name + extra).unlink(missing_ok=True)


def _refuse(path: Path, why: str) -> InputError:
    return InputError(f"{path} is not a HouseStyle backup ({why}); give a file written by `housestyle db backup`")


SQLITE_INTERNAL_TABLES = frozenset({"sqlite_sequence", "sqlite_stat1", "sqlite_stat4"})
# what a pg_dump of a HouseStyle store holds (pg_restore --list entry types); anything else is someone's code
PG_ALLOWED_ENTRIES = ("TABLE DATA", "TABLE", "SEQUENCE SET", "SEQUENCE OWNED BY", "SEQUENCE", "DEFAULT",
                      "FK CONSTRAINT", "CONSTRAINT", "INDEX")
PG_ENTRY = re.compile(r"^\d+; \d+ \d+ (?P<rest>.*)$")


@cache
def current_schema() -> dict[str, frozenset[str]]:
    """Table -> column names of a store at the current schema, read from a fresh SQLite store made for the purpose
    (the same tables and columns on Postgres: one set of migrations)."""
    with tempfile.TemporaryDirectory(prefix="housestyle-schema-") as folder:
        url = f"sqlite:///{Path(folder) / 'schema.db'}"
        upgrade(url)
        engine = get_engine(url)
        try:
            inspector = inspect(engine)
            return {table: frozenset(column["name"] for column in inspector.get_columns(table))
                    for table in inspector.get_table_names() if table not in SQLITE_INTERNAL_TABLES}
        finally:
            engine.dispose()


def _foreign_tables(tables: set[str]) -> set[str]:
    """Tables no HouseStyle schema has (an older backup may lack some of today's, never hold others)."""
    return tables - set(current_schema()) - SQLITE_INTERNAL_TABLES


def _check_integrity(url: str, path: Path) -> None:
    """After the restore into a fresh database and its upgrade: every table and column of the current schema is
    there (hollow tables are refused), before anything is swapped in."""
    inspector = inspect(get_engine(normalise_url(url)))
    present = set(inspector.get_table_names())
    for table, columns in sorted(current_schema().items()):
        if table not in present:
            raise _refuse(path, f"after upgrading it still lacks the table {table}")
        missing = columns - {column["name"] for column in inspector.get_columns(table)}
        if missing:
            raise _refuse(path, f"its table {table} lacks the columns {', '.join(sorted(missing))}")


def _check_revision(path: Path, revision: str | None) -> str:
    if not revision:
        raise _refuse(path, "it has no schema revision")
    if revision not in known_revisions():
        raise InputError(f"{path} is a backup of schema {revision}, which this HouseStyle does not know; restore it "
                         "with the HouseStyle version that wrote it, or upgrade HouseStyle first")
    return revision


# --- SQLite ------------------------------------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path:
    database = make_url(normalise_url(url)).database
    if not database or database == ":memory:":
        raise StoreError("an in-memory SQLite store has nothing to back up or restore; set HOUSESTYLE_DATABASE_URL")
    return Path(database)


def _check_sqlite_backup(path: Path) -> str:
    """The backup's schema revision, after making sure it is an intact HouseStyle SQLite database."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _refuse(path, f"SQLite cannot open it: {exc}") from None
    try:
        if connection.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise _refuse(path, "it is damaged: SQLite's quick_check failed")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = REQUIRED_TABLES - tables
        if missing:
            raise _refuse(path, f"it lacks the tables {', '.join(sorted(missing))}")
        code = connection.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view') ORDER BY type, name").fetchall()
        if code:
            raise _refuse(path, f"it holds {code[0][0]} {code[0][1]!r}; HouseStyle stores have no triggers or views")
        if foreign := _foreign_tables(tables):
            raise _refuse(path, f"it holds tables HouseStyle does not have: {', '.join(sorted(foreign))}")
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _refuse(path, f"SQLite cannot read it: {exc}") from None
    finally:
        connection.close()
    return _check_revision(path, row[0] if row else None)


def _backup_sqlite(url: str, out: Path) -> None:
    source = _sqlite_path(url)
    with _private_temp_beside(out, ".partial") as temp:
        with sqlite3.connect(source, timeout=30) as src, sqlite3.connect(temp) as dst:
            src.backup(dst)  # the online backup API: a consistent copy even while the service writes
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        src.close()
        dst.close()
        os.replace(temp, out)


def _restore_sqlite(path: Path, url: str) -> None:
    target = _sqlite_path(url)
    create_private_file(target)
    with _private_temp_beside(target, ".restore") as temp:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as src, sqlite3.connect(temp) as dst:
            src.backup(dst)
        src.close()
        dst.close()
        temp_url = f"sqlite:///{temp}"
        upgrade(temp_url)  # an older backup comes back at the current schema, before the store is touched
        try:
            _check_integrity(temp_url, path)
            check = sqlite3.connect(temp)
            try:
                if check.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    raise _refuse(path, "it is damaged: SQLite's integrity_check failed")
            finally:
                check.close()
        finally:
            get_engine(temp_url).dispose()
        # one step = one write transaction on the store: it is the old store or the restored one, never a mix
        with sqlite3.connect(temp) as src, sqlite3.connect(target, timeout=30) as dst:
            src.backup(dst)
        src.close()
        dst.close()
    get_engine(normalise_url(url)).dispose()  # pooled connections must not keep pages of the old store


# --- Postgres ----------------------------------------------------------------------------------------------------


def postgres_tool(name: str) -> str:
    """`pg_dump` / `pg_restore`: from PATH, else the newest /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                      if p.parent.name.isdigit() else 0)
    for folder in reversed(versions):
        if (folder / name).exists():
            return str(folder / name)
    raise StoreError(f"{name} was not found; install the PostgreSQL client tools (e.g. apt install postgresql-client)")


def _libpq(url: str) -> tuple[list[str], dict[str, str]]:
    """Connection flags and environment for the pg tools: the password goes in PGPASSWORD, never on argv."""
    parsed: URL = make_url(normalise_url(url))
    flags = [f"--dbname={parsed.database}"]
    if parsed.host:
        flags.append(f"--host={parsed.host}")
    if parsed.port:
        flags.append(f"--port={parsed.port}")
    if parsed.username:
        flags.append(f"--username={parsed.username}")
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return flags, env


def _run_tool(command: list[str], env: dict[str, str], doing: str) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        first = next((line for line in errors if "error" in line.lower()), errors[0] if errors else "no output")
        raise StoreError(f"{doing} failed: {first.strip()}")
    return result.stdout


NEXTVAL = re.compile(r"nextval\('[\w.\"]+'::regclass\)")


def _check_postgres_expressions(path: Path, restore: str) -> None:
    """A HouseStyle schema has no CHECK constraints, no generated columns and no default but a constant or its
    sequence's nextval: an archive whose DDL has one could call a built-in (or worse) while restored or used."""
    ddl = subprocess.run([restore, "--schema-only", "--file=-", str(path)], capture_output=True, text=True,
                         check=False).stdout
    for line in ddl.splitlines():
        if line.lstrip().startswith("--"):
            continue
        if re.search(r"\bCHECK\s*\(|\bGENERATED\b", line):
            raise _refuse(path, f"its schema has an expression HouseStyle's has not: {line.strip()[:80]}")
        default = re.search(r"\bDEFAULT\b(.*)", line)
        if default and "(" in NEXTVAL.sub("", default.group(1)):
            raise _refuse(path, f"its schema has a default HouseStyle's has not: {line.strip()[:80]}")


def _check_postgres_backup(path: Path) -> str:
    restore = postgres_tool("pg_restore")
    listing = subprocess.run([restore, "--list", str(path)], capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        raise _refuse(path, "pg_restore cannot read it")
    for line in listing.stdout.splitlines():
        entry = PG_ENTRY.match(line)
        if entry and not entry["rest"].startswith(tuple(f"{kind} " for kind in PG_ALLOWED_ENTRIES)):
            raise _refuse(path, f"it holds code or objects a HouseStyle store has not: {entry['rest'][:80]}")
    _check_postgres_expressions(path, restore)
    tables = set(re.findall(r"^\d+; \d+ \d+ TABLE (?!DATA )\S+ (\S+) ", listing.stdout, flags=re.M))
    if foreign := _foreign_tables(tables):
        raise _refuse(path, f"it holds tables HouseStyle does not have: {', '.join(sorted(foreign))}")
    missing = REQUIRED_TABLES - tables
    if missing:
        raise _refuse(path, f"it lacks the tables {', '.join(sorted(missing))}")
    data = subprocess.run([restore, "--data-only", "--table=alembic_version", "--file=-", str(path)],
                          capture_output=True, text=True, check=False).stdout
    match = re.search(r"^COPY \S*alembic_version \(version_num\) FROM stdin;\n([^\n\\]+)\n", data, flags=re.M)
    return _check_revision(path, match.group(1).strip() if match else None)


def _backup_postgres(url: str, out: Path) -> None:
    flags, env = _libpq(url)
    with _private_temp_beside(out, ".partial") as temp:
        _run_tool([postgres_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--file={temp}",
                   *flags], env, f"pg_dump of {describe_url(url)}")
        os.replace(temp, out)


def _restore_postgres(path: Path, url: str, revision: str) -> None:
    """Through a staging schema, none of the archive's code run (collector/backup_staging.py)."""
    restore_staged(path, url, tool=postgres_tool("pg_restore"), revision=revision, expected=current_schema(),
                   refuse=lambda why: _refuse(path, why))


# --- the two commands --------------------------------------------------------------------------------------------


def backup_store(url: str, out: Path, *, key: bytes) -> BackupSummary:
    """Write the whole store at `url` to `out` (0600, complete or not at all) and its seal beside it, signed with
    `key` (collector/backup_seal.py)."""
    kind, out = _kind(url), Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a folder; give the backup's file name, e.g. --out {out / 'housestyle.backup'}")
    (_backup_sqlite if kind == "sqlite" else _backup_postgres)(url, out)
    revision = (_check_sqlite_backup if kind == "sqlite" else _check_postgres_backup)(out)
    write_seal(out, kind=kind, revision=revision, key=key)
    return BackupSummary(path=out, store=describe_url(url), kind=kind, revision=revision,
                         conversations=_conversations(url))


def backup_kind(path: Path) -> str:
    """sqlite | postgres, from the file's first bytes; InputError for anything else."""
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; give the file `housestyle db backup` wrote")
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_CUSTOM_MAGIC):
        return "postgres"
    raise _refuse(path, "it is neither a SQLite database nor a pg_dump archive")


def restore_store(path: Path, url: str, *, key: bytes | None, force: bool = False,
                  trust_unsealed: bool = False) -> BackupSummary:
    """Replace the store at `url` with the backup at `path` (whole or not at all); see the module docstring. Its
    seal must verify with `key` unless `trust_unsealed` (the file checks run either way)."""
    path, kind = Path(path), _kind(url)
    found = backup_kind(path)
    if found != kind:
        raise InputError(f"{path} is a {found} backup but the store at {describe_url(url)} is {kind}; restore it "
                         f"into a {found} store (set HOUSESTYLE_DATABASE_URL)")
    if not trust_unsealed:
        check_seal(path, kind=kind, key=key)
    revision = (_check_sqlite_backup if kind == "sqlite" else _check_postgres_backup)(path)
    if not force and holds_data(url):
        raise InputError(f"the store at {describe_url(url)} already holds data; a restore replaces all of it: "
                         "add --force to go ahead (back it up first with `housestyle db backup`)")
    if kind == "sqlite":
        _restore_sqlite(path, url)
    else:
        _restore_postgres(path, url, revision)
    return BackupSummary(path=path, store=describe_url(url), kind=kind, revision=revision,
                         conversations=_conversations(url))
