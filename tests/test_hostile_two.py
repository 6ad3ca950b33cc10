"""The second hostile test's smaller holes: unknown keys are rate limited, customers choose only what the operator
lists, erasure matches a whole identity, HouseStyle's files are private, and no job leaves work behind."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from collector.export import ExportOptions, export_dataset
from collector.knowledge import add_document
from collector.knowledge.cli import folder_files
from collector.pii.erasure import forget
from core import locks
from core.db import session_scope
from core.errors import InputError
from core.files import keep_files_private
from core.models import ApiKeyRole, Conversation, ReplyMode, RunStatus, TrainingRun
from core.settings import Settings, get_settings
from plugin.api import deps
from plugin.api.ratelimit import TokenBuckets
from plugin.api.routes.widget import chosen_mode
from plugin.cli import app
from tests.fixtures.stores import redact_store
from tests.test_privacy_store import exchange

ROOT = Path(__file__).parent.parent


def test_wait_spends_nothing_and_take_spends_one() -> None:
    buckets = TokenBuckets(rate=0.001, burst=2)
    assert [buckets.wait("a"), buckets.take("a"), buckets.wait("a"), buckets.take("a")] == [0.0, 0.0, 0.0, 0.0]
    assert buckets.wait("a") > 0 and buckets.wait("b") == 0.0


def test_unknown_keys_are_rate_limited_per_address_before_any_store_lookup(
    store_url: str, start_service, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = start_service(unknown_key_rate_per_client=0.001, unknown_key_burst_per_client=3)
    agent = service.client("agent")
    assert agent.get("/me").status_code == 200  # now cached
    lookups: list[str] = []
    real_lookup = deps._lookup_key
    monkeypatch.setattr(deps, "_lookup_key", lambda url, token: lookups.append(token) or real_lookup(url, token))
    guesser = service.client()
    answers = [guesser.get("/me", headers={"Authorization": f"Bearer hs_guess{n}"}) for n in range(5)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
    assert len(lookups) == 3 and answers[3].headers["Retry-After"] and answers[3].json()["detail"]
    assert agent.get("/me").status_code == 200  # a good key seen before is not refused


# --- what a customer may choose ---------------------------------------------------------------------------------
AUTO, ASSIST = ReplyMode.AUTO, ReplyMode.ASSIST
WIDGET, ADMIN = ApiKeyRole.WIDGET, ApiKeyRole.ADMIN


@pytest.mark.parametrize(
    ("settings", "role", "channel", "asked", "expected"),
    [
        ({}, WIDGET, "web", None, ASSIST),  # the configured mode
        ({}, WIDGET, "web", ASSIST, ASSIST),  # asking for the configured mode is harmless
        ({}, WIDGET, "web", AUTO, InputError),  # the hostile test's override of assist review
        ({"widget_modes": ["auto"]}, WIDGET, "web", AUTO, AUTO),  # the operator allows it
        ({"channel_modes": {"web": "auto"}}, WIDGET, "web", None, AUTO),
        ({"channel_modes": {"web": "auto"}}, WIDGET, "web", ASSIST, InputError),
        ({}, WIDGET, "chatwoot", None, InputError),  # a channel not listed for widgets
        ({"widget_channels": ["web", "shop"]}, WIDGET, "shop", None, ASSIST),
        ({}, ADMIN, "chatwoot", AUTO, AUTO),  # the operator's own key chooses freely
        ({}, ADMIN, "web", None, ASSIST),
    ],
)
def test_a_customer_chooses_only_what_the_operator_lists(
    settings: dict, role: ApiKeyRole, channel: str, asked: ReplyMode | None, expected: object
) -> None:
    configured = Settings(**{"widget_modes": [], **settings})  # the default, whatever the tests' environment sets
    if expected is InputError:
        with pytest.raises(InputError):
            chosen_mode(configured, role, channel, asked)
    else:
        assert chosen_mode(configured, role, channel, asked) == expected


def test_the_widget_key_cannot_start_an_auto_conversation_on_an_assist_channel(store_url: str, start_service) -> None:
    assert Settings.model_fields["widget_modes"].get_default(call_default_factory=True) == []
    widget = start_service(widget_modes=[]).client("widget")  # the default (the tests' environment allows both)
    refused = widget.post("/widget/conversations", json={"mode": "auto"})
    assert refused.status_code == 422 and "HOUSESTYLE_WIDGET_MODES" in refused.json()["detail"]
    assert widget.post("/widget/conversations", json={"channel": "chatwoot"}).status_code == 422
    started = widget.post("/widget/conversations", json={})
    assert started.status_code == 201 and started.json()["mode"] == "assist"


# --- erasure by identity, not by text search -------------------------------------------------------------------
TARGET_EMAIL, TARGET_PHONE = "jo@example.com", "+1 415 555 0134"


@pytest.mark.parametrize(
    ("text", "known", "erased"),
    [
        ("my email is jo@example.com", None, True),
        ("write to JO@Example.COM please.", None, True),  # case is not identity
        ("my email is bojo@example.com", None, False),  # the hostile test's near-misses
        ("reach me at jo@example.community", None, False),
        ("it is xjo@example.com or jo@example.co", None, False),
        ("hello", {"email": "Jo@Example.com"}, True),
        ("hello", {"email": "bojo@example.com"}, False),
    ],
)
def test_forget_by_email_erases_only_that_whole_address(
    store_url: str, text: str, known: dict | None, erased: bool
) -> None:
    conversation = exchange(store_url, [(text, "Thanks!")], known=known)
    found = forget(store_url, actor="dpo", dry_run=True, email=TARGET_EMAIL)
    assert (len(found.conversations) == 1) == erased
    if erased:
        assert conversation_name(store_url, conversation) in found.reasons


def test_an_underscore_or_percent_in_an_email_is_not_a_wildcard(store_url: str) -> None:
    exchange(store_url, [("I am johnXdoe@example.com", "Hi")])
    exchange(store_url, [("I am john1doe@example.com", "Hi")])
    assert forget(store_url, actor="dpo", email="john_doe@example.com").conversations == []
    assert forget(store_url, actor="dpo", email="john%doe@example.com").conversations == []


@pytest.mark.parametrize(
    ("text", "known", "erased"),
    [
        ("call me on (415) 555-0134", None, True),
        ("my number: 415.555.0134", None, True),
        ("+1 415 555 0134 is my cell", None, True),
        ("415 dollars, ticket 555 0134", None, False),  # digits over a sentence are not a number
        ("call me on (415) 555-0135", None, False),
        ("call me on +44 415 555 0134", None, False),  # another country's number
        ("order 14155550134999 shipped", None, False),
        ("hello", {"phone": "4155550134"}, True),
        ("hello", {"phone": "+1 (415) 555-0199"}, False),
    ],
)
def test_forget_by_phone_erases_only_that_whole_number(
    store_url: str, text: str, known: dict | None, erased: bool
) -> None:
    exchange(store_url, [(text, "Thanks!")], known=known)
    found = forget(store_url, actor="dpo", dry_run=True, phone=TARGET_PHONE, region="US")
    assert (len(found.conversations) == 1) == erased, found


def test_forget_dry_run_lists_what_would_go_and_why_and_deletes_nothing(store_url: str) -> None:
    exchange(store_url, [("my email is jo@example.com", "Thanks!")])
    result = CliRunner().invoke(app, ["forget", "--email", TARGET_EMAIL, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would delete 1 conversations" in result.output and "email written in a message" in result.output
    assert len(forget(store_url, actor="dpo", dry_run=True, email=TARGET_EMAIL).conversations) == 1
    bad = CliRunner().invoke(app, ["forget", "--email", "jo@example.com, bo@example.com"])
    assert isinstance(bad.exception, InputError) and "not one email address" in str(bad.exception)  # main(): error:


def conversation_name(url: str, conversation_id: int) -> str:
    with session_scope(url) as session:
        row = session.get(Conversation, conversation_id)
        return f"{row.channel}/{row.external_id}"


# --- private files; raw personal data only from the CLI --------------------------------------------------------
def test_an_export_is_private_whatever_the_umask(store_url: str, tmp_path) -> None:
    exchange(store_url, [("my email is jo@example.com", "Thanks!")])
    redact_store(store_url)
    old = os.umask(0o022)  # the usual umask would make them 0644 / 0755
    try:
        export_dataset(ExportOptions(out=tmp_path / "exports" / "one"), settings=get_settings(), progress=False)
    finally:
        os.umask(old)
    out = tmp_path / "exports" / "one"
    modes = {path.relative_to(tmp_path).as_posix(): stat.S_IMODE(path.stat().st_mode)
             for path in [out.parent, out, *out.rglob("*")]}
    assert modes and all(mode == (0o700 if (tmp_path / name).is_dir() else 0o600) for name, mode in modes.items()), modes


def test_the_cli_makes_every_new_file_private() -> None:
    old = keep_files_private()
    try:
        assert os.umask(0o077) == 0o077
    finally:
        os.umask(old)


def test_an_unredacted_export_is_refused_over_http(plugin_service) -> None:
    admin = plugin_service.client("admin")
    refused = admin.post("/admin/export", json={"redact": False})
    assert refused.status_code == 422 and "--no-redact" in refused.json()["detail"]
    assert not list(get_settings().exports_dir.glob("api-*"))


def test_the_clis_unredacted_export_says_so_loudly(store_url: str, tmp_path) -> None:
    exchange(store_url, [("my email is jo@example.com", "Thanks!")])
    result = CliRunner().invoke(app, ["export", "--no-redact", "--out", str(tmp_path / "raw")])
    assert result.exit_code == 0, result.output
    assert "warning: writing UNREDACTED personal data" in result.output


# --- the knowledge loader: no symlinks out of a folder, no huge files, no tracebacks ---------------------------
def test_knowledge_add_refuses_a_symlink_in_a_folder(tmp_path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "faq.md").write_text("# Returns\n\nWithin 30 days.\n")
    (folder / "passwd.txt").symlink_to("/etc/passwd")
    with pytest.raises(InputError, match="symbolic link"):
        folder_files(folder, [".md", ".txt"])
    (folder / "passwd.txt").unlink()
    (folder / "outside").symlink_to("/etc", target_is_directory=True)
    with pytest.raises(InputError, match="symbolic link"):
        folder_files(folder, [".md", ".txt"])
    (folder / "outside").unlink()
    assert folder_files(folder, [".md"]) == [folder / "faq.md"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
        ("nul.jsonl", '{"question": "q\\u0000x", "answer": "a"}\n', "NUL character"),
        ("surrogate.jsonl", '{"question": "q\\ud800x", "answer": "a"}\n', "line 1: question"),
        ("nul.txt", "some\x00text\n", "NUL character"),
    ],
    ids=["deep-json", "nul-faq", "surrogate-faq", "nul-text"],
)
def test_a_hostile_knowledge_file_is_one_error_line(
    store_url: str, tmp_path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as error, session_scope(store_url) as session:
        add_document(session, path, settings=get_settings())
    assert "\n" not in str(error.value)


def test_a_knowledge_file_over_the_size_limit_is_refused_before_it_is_read(store_url: str, tmp_path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("word " * 300_000)  # 1.5 MB
    small = get_settings().model_copy(update={"knowledge_max_file_mb": 1.0})
    with pytest.raises(InputError, match="HOUSESTYLE_KNOWLEDGE_MAX_FILE_MB"), session_scope(store_url) as session:
        add_document(session, path, settings=small)
    assert Settings().knowledge_max_file_mb == 40.0


# --- a run row left "running" by a process that died is closed ------------------------------------------------
INNER_RUN_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from core import locks
    from core.db import open_store
    from core.runs import RunLog

    url = open_store(sys.argv[1])
    with locks.job_lock("refresh-inner-test", url=url) as held:
        outer = RunLog(url, kind="refresh", params={}, step="train", holder=held.holder)
        inner = RunLog(url, kind="train", params={}, step="train")  # as trainer.train starts it: no holder given
        print(outer.run_id, inner.run_id, flush=True)
        time.sleep(600)
    """
)


def test_a_refresh_killed_mid_training_has_its_inner_train_run_closed_too(store_url: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", INNER_RUN_SCRIPT, store_url], cwd=ROOT, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE)
    outer, inner = (int(run_id) for run_id in child.stdout.readline().split())
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    with locks.job_lock("refresh-inner-test", url=store_url):  # the next taker closes what the dead one left
        pass
    with session_scope(store_url) as session:
        rows = [session.get(TrainingRun, run_id) for run_id in (outer, inner)]
        assert [row.status for row in rows] == [RunStatus.FAILED, RunStatus.FAILED]
        assert all("its process died" in row.error for row in rows)
