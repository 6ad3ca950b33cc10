"""A Postgres restore through a fresh staging schema, in which nothing of the archive runs but its rows (issue 28).

The archive's DDL is never executed: a uniquely named schema is built by HouseStyle's own migrations at the backup's
revision, the archive's table data (`pg_restore --data-only`: COPY blocks, sequence values, nothing else) is loaded
into it in foreign-key order (the constraints hold as rows arrive), upgraded to the current schema and checked:
every table and column and no other, no function, trigger, view or rule, the current revision, each table's row
count. Only then are the live schema's HouseStyle tables swapped for the staged ones. All of it is one transaction:
a failure anywhere rolls it back, staging schema included, and the live store is as it was.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from core.db import describe_url, get_engine, head_revision, migrate, normalise_url
from core.errors import StoreError

IDENT = r'"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*'
COPY_LINE = re.compile(rf"^COPY (?:(?:{IDENT})\.)?({IDENT}) \(((?:{IDENT})(?:, (?:{IDENT}))*)\) FROM stdin;$")
SETVAL_LINE = re.compile(r"^SELECT pg_catalog\.setval\('((?:[^']|'')+)', (\d+), (true|false)\);$")
# what else `pg_restore --data-only` writes around the data: comments, session settings, psql's \restrict guard
HARMLESS_LINE = re.compile(r"^(--.*|SET [a-z_]+ = [^;]*;|SELECT pg_catalog\.set_config\('search_path', '', false\);"
                           r"|\\(un)?restrict [A-Za-z0-9]+|)$")
LOCK_TIMEOUT = "30s"  # a running service holds the tables: fail with the fix rather than wait for it

Refuse = Callable[[str], Exception]


@dataclass
class TableData:
    """One table's COPY block of the archive, spooled to a private file."""

    columns: list[str]
    file: Path
    rows: int = 0


def _name(token: str) -> str:
    return token[1:-1].replace('""', '"') if token.startswith('"') else token


def _quoted(*names: str) -> str:
    return ".".join('"' + name.replace('"', '""') + '"' for name in names)


def read_data(path: Path, tool: str, folder: Path, refuse: Refuse) -> tuple[dict[str, TableData], dict[str, tuple]]:
    """The archive's rows, one COPY file per table in `folder`, and its sequences' (value, is_called); any other
    statement in its data section is refused."""
    tables: dict[str, TableData] = {}
    sequences: dict[str, tuple[int, bool]] = {}
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen([tool, "--data-only", "--file=-", str(path)], stdout=subprocess.PIPE,
                                   stderr=errors)
        try:
            copying: tuple[TableData, object] | None = None
            for raw in process.stdout:
                if copying is not None:
                    if raw == b"\\.\n":
                        copying[1].close()
                        copying = None
                    else:
                        copying[1].write(raw)
                        copying[0].rows += 1
                    continue
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if match := COPY_LINE.match(line):
                    table = _name(match[1])
                    if table in tables:
                        raise refuse(f"its data holds the table {table} twice")
                    data = tables[table] = TableData([_name(c) for c in re.findall(IDENT, match[2])],
                                                     folder / f"{len(tables)}.copy")
                    copying = (data, data.file.open("wb"))
                elif match := SETVAL_LINE.match(line):
                    sequences[_name(match[1].replace("''", "'").rsplit(".", 1)[-1])] = (int(match[2]),
                                                                                         match[3] == "true")
                elif not HARMLESS_LINE.match(line):
                    raise refuse(f"its data holds a statement HouseStyle's backups have not: {line[:80]}")
            code = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if code != 0 or copying is not None:
            errors.seek(0)
            lines = [line for line in errors.read().decode(errors="replace").splitlines() if line.strip()]
            first = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "cut short")
            raise StoreError(f"reading the data of {path} failed: {first.strip()}")
    return tables, sequences


def _load(connection: Connection, staging: str, tables: dict[str, TableData], sequences: dict[str, tuple],
          refuse: Refuse) -> None:
    """The archive's rows into the staging schema (built at the backup's revision), parents before children."""
    from psycopg import sql

    inspector = inspect(connection)
    present = set(inspector.get_table_names(schema=staging)) - {"alembic_version"}  # the migrations wrote it
    for table, data in sorted(tables.items()):
        if table == "alembic_version":
            continue
        if table not in present:
            raise refuse(f"it holds rows of a table {table} its schema revision has not")
        columns = {column["name"] for column in inspector.get_columns(table, schema=staging)}
        if missing := columns - set(data.columns):
            raise refuse(f"the rows of its table {table} lack the columns {', '.join(sorted(missing))}")
        if extra := set(data.columns) - columns:
            raise refuse(f"the rows of its table {table} have columns its schema has not: {', '.join(sorted(extra))}")
    if missing := present - set(tables):
        raise refuse(f"it lacks the rows of the tables {', '.join(sorted(missing))}")
    # the migrations' own rows (the default brand...) go: the backup's rows are the store
    connection.execute(text("TRUNCATE " + ", ".join(_quoted(staging, table) for table in sorted(present))))
    order = [table for table, _ in inspector.get_sorted_table_and_fkc_names(schema=staging) if table in present]
    cursor = connection.connection.driver_connection.cursor()  # psycopg's, in this very transaction
    try:
        for table in order:
            data = tables[table]
            statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
                sql.Identifier(staging), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, data.columns)))
            with cursor.copy(statement) as copy, data.file.open("rb") as rows:
                while chunk := rows.read(1 << 20):
                    copy.write(chunk)
            count = connection.execute(text(f"SELECT count(*) FROM {_quoted(staging, table)}")).scalar_one()
            if count != data.rows:
                raise refuse(f"its table {table} holds {data.rows} rows but {count} were restored")
    finally:
        cursor.close()
    known = set(inspector.get_sequence_names(schema=staging))
    for name, (value, called) in sorted(sequences.items()):
        if name not in known:
            raise refuse(f"it sets a sequence HouseStyle's schema has not: {name}")
        connection.execute(text("SELECT setval(CAST(:sequence AS regclass), :value, :called)"),
                           {"sequence": _quoted(staging, name), "value": value, "called": called})


