"""Issue 28: a Postgres restore goes through a fresh staging schema. Nothing of the archive runs but its rows; they
are loaded into a schema our own migrations built at the backup's revision, checked there, and swapped in with the
live tables in one transaction. A doctored dump fails its check and the live store is as it was; a good one swaps
in and the service reads it. Each test names the one-line change to the fix it catches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlmodel import select

from collector import backup as backups
from collector import recorder
from collector.backup import restore_store
from core.db import get_engine, head_revision, normalise_url, open_store, session_scope, upgrade
from core.errors import InputError
from core.models import Conversation
from core.settings import get_settings
from plugin.api.app import create_app
from tests.fixtures.service import LiveServer, make_role_keys
from tests.test_backup import fill, snapshot

pytestmark = pytest.mark.postgres


def sql(*statements: str) -> Callable[[Connection], None]:
    def plant(connection: Connection) -> None:
        for statement in statements:
            connection.execute(text(statement))
    return plant


def orphan_message(connection: Connection) -> None:
    """A message of a conversation that does not exist (its foreign key dropped first, so pg_dump leaves it out)."""
    name = connection.execute(text(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'message'::regclass AND contype = 'f' "
        "AND confrelid = 'conversation'::regclass")).scalar_one()
    connection.execute(text(f'ALTER TABLE message DROP CONSTRAINT "{name}"'))
    connection.execute(text("INSERT INTO message (conversation_id, position, role, content, created_at) "
                            "VALUES (424242, 0, 'user', 'whose?', now())"))


def staging_schemas(url: str) -> list[str]:
    with get_engine(normalise_url(url)).connect() as connection:
        return list(connection.execute(text(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'housestyle_%'")).scalars())


def dump(url: str, out: Path) -> Path:
    backups._backup_postgres(url, out)  # pg_dump itself, no seal: restored with --trust-unsealed (the file checks)
    return out


@pytest.mark.parametrize(
    ("plant", "refusal"),
    [
        # rows that break a foreign key are refused as they load into staging (constraints from our migrations)
        (orphan_message, "its rows do not hold together: .*foreign key"),
        # catches the column comparison dropped from `_load` (the rows would come back without the column's data)
        (sql("ALTER TABLE conversation DROP COLUMN customer_ref"), "rows of its table conversation lack the columns "
                                                                   "customer_ref"),
        # a revision that lies: staging is built at 0008, before brands. Catches `migrate(connection,
        # revision)` -> `migrate(connection, "head")` (staging built at the current schema whatever the file says)
        (sql("UPDATE alembic_version SET version_num = '0008'"),
         "rows of its table adapterversion have columns its schema has not: .*brand_id"),
        # a table's rows left out
        (sql("DROP TABLE brand CASCADE"), "lacks the rows of the tables brand"),
    ],
    ids=["orphan-row", "hollow-column", "revision-lie", "hollow-table"],
)
def test_a_doctored_pg_dump_fails_its_check_in_staging_and_the_live_store_is_unchanged(
    postgres_cluster, housestyle_home: Path, tmp_path: Path, plant: Callable[[Connection], None], refusal: str
) -> None:
    source = open_store(postgres_cluster.create_database())
    fill(source)
    with get_engine(normalise_url(source)).begin() as connection:
        plant(connection)
    archive = dump(source, tmp_path / "doctored.backup")
    live = open_store(postgres_cluster.create_database())
    fill(live)
    with session_scope(live) as session:
        recorder.start_conversation(session, external_id="only-in-the-live-store")
    before = snapshot(live)
    with pytest.raises(InputError, match=refusal):
        restore_store(archive, live, key=None, force=True, trust_unsealed=True)
    assert snapshot(live) == before
    assert staging_schemas(live) == []  # rolled back with the rest


def test_a_good_pg_restore_swaps_in_through_staging_keeps_the_schemas_grants_and_the_service_reads_it(
    postgres_cluster, housestyle_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches `_swap` not called or its transaction not committed (`engine.begin()` -> `engine.connect()`), and the
    load order reversed (children before their parents: a foreign key fails)."""
    source = open_store(postgres_cluster.create_database())
    fill(source)
    with session_scope(source) as session:
        recorder.start_conversation(session, external_id="from-the-backup")
    archive = dump(source, tmp_path / "good.backup")
    live = open_store(postgres_cluster.create_database())
    with session_scope(live) as session:
        recorder.start_conversation(session, external_id="replaced-by-the-restore")
    with get_engine(normalise_url(live)).begin() as connection:
        connection.execute(text("DO $$ BEGIN CREATE ROLE housestyle_reader; EXCEPTION WHEN duplicate_object "
                                "THEN NULL; END $$"))
        connection.execute(text("GRANT USAGE ON SCHEMA public TO housestyle_reader"))

    restore_store(archive, live, key=None, force=True, trust_unsealed=True)
    assert snapshot(live) == snapshot(source)
    assert staging_schemas(live) == []
    with get_engine(normalise_url(live)).connect() as connection:  # the live schema itself stayed, grants and all
        assert connection.execute(text(
            "SELECT has_schema_privilege('housestyle_reader', 'public', 'USAGE')")).scalar_one()
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()

    monkeypatch.setenv("HOUSESTYLE_DATABASE_URL", live)
    get_settings.cache_clear()
    settings = get_settings()
    server = LiveServer(create_app(settings)).start()
    try:
        admin = make_role_keys(live)["admin"]  # written into the restored tables: they take writes too
        stats = httpx.get(f"{server.url}/admin/stats", headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        assert stats.status_code == 200, stats.text
        with session_scope(live) as session:
            conversations = len(session.exec(select(Conversation)).all())
        assert stats.json()["conversations"] == conversations
    finally:
        server.stop()
        get_settings.cache_clear()
    with session_scope(live) as session:
        external = {c.external_id for c in session.exec(select(Conversation))}
    assert "from-the-backup" in external and "replaced-by-the-restore" not in external


def test_an_older_pg_backup_is_staged_at_its_own_revision_and_comes_back_at_the_current_schema(
    postgres_cluster, housestyle_home: Path, tmp_path: Path
) -> None:
    old = postgres_cluster.create_database()
    upgrade(old, "0008")  # before brands
    with get_engine(normalise_url(old)).begin() as connection:
        connection.execute(text("INSERT INTO conversation (channel, external_id, mode, status, source, created_at, "
                                "updated_at) VALUES ('widget', 'from-0008', 'assist', 'open', 'widget', now(), now())"))
    archive = dump(old, tmp_path / "old.backup")
    live = open_store(postgres_cluster.create_database())
    restore_store(archive, live, key=None, trust_unsealed=True)
    with session_scope(live) as session:
        (conversation,) = session.exec(select(Conversation)).all()
        assert conversation.external_id == "from-0008" and conversation.brand_id == 1  # 0009 ran on its rows
        recorder.start_conversation(session, external_id="after")  # the sequence went on from the backup's
