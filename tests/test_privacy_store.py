"""Privacy in the store: redaction at ingest (whole conversations, values spread to agents' replies, the platform's
known values), export reading only redacted text, the retention period, and erasing a customer everywhere."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from collector import recorder
from collector.export import ExportOptions, export_dataset
from collector.pii.erasure import forget, purge_expired_raw
from core.db import session_scope
from core.errors import InputError
from core.models import AuditEvent, Conversation, Draft, Message, Review, Role, utcnow
from core.registry import register_adapter
from core.settings import get_settings
from plugin.cli import app
from tests.fixtures.service import chatwoot_event
from tests.fixtures.stores import redact_store


def exchange(url: str, turns: list[tuple[str, str]], *, known: dict | None = None, **start) -> int:
    """A conversation of (customer, agent's reply) turns, recorded as the live path records them."""
    with session_scope(url) as session:
        conversation_id = recorder.start_conversation(session, known_values=known, **start).id
        for customer, reply in turns:
            recorder.add_message(session, conversation_id, Role.USER, customer)
            draft = recorder.record_draft(session, conversation_id, "Let me check that for you.")
            recorder.record_review(session, draft.id, "edited", agent_id="ana", final_text=reply)
    return conversation_id


def texts(url: str, conversation_id: int) -> tuple[list[str], list[str]]:
    """(raw, redacted) transcript of a conversation."""
    with session_scope(url) as session:
        rows = session.execute(select(Message.content, Message.redacted_content).where(
            Message.conversation_id == conversation_id).order_by(Message.position)).all()
    return [raw for raw, _ in rows], [redacted for _, redacted in rows]


def export(tmp_path: Path, name: str = "out") -> list[dict]:
    export_dataset(ExportOptions(out=tmp_path / name, ratios={"train": 1, "validation": 0, "test": 0}),
                   settings=get_settings(), progress=False)
    return [json.loads(line) for line in (tmp_path / name / "train.jsonl").read_text().splitlines()]


def test_a_value_found_once_is_replaced_everywhere_in_its_conversation_and_the_raw_text_stays_beside_it(
    store_url: str, tmp_path: Path
) -> None:
    conversation = exchange(store_url, [
        ("hi, my name is albert sanders and my username is asanders1", "Thanks Albert! What happened?"),
        ("i can't log in anymore", "Sorry, albert. I've reset the password for asanders1."),
    ])
    redact_store(store_url)
    raw, redacted = texts(store_url, conversation)
    assert "asanders1" in raw[0] and "albert sanders" in raw[0]  # the store of record keeps what was said
    assert redacted[0] == "hi, my name is <PERSON_1> and my username is <USERNAME_1>"
    assert redacted[3] == "Sorry, <PERSON_1>. I've reset the password for <USERNAME_1>."
    [record] = export(tmp_path)
    body = json.dumps(record)
    assert "albert" not in body.lower() and "asanders1" not in body
    with session_scope(store_url) as session:
        placeholders = session.get(Conversation, conversation).placeholders
    assert placeholders["<USERNAME_1>"] == "asanders1" and placeholders["<PERSON_1>"].lower() == "albert sanders"


def test_export_refuses_texts_not_redacted_yet_and_says_how_to_finish(store_url: str, tmp_path: Path) -> None:
    exchange(store_url, [("my email is crystal.minh@example.com", "Thanks, I'll write to you there.")])
    with pytest.raises(InputError, match=r"^3 texts of these conversations are not redacted yet; run `housestyle "
                                         r"redact`"):
        export(tmp_path)
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["redact"])
    assert result.exit_code == 0 and "redacted 1 conversations" in result.output, result.output
    [record] = export(tmp_path)
    assert record["messages"][1]["content"] == "my email is <EMAIL_1>"


def test_the_platforms_known_values_are_redacted_exactly_wherever_they_appear(
    store_url: str, start_service, tmp_path: Path
) -> None:
    service = start_service(chatwoot_webhook_token="secret")
    event = chatwoot_event("hey, crystal here. my number is 383 730 0068, call me", "incoming")
    event["sender"].update({"name": "Crystal Minh", "email": "cminh730@example.com", "phone_number": "+13837300068"})
    answer = service.client().post("/chatwoot/webhook", params={"token": "secret"}, json=event)
    assert answer.status_code == 200, answer.text
    with session_scope(store_url) as session:
        conversation = session.execute(select(Conversation).where(Conversation.channel == "chatwoot")).scalar_one()
    assert conversation.known_values == {"name": "Crystal Minh", "email": "cminh730@example.com",
                                         "phone": "+13837300068"}
    service.app.state.redaction_worker.run_once()  # the service's own worker, one pass
    _, redacted = texts(store_url, conversation.id)
    assert redacted == ["hey, <PERSON_1> here. my number is <PHONE_1>, call me"]


