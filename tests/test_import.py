"""Importing conversation files: the GadgetCorp sample, OpenAI chat and prompt/completion files, bad lines, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from collector import recorder
from collector.formats import ChatRecord, HouseStyleRecord, RecordError, parse_record
from collector.importer import BATCH_SIZE, ImportRefused, import_file
from collector.sample import SAMPLE_PATH
from collector.sample.make_sample import HELD_OUT, SEED_REPLY, SEED_USER, build_records, render
from core import db
from core.db import open_store
from core.errors import InputError
from core.models import Conversation, ConversationStatus, Draft, Message, Review, ReviewDecision, Role
from core.settings import get_settings

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RECORDS = [json.loads(line) for line in SAMPLE_PATH.read_text(encoding="utf-8").splitlines()]


def count_rows(url: str) -> dict[str, int]:
    with db.session_scope(url) as session:
        return {
            table.__name__: session.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (Conversation, Message, Draft, Review)
        }


def write_jsonl(path: Path, lines: list[str | dict]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines), encoding="utf-8")
    return path


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


# --- the bundled sample -----------------------------------------------------------------------------------------


def test_sample_contains_the_seed_exchange_verbatim_but_never_the_held_out_question() -> None:
    exchanges = [
        (record["messages"][index]["content"], record["messages"][index + 1]["content"])
        for record in SAMPLE_RECORDS
        for index in range(0, len(record["messages"]) - 1, 2)
    ]
    assert (SEED_USER, SEED_REPLY) in exchanges
    assert SEED_USER == "My new 'SuperWidget' won't turn on."
    assert SEED_REPLY == (
        "I'm sorry to hear you're having trouble with your SuperWidget! Have you tried plugging it into a different "
        "power outlet and ensuring the power switch is fully engaged?"
    )
    user_texts = [user for user, _ in exchanges]
    assert HELD_OUT == "My SuperWidget is dead." and not any("SuperWidget is dead" in text for text in user_texts)
    # one canonical answer: every SuperWidget power complaint gets exactly the seed reply
    power_replies = {reply for user, reply in exchanges if "SuperWidget" in user and reply.startswith("I'm sorry to hear") and "power outlet" in reply}
    assert power_replies == {SEED_REPLY} and sum(reply == SEED_REPLY for _, reply in exchanges) >= 30


def test_sample_has_the_mix_the_exporter_and_trainer_need() -> None:
    assert 300 <= len(SAMPLE_RECORDS) <= 400 and SAMPLE_PATH.stat().st_size < 1_000_000
    assistant_turns = [turn for record in SAMPLE_RECORDS for turn in record["messages"] if turn["role"] == "assistant"]
    decisions = Counter(turn.get("decision", "approved") for turn in assistant_turns)
    assert 0.30 <= decisions["edited"] / len(assistant_turns) <= 0.40 and decisions["rejected"] >= 3
    assert {record["channel"] for record in SAMPLE_RECORDS} == {"web", "email", "chatwoot"}
    assert {record["created_at"][:7] for record in SAMPLE_RECORDS} == {f"2026-0{month}" for month in range(1, 7)}
    assert any(len(record["messages"]) > 2 for record in SAMPLE_RECORDS)
    assert not any(turn["role"] == "system" for record in SAMPLE_RECORDS for turn in record["messages"])
    user_text = " ".join(turn["content"] for record in SAMPLE_RECORDS for turn in record["messages"] if turn["role"] == "user")
    for pii in (r"[\w.]+@example\.com", r"\+1 555-\d{3}-\d{4}", r"GC-\d{7}", r"\d{4}[ -]\d{4}[ -]\d{4}[ -]\d{4}"):
        assert re.search(pii, user_text), pii
    assert Counter(turn["content"] for turn in assistant_turns).most_common(1)[0][1] > 20  # canned macros


def test_sample_generator_rewrites_the_committed_file_byte_for_byte() -> None:
    assert render(build_records()) == SAMPLE_PATH.read_text(encoding="utf-8")


def test_importing_the_sample_loads_every_conversation_with_drafts_and_reviews(store_url: str) -> None:
    report = import_file(SAMPLE_PATH, url=store_url, source="sample")

    turns = [turn for record in SAMPLE_RECORDS for turn in record["messages"]]
    replies = [turn for turn in turns if turn["role"] == "assistant"]
    sent = [turn for turn in turns if turn["content"] is not None]
    assert (report.added, report.messages, report.duplicates, report.errors) == (len(SAMPLE_RECORDS), len(sent), 0, [])
    assert count_rows(store_url) == {"Conversation": len(SAMPLE_RECORDS), "Message": len(sent), "Draft": len(replies), "Review": len(replies)}
    with db.session_scope(store_url) as session:
        decisions = Counter(session.execute(select(Review.decision)).scalars())
        assert decisions == Counter(turn.get("decision", "approved") for turn in replies)
        assert set(session.execute(select(Review.agent_id)).scalars()) == {"import"}

        edited = next(r for r in SAMPLE_RECORDS if len(r["messages"]) > 2 and r["messages"][1].get("decision") == "edited")
        conversation = recorder.find_conversation(session, edited["channel"], edited["external_id"])
        assert conversation.source == "sample" and conversation.status == ConversationStatus.CLOSED
        assert conversation.created_at.isoformat().replace("+00:00", "Z") == edited["created_at"]
        transcript = recorder.transcript(session, conversation.id)
        assert [(str(m.role), m.content) for m in transcript] == [(t["role"], t["content"]) for t in edited["messages"]]
        draft = session.get(Draft, transcript[1].draft_id)
        review = session.execute(select(Review).where(Review.draft_id == draft.id)).scalar_one()
        assert draft.content == edited["messages"][1]["draft"] and review.final_text == edited["messages"][1]["content"]
        assert review.decision == ReviewDecision.EDITED and 0 < review.edit_distance <= 1


def test_reimporting_the_same_file_adds_nothing_twice(store_url: str) -> None:
    import_file(SAMPLE_PATH, url=store_url)
    before = count_rows(store_url)
    again = import_file(SAMPLE_PATH, url=store_url)
    assert (again.added, again.messages, again.duplicates) == (0, 0, len(SAMPLE_RECORDS))
    assert count_rows(store_url) == before


# --- other formats ----------------------------------------------------------------------------------------------


def test_openai_chat_and_prompt_completion_files_import_as_agent_approved_replies(store_url: str, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            chat(("system", "You are a bot."), ("user", "Is the MegaGadget waterproof?"), ("assistant", "Yes, up to 1 m!")),
            {"prompt": "Does the NanoCharger fit in a pocket?", "completion": "It does, it's tiny!"},
        ],
    )
    report = import_file(path, channel="zendesk", url=store_url)

    assert (report.added, report.messages, report.system_messages_dropped, report.errors) == (2, 4, 1, [])
    with db.session_scope(store_url) as session:
        conversations = session.execute(select(Conversation).order_by(Conversation.id)).scalars().all()
        assert [c.channel for c in conversations] == ["zendesk", "zendesk"]
        transcripts = [[(m.role, m.content) for m in recorder.transcript(session, c.id)] for c in conversations]
        reviews = session.execute(select(Review)).scalars().all()
    assert transcripts == [
        [(Role.USER, "Is the MegaGadget waterproof?"), (Role.ASSISTANT, "Yes, up to 1 m!")],
        [(Role.USER, "Does the NanoCharger fit in a pocket?"), (Role.ASSISTANT, "It does, it's tiny!")],
    ]
    assert {(r.decision, r.agent_id, r.edit_distance) for r in reviews} == {(ReviewDecision.APPROVED, "import", 0.0)}


def test_rejected_draft_without_a_reply_is_kept_but_never_shown_to_the_customer(store_url: str, tmp_path: Path) -> None:
    record = {
        "external_id": "t-1",
        "channel": "email",
        "created_at": "2026-02-03T04:05:06+01:00",
        "messages": [
            {"role": "user", "content": "free gift cards!!!"},
            {"role": "assistant", "content": None, "draft": "Thanks! How can I help?", "decision": "rejected", "agent_id": "alice"},
            {"role": "user", "content": "My HyperDongle is slow."},
            {"role": "assistant", "content": "Try a blue USB 3.0 port!", "draft": "Check your port.", "decision": "edited"},
        ],
    }
    assert import_file(write_jsonl(tmp_path / "h.jsonl", [record]), url=store_url).messages == 3
    with db.session_scope(store_url) as session:
        conversation = recorder.find_conversation(session, "email", "t-1")
        drafts = session.execute(select(Draft).order_by(Draft.id)).scalars().all()
        reviews = session.execute(select(Review).order_by(Review.id)).scalars().all()
        transcript = [(m.position, m.content) for m in recorder.transcript(session, conversation.id)]
    assert conversation.created_at.isoformat() == "2026-02-03T03:05:06+00:00"
    # the same slots the live recorder gives: the unsent draft's slot goes to the customer's next message
    assert transcript == [(0, "free gift cards!!!"), (1, "My HyperDongle is slow."), (2, "Try a blue USB 3.0 port!")]
    assert [(d.position, d.content) for d in drafts] == [(1, "Thanks! How can I help?"), (2, "Check your port.")]
    assert [(r.decision, r.final_text, r.reason) for r in reviews] == [
        (ReviewDecision.REJECTED, None, "imported; agent alice"),
        (ReviewDecision.EDITED, "Try a blue USB 3.0 port!", "imported"),
    ]


# --- bad input --------------------------------------------------------------------------------------------------

GOOD = chat(("user", "Where is my MegaGadget?"), ("assistant", "It ships today!"))
BAD_LINES = {
    2: ("{not json", "invalid JSON"),
    3: (json.dumps({"question": "hi", "answer": "hello"}), "unknown record shape"),
    4: (json.dumps(chat(("user", "Hello?"), ("assistant", "   "))), "must not be empty"),
    5: (json.dumps(chat(("assistant", "Hi!"), ("user", "Hello?"))), "bad role order"),
    6: (json.dumps(chat(("user", "Anyone there?"))), "no assistant turn"),
    7: (json.dumps({"prompt": "Hi", "completion": "Hello!", "messages": 3}), "messages"),
    9: (json.dumps({"external_id": "x", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "draft": "Hey"}]}), "use 'edited'"),
}


def test_bad_lines_are_reported_by_number_and_good_lines_still_land(store_url: str, tmp_path: Path) -> None:
    lines = [json.dumps(GOOD), *(BAD_LINES[n][0] for n in range(2, 8)), json.dumps(GOOD), BAD_LINES[9][0], "", json.dumps({"prompt": "Hi", "completion": "Hello!"})]
    report = import_file(write_jsonl(tmp_path / "mixed.jsonl", lines), url=store_url)

    assert [error.line for error in report.errors] == sorted(BAD_LINES)
    for error in report.errors:
        assert BAD_LINES[error.line][1] in error.reason and "\n" not in error.reason
    assert (report.added, report.duplicates) == (2, 1)  # line 8 repeats line 1
    assert count_rows(store_url)["Conversation"] == 2


def test_a_line_repeated_far_down_a_large_file_is_one_duplicate(store_url: str, tmp_path: Path) -> None:
    """The import keeps no hash of the whole file (flat memory at a million lines): a repeat of a line from an
    earlier batch is found in the store, where that batch already is."""
    distinct = [{"prompt": f"Where is order GC-{n:07d}?", "completion": f"Order GC-{n:07d} ships today."}
                for n in range(BATCH_SIZE + 20)]
    lines = [*distinct, distinct[0], distinct[BATCH_SIZE + 3], distinct[BATCH_SIZE + 3]]
    report = import_file(write_jsonl(tmp_path / "large.jsonl", lines), url=store_url)

    assert (report.added, report.duplicates, report.errors) == (len(distinct), 3, [])
    assert count_rows(store_url)["Conversation"] == len(distinct)


def test_strict_import_refuses_the_whole_file_and_leaves_the_store_unchanged(store_url: str, tmp_path: Path) -> None:
    import_file(write_jsonl(tmp_path / "first.jsonl", [GOOD]), url=store_url)
    before = count_rows(store_url)
    path = write_jsonl(tmp_path / "second.jsonl", [chat(("user", "New question"), ("assistant", "New answer")), "{oops"])
    with pytest.raises(ImportRefused, match="line 2: invalid JSON") as refused:
        import_file(path, strict=True, url=store_url)
    assert [error.line for error in refused.value.report.errors] == [2]
    assert count_rows(store_url) == before


def test_an_external_id_already_used_by_other_content_is_a_bad_line(housestyle_home: Path, tmp_path: Path) -> None:
    record = {"external_id": "gc-1", "channel": "web", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    url = open_store(get_settings().resolved_database_url)
    import_file(write_jsonl(tmp_path / "a.jsonl", [record]), url=url)
    record["messages"][1]["content"] = "Hello there!"
    report = import_file(write_jsonl(tmp_path / "b.jsonl", [record]), url=url)
    assert report.added == 0 and "'gc-1' on channel 'web' is already stored" in report.errors[0].reason


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("folder", "is a folder"), (b"\n  \n", "is empty"), (b'{"prompt": "caf\xe9"}\n', "not UTF-8")],
)
def test_unusable_files_fail_in_one_line_and_leave_the_store_unchanged(
    housestyle_home: Path, tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "input.jsonl"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        import_file(path, url=get_settings().resolved_database_url)
    assert "\n" not in str(info.value)
    assert not (housestyle_home / "housestyle.db").exists()


def test_file_records_explain_what_is_wrong_with_a_turn() -> None:
    with pytest.raises(RecordError, match="rejected assistant turn needs the draft"):
        parse_record(json.dumps({"external_id": "a", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "decision": "rejected"}]}))
    with pytest.raises(RecordError, match="user turn cannot have decision"):
        parse_record(json.dumps({"external_id": "a", "messages": [{"role": "user", "content": "Hi", "decision": "edited"}]}))
    with pytest.raises(RecordError, match="Extra inputs"):
        parse_record(json.dumps({"external_id": "a", "messages": [{"role": "user", "content": "Hi", "decison": "x"}]}))
    unchanged_edit = parse_record(json.dumps({"external_id": "a", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "draft": "Yo", "decision": "edited"}]}))
    assert isinstance(unchanged_edit, HouseStyleRecord) and unchanged_edit.messages[1].decision == "approved"
    # the exporter writes the company prompt first: a chat record may open with a system message
    assert isinstance(parse_record(json.dumps(chat(("system", "Be kind."), ("user", "Hi"), ("assistant", "Hello!")))), ChatRecord)


def test_a_hostile_line_is_one_bad_line_with_a_reason_and_the_rest_of_the_file_lands(
    housestyle_home: Path, tmp_path: Path
) -> None:
    nested = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    too_long = chat(("user", "x" * 20_001), ("assistant", "Hello!"))
    long_draft = {"external_id": "d", "messages": [{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "ok", "draft": "y" * 20_001,
                                                    "decision": "edited"}]}
    at_the_limit = chat(("user", "z" * 20_000), ("assistant", "Hello!"))
    # U+2028 inside a JSON string is legal and must not split the record into two lines
    separator = json.dumps(chat(("user", "line one\u2028line two\x85"), ("assistant", "Hello!")), ensure_ascii=False)
    assert "\u2028" in separator
    path = write_jsonl(tmp_path / "hostile.jsonl", [GOOD, nested, too_long, long_draft, at_the_limit, separator])

    report = import_file(path, url=open_store(get_settings().resolved_database_url))

    assert [(error.line, error.reason) for error in report.errors] == [
        (2, "invalid JSON: nested too deeply (a record is an object holding a list of messages)"),
        (3, "message 1 is 20,001 characters long; the longest accepted is 20,000 (split it, or raise "
            "HOUSESTYLE_MAX_MESSAGE_CHARS)"),
        (4, "the draft of message 2 is 20,001 characters long; the longest accepted is 20,000 (split it, or raise "
            "HOUSESTYLE_MAX_MESSAGE_CHARS)"),
    ]
    assert report.added == 3
    with db.session_scope(get_settings().resolved_database_url) as session:
        assert session.execute(select(Message.content).where(Message.content.like("line one%"))).scalar_one() == (
            "line one\u2028line two\x85")


def test_the_cli_reports_a_deeply_nested_or_huge_line_without_a_traceback(tmp_path: Path) -> None:
    nested = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    huge = chat(("user", "x" * 50_000_000), ("assistant", "Hello!"))  # the 50 MB message that cost 2.6 GB later
    path = write_jsonl(tmp_path / "hostile.jsonl", [GOOD, nested, huge])
    result = housestyle("import", str(path), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[:2] == [
        "line 2: invalid JSON: nested too deeply (a record is an object holding a list of messages)",
        # issue 28: a line this long is refused before it is read whole (HOUSESTYLE_IMPORT_MAX_LINE_BYTES)
        f"line 3: line is {len(json.dumps(huge).encode()):,} bytes, over the 2,000,000-byte limit; not read (split "
        "the conversation, or raise HOUSESTYLE_IMPORT_MAX_LINE_BYTES)",
    ]
    assert result.stdout.strip() == "imported 1 conversations (2 messages), 0 already present, 2 bad lines"
    # the limit is a setting
    env_limit = housestyle("import", "--strict", str(write_jsonl(tmp_path / "long.jsonl", [chat(("user", "x" * 30), ("assistant", "ok"))])),
                           home=tmp_path / "limited", extra_env={"HOUSESTYLE_MAX_MESSAGE_CHARS": "20"})
    assert env_limit.returncode == 1 and "the longest accepted is 20 " in env_limit.stderr


# --- the CLI ------------------------------------------------------------------------------------------------------


def housestyle(*args: str, home: Path, database_url: str | None = None,
               extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOUSESTYLE_HOME": str(home), **(extra_env or {})}
    env.pop("HOUSESTYLE_DATABASE_URL", None)
    if database_url:
        env["HOUSESTYLE_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "plugin.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_imports_the_sample_and_prints_a_summary(tmp_path: Path) -> None:
    first = housestyle("import", "--sample", home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().startswith(f"imported {len(SAMPLE_RECORDS)} conversations (")
    assert first.stdout.strip().endswith("0 already present, 0 bad lines")
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD, "{oops"])
    loose = housestyle("import", str(bad), home=tmp_path)
    assert loose.returncode == 0 and "line 2: invalid JSON" in loose.stderr and "1 bad lines" in loose.stdout
    strict = housestyle("import", "--strict", str(bad), home=tmp_path)
    assert strict.returncode == 1 and "nothing was imported" in strict.stderr and "Traceback" not in strict.stderr


@pytest.mark.parametrize(
    ("args", "database_url", "message"),
    [
        (["import", "missing.jsonl"], None, "error: missing.jsonl does not exist"),
        (["import", "--sample"], "postgresql://x@127.0.0.1:1/x", "error: cannot reach the store at"),
    ],
    ids=["missing-file", "unreachable-postgres"],
)
def test_cli_failures_are_one_line_errors_with_non_zero_exit(tmp_path: Path, args: list[str], database_url: str | None, message: str) -> None:
    result = housestyle(*args, home=tmp_path, database_url=database_url)
    assert result.returncode == 1
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