def _check(connection: Connection, staging: str, expected: dict[str, frozenset[str]], refuse: Refuse) -> None:
    """The staged store, upgraded: exactly the current schema's tables and columns, no code, the current revision."""
    inspector = inspect(connection)
    present = set(inspector.get_table_names(schema=staging))
    for table, columns in sorted(expected.items()):
        if table not in present:
            raise refuse(f"after upgrading it still lacks the table {table}")
        missing = columns - {column["name"] for column in inspector.get_columns(table, schema=staging)}
        if missing:
            raise refuse(f"its table {table} lacks the columns {', '.join(sorted(missing))}")
    if extra := present - set(expected):
        raise refuse(f"it holds tables HouseStyle does not have: {', '.join(sorted(extra))}")
    code = connection.execute(text("""
        WITH staging AS (SELECT oid FROM pg_namespace WHERE nspname = :schema)
        SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = (SELECT oid FROM staging)
        UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger JOIN pg_class ON pg_class.oid = tgrelid
            WHERE relnamespace = (SELECT oid FROM staging) AND NOT tgisinternal
        UNION ALL SELECT 'view ' || relname FROM pg_class
            WHERE relnamespace = (SELECT oid FROM staging) AND relkind IN ('v', 'm')
        UNION ALL SELECT 'rule ' || rulename FROM pg_rules WHERE schemaname = :schema
    """), {"schema": staging}).scalars().first()
    if code:
        raise refuse(f"after restoring it holds {code}; HouseStyle stores have no functions, triggers, views or rules")
    revision = connection.execute(text(f"SELECT version_num FROM {_quoted(staging, 'alembic_version')}")).scalar()
    if revision != head_revision():
        raise refuse(f"after upgrading it is at schema {revision}, not {head_revision()}")


def _swap(connection: Connection, live: str, staging: str, aside: str, expected: dict[str, frozenset[str]]) -> None:
    """The live schema's HouseStyle tables aside, the staged ones in (with their indexes, constraints and owned
    sequences), the old ones dropped; the live schema itself (its owner, grants, anything else in it) stays."""
    replaced = sorted(set(inspect(connection).get_table_names(schema=live)) & set(expected))
    connection.execute(text(f"CREATE SCHEMA {_quoted(aside)}"))
    for table in replaced:
        connection.execute(text(f"ALTER TABLE {_quoted(live, table)} SET SCHEMA {_quoted(aside)}"))
    for table in sorted(expected):
        connection.execute(text(f"ALTER TABLE {_quoted(staging, table)} SET SCHEMA {_quoted(live)}"))
    connection.execute(text(f"DROP SCHEMA {_quoted(aside)} CASCADE"))
    connection.execute(text(f"DROP SCHEMA {_quoted(staging)}"))  # RESTRICT: whatever was left in it fails the swap


def restore_staged(path: Path, url: str, *, tool: str, revision: str, expected: dict[str, frozenset[str]],
                   refuse: Refuse) -> None:
    """Restore the archive at `path` (of schema `revision`, checked already) over the store at `url` through a
    staging schema; `expected`: table -> columns of the current schema; `refuse(why)`: the error for a bad file."""
    import psycopg

    suffix = secrets.token_hex(6)
    staging, aside = f"housestyle_restore_{suffix}", f"housestyle_replaced_{suffix}"
    engine = get_engine(normalise_url(url))
    with tempfile.TemporaryDirectory(prefix="housestyle-restore-") as folder:  # 0700: the rows are customers'
        tables, sequences = read_data(path, tool, Path(folder), refuse)
        engine.dispose()  # our own idle connections must not hold locks on the tables
        try:
            with engine.begin() as connection:
                connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                live = connection.execute(text("SELECT current_schema()")).scalar_one()
                connection.execute(text(f"CREATE SCHEMA {_quoted(staging)}"))
                connection.execute(text(f"SET LOCAL search_path TO {_quoted(staging)}"))  # the migrations build it
                migrate(connection, revision)
                _load(connection, staging, tables, sequences, refuse)
                migrate(connection, "head")  # an older backup comes back at the current schema
                _check(connection, staging, expected, refuse)
                _swap(connection, live, staging, aside, expected)
        except (DBAPIError, psycopg.Error) as exc:
            error = getattr(exc, "orig", None) or exc
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            if isinstance(error, psycopg.errors.LockNotAvailable):
                raise StoreError(f"restoring {path} into {describe_url(url)} waited {LOCK_TIMEOUT} for the store's "
                                 "tables; stop `housestyle serve` (and anything else using the store) first") from None
            if isinstance(error, psycopg.IntegrityError | psycopg.DataError):
                raise refuse(f"its rows do not hold together: {first}") from None
            raise StoreError(f"restoring {path} into {describe_url(url)} failed: {first}; the store is as it "
                             "was") from None
        finally:
            engine.dispose()  # pooled connections must not keep plans of the tables replaced