def test_raw_text_older_than_the_retention_period_is_replaced_by_its_redacted_form(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = exchange(store_url, [("i'm dana at dana.k@example.com", "Hi Dana, got it.")],
                   known={"email": "dana.k@example.com"})
    recent = exchange(store_url, [("i'm eli at eli@example.com", "Hi Eli, got it.")])
    redact_store(store_url)
    with session_scope(store_url) as session:
        session.execute(update(Conversation).where(Conversation.id == old).values(
            created_at=utcnow() - timedelta(days=40)))
    monkeypatch.setenv("HOUSESTYLE_RAW_RETENTION_DAYS", "30")
    get_settings.cache_clear()

    assert purge_expired_raw(store_url, get_settings(), actor="test") == 1

    assert texts(store_url, old)[0] == ["i'm <PERSON_1> at <EMAIL_1>", "Hi <PERSON_1>, got it."]
    assert texts(store_url, recent)[0][0] == "i'm eli at eli@example.com"
    with session_scope(store_url) as session:
        purged = session.get(Conversation, old)
        finals = session.execute(select(Review.final_text).join(Draft, Draft.id == Review.draft_id).where(
            Draft.conversation_id == old)).scalars().all()
        audit = session.execute(select(AuditEvent).where(AuditEvent.action == "purge-raw")).scalar_one()
    assert purged.known_values is None and purged.placeholders is None and purged.raw_purged_at is not None
    assert finals == ["Hi <PERSON_1>, got it."]
    assert audit.detail == {"conversations": 1, "older_than_days": 30.0}
    assert purge_expired_raw(store_url, get_settings(), actor="test") == 0  # once only


def test_forget_deletes_a_customer_everywhere_and_names_the_adapters_trained_on_them(
    store_url: str, tmp_path: Path
) -> None:
    theirs = exchange(store_url, [("please cancel, my email is Pat.Doe@Example.com", "Done, Pat.")])
    known = exchange(store_url, [("cancel my order please", "Done!")], known={"email": "pat.doe@example.com"})
    other = exchange(store_url, [("where is my parcel?", "On its way!")])
    redact_store(store_url)
    export(tmp_path, "training")
    with session_scope(store_url) as session:
        register_adapter(session, version="v0001-aaaaaaaa", path="/adapters/1", base_model="base", rank=8,
                         manifest={"dataset": str(tmp_path / "training")})
        register_adapter(session, version="v0002-bbbbbbbb", path="/adapters/2", base_model="base", rank=8,
                         manifest={"dataset": str(tmp_path / "gone")})

    preview = forget(store_url, actor="dpo", dry_run=True, email="pat.doe@EXAMPLE.com")
    assert not preview.deleted and len(preview.conversations) == 2

    result = CliRunner().invoke(app, ["forget", "--email", "pat.doe@example.com"])

    assert result.exit_code == 0, result.output
    assert "deleted 2 conversations (4 messages)" in result.output
    assert "trained on them: v0001-aaaaaaaa" in result.output and "no longer on disk for: v0002-bbbbbbbb" in result.output
    with session_scope(store_url) as session:
        left = set(session.execute(select(Conversation.id)).scalars())
        drafts = session.execute(select(func.count()).select_from(Draft).where(
            Draft.conversation_id.in_([theirs, known]))).scalar_one()
        audit = session.execute(select(AuditEvent).where(AuditEvent.action == "forget")).scalar_one()
    assert left == {other} and drafts == 0
    assert audit.detail["conversations"] == 2 and "pat" not in json.dumps(audit.detail).lower()
    assert re.fullmatch(r"[0-9a-f]{64}", audit.detail["subject_sha256"])
    [record] = export(tmp_path, "after")  # the next export (and so the next refresh) no longer has them
    assert "parcel" in record["messages"][1]["content"]


def test_forget_by_phone_in_any_format_and_by_conversation_id(store_url: str) -> None:
    by_phone = exchange(store_url, [("call me on (415) 555-0134 please", "Will do.")])
    by_id = exchange(store_url, [("hello", "Hi!")], external_id="chat 77", channel="web")
    redact_store(store_url)
    phone_name = f"web/{conversation_external_id(store_url, by_phone)}"
    assert forget(store_url, actor="dpo", phone="+1 415 555 0134").conversations == [phone_name]
    with session_scope(store_url) as session:
        assert session.get(Conversation, by_phone) is None
    assert forget(store_url, actor="dpo", conversation="chat 77").conversations == ["web/chat 77"]
    with session_scope(store_url) as session:
        assert session.get(Conversation, by_id) is None
    with pytest.raises(InputError, match="fewer than 7 digits"):
        forget(store_url, actor="dpo", phone="0134")
    with pytest.raises(InputError, match="exactly one of"):
        forget(store_url, actor="dpo", email="a@b.c", phone="4155550134")


def conversation_external_id(url: str, conversation_id: int) -> str:
    with session_scope(url) as session:
        return session.get(Conversation, conversation_id).external_id
