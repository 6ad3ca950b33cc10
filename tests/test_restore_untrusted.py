"""Issue 28 item 3: `db restore` treats the file as untrusted input. A SQLite backup with planted triggers or views
or foreign tables is refused; one with hollow tables is refused after its restore into a fresh database, before the
store is touched; a pg_dump archive holding functions, views or tables the schema does not have is refused before
pg_restore runs. Each test names the one-line change to the fix it catches."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from collector import backup as backups
from collector import recorder
from collector.backup import backup_store, restore_store
from collector.backup_seal import seal_path
from core.db import get_engine, normalise_url, session_scope
from core.errors import InputError
from tests.test_backup import snapshot

KEY = bytes(range(32))  # this test installation's backup key

def filled_backup(url: str, folder: Path) -> Path:
    with session_scope(url) as session:
        conversation = recorder.start_conversation(session, external_id="kept")
        recorder.add_message(session, conversation.id, "user", "hello")
    out = folder / "good.backup"
    backup_store(url, out, key=KEY)
    return out


def doctored(good: Path, name: str, *statements: str) -> Path:
    path = good.with_name(name)
    shutil.copy(good, path)
    shutil.copy(seal_path(good), seal_path(path))  # the good file's seal, kept beside the doctored copy
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()
    return path


@pytest.mark.parametrize(
    ("name", "statements", "refusal"),
    [
        # catches the trigger/view query removed (the trigger that undid a later `forget` survived the restore)
        ("trigger.backup", ["CREATE TRIGGER undo AFTER DELETE ON message BEGIN SELECT 1; END"], "holds trigger 'undo'"),
        ("view.backup", ["CREATE VIEW everything AS SELECT * FROM message"], "holds view 'everything'"),
        # catches `_foreign_tables` not consulted
        ("extra.backup", ["CREATE TABLE stash (id INTEGER PRIMARY KEY, payload TEXT)"],
         "tables HouseStyle does not have: stash"),
        # catches `_check_integrity` not called before the swap (the store broke with "no such table: brand")
        ("hollow.backup", ["PRAGMA foreign_keys = OFF", "DROP TABLE brand"], "still lacks the table brand"),
        # catches the column comparison dropped from `_check_integrity`
        ("hollowcolumn.backup", ["ALTER TABLE conversation DROP COLUMN customer_ref"],
         "its table conversation lacks the columns customer_ref"),
    ],
)
def test_a_doctored_sqlite_backup_is_refused_and_the_store_is_untouched(
    housestyle_home: Path, tmp_path: Path, name: str, statements: list[str], refusal: str
) -> None:
    from core.db import open_store

    url = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    good = filled_backup(url, tmp_path)
    before = snapshot(url)
    with pytest.raises(InputError, match="not the file its seal vouches for"):  # changed after the backup
        restore_store(doctored(good, name, *statements), url, key=KEY, force=True)
    with pytest.raises(InputError, match=refusal):  # the file checks hold on their own (--trust-unsealed)
        restore_store(doctored(good, name, *statements), url, key=KEY, force=True, trust_unsealed=True)
    assert snapshot(url) == before
    restore_store(good, url, key=KEY, force=True)  # the undoctored file is still a good backup
    assert snapshot(url) == before


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("plant", "refusal"),
    [
        # the reproduction: a CHECK constraint calling a planted function (here harmless); catches the entry-type
        # allowlist removed (pg_restore would create and call the function)
        (["CREATE FUNCTION planted() RETURNS boolean LANGUAGE sql AS 'SELECT true'",
          "ALTER TABLE conversation ADD CONSTRAINT planted_check CHECK (planted())"], "FUNCTION public planted"),
        (["CREATE VIEW everything AS SELECT * FROM message"], "VIEW public everything"),
        # a CHECK or a default calling a built-in needs no planted function: catches `_check_postgres_expressions`
        # not called (or its CHECK / DEFAULT rule dropped)
        (["ALTER TABLE conversation ADD CONSTRAINT sized CHECK (length(channel) < 1000)"], "expression HouseStyle"),
        (["ALTER TABLE message ALTER COLUMN content SET DEFAULT md5('x')"], "default HouseStyle's has not"),
        # catches `_foreign_tables` not consulted for archives
        (["CREATE TABLE stash (id integer PRIMARY KEY)"], "tables HouseStyle does not have: stash"),
    ],
)
def test_a_doctored_pg_dump_is_refused_before_pg_restore_runs(
    postgres_cluster, housestyle_home: Path, tmp_path: Path, plant: list[str], refusal: str
) -> None:
    from core.db import open_store

    source = open_store(postgres_cluster.create_database())
    with get_engine(normalise_url(source)).begin() as connection:
        for statement in plant:
            connection.execute(text(statement))
    archive = tmp_path / "doctored.backup"
    backups._backup_postgres(source, archive)  # pg_dump itself (backup_store refuses to vouch for it)
    target = open_store(postgres_cluster.create_database())
    before = snapshot(target)
    with pytest.raises(InputError, match="has no seal"):
        restore_store(archive, target, key=KEY, force=True)
    with pytest.raises(InputError, match=refusal):  # the file checks hold on their own (--trust-unsealed)
        restore_store(archive, target, key=KEY, force=True, trust_unsealed=True)
    assert snapshot(target) == before
    with get_engine(normalise_url(target)).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM pg_proc WHERE proname = 'planted'")).scalar_one() == 0
