"""Exporting training data: agents' final texts only, rejected and pending turns left out, PII redacted,
duplicates and macro copies capped, a deterministic split by conversation, and an atomic folder with a manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from collector import recorder
from collector.export import ExportManifest, ExportOptions, export_dataset
from collector.formats import ChatRecord, PromptCompletionRecord
from collector.importer import import_file
from collector.sample import SAMPLE_PATH
from collector.split import SplitRatios
from core import db
from core.errors import InputError, StoreError
from core.models import ReplyMode
from core.settings import get_settings
from tests.fixtures.stores import redact_store
from trainer.chat_format import END_TAG
from trainer.model_loading import load_tokenizer

SYSTEM = get_settings().system_prompt


def reviewed_exchange(
    session: Session, conversation_id: int, customer: str, draft: str, decision: str = "approved", final: str | None = None
) -> None:
    """A customer turn, the assistant's draft, and what the agent did with it."""
    recorder.add_message(session, conversation_id, "user", customer)
    draft_row = recorder.record_draft(session, conversation_id, draft)
    recorder.record_review(session, draft_row.id, decision, agent_id="alice", final_text=final)


def conversation(session: Session, *exchanges: tuple[str, ...], external_id: str | None = None, **kwargs) -> int:
    row = recorder.start_conversation(session, external_id=external_id, **kwargs)
    for exchange in exchanges:
        reviewed_exchange(session, row.id, *exchange)
    return row.id


def export(out: Path, **options) -> ExportManifest:
    """Redact what arrived (the service's worker would have), then export."""
    redact_store(get_settings().resolved_database_url)
    return export_dataset(ExportOptions(out=out, **options), settings=get_settings(), progress=False)


@pytest.fixture
def served_base(tiny_base: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOUSESTYLE_BASE_MODEL: the base whose chat template a prompt-completion export renders prompts with."""
    monkeypatch.setenv("HOUSESTYLE_BASE_MODEL", str(tiny_base))
    get_settings.cache_clear()
    return tiny_base


def lines(folder: Path, split: str | None = None) -> list[dict]:
    splits = [split] if split else ["train", "validation", "test"]
    return [json.loads(line) for name in splits for line in (folder / f"{name}.jsonl").read_text().splitlines()]


def test_agent_edit_becomes_the_training_example(store_url: str, tmp_path: Path) -> None:
    with db.session_scope(store_url) as session:
        conversation(
            session,
            ("My SuperWidget is dead.", "Try charging it.", "edited", "I'm so sorry! Hold the power button for 10 s."),
            ("That worked, thanks", "Great!", "approved"),
        )
    manifest = export(tmp_path / "out")
    [record] = lines(tmp_path / "out")
    assert record["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "My SuperWidget is dead."},
        {"role": "assistant", "content": "I'm so sorry! Hold the power button for 10 s."},
        {"role": "user", "content": "That worked, thanks"},
        {"role": "assistant", "content": "Great!"},
    ]
    assert "Try charging it." not in "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    assert manifest.total_conversations == 1
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["content_sha256"] == manifest.content_sha256


def test_rejected_reply_is_dropped_with_the_question_it_answered(store_url: str, tmp_path: Path) -> None:
    with db.session_scope(store_url) as session:
        conversation(
            session,
            ("Hi, my order is late", "It shipped.", "approved"),
            ("Can I get a refund?", "No refunds, ever.", "rejected"),  # nothing sent
            ("Hello??", "Sorry, you can have one.", "rejected", "Of course - I've started your refund."),  # from scratch
            ("Thanks!", "You're welcome!", "approved"),
        )
        conversation(session, ("Only this?", "Bad draft", "rejected"))
    manifest = export(tmp_path / "out")
    [record] = lines(tmp_path / "out")
    assert [m["content"] for m in record["messages"][1:]] == [
        "Hi, my order is late", "It shipped.", "Thanks!", "You're welcome!"
    ]
    assert manifest.dropped_turns == {"rejected reply": 3}
    assert manifest.dropped_conversations == {"no kept reply": 1}
    # keeping rejected decisions exports the agents' from-scratch replies, never the rejected drafts
    export(tmp_path / "all", decisions=["approved", "edited", "rejected"])
    texts = [m["content"] for r in lines(tmp_path / "all") for m in r["messages"]]
    assert "Of course - I've started your refund." in texts and "Sorry, you can have one." not in texts


def test_conversation_waiting_for_review_is_skipped(store_url: str, tmp_path: Path) -> None:
    with db.session_scope(store_url) as session:
        conversation(session, ("Where is my parcel?", "On its way!", "approved"))
        waiting = conversation(session, ("Is it waterproof?", "Yes, IP68.", "approved"))
        recorder.add_message(session, waiting, "user", "Even in salt water?")
        recorder.record_draft(session, waiting, "Rinse it afterwards.")  # assist mode: not sent, not reviewed
        auto = conversation(session, mode=ReplyMode.AUTO)
        recorder.add_message(session, auto, "user", "Do you ship to Canada?")
        recorder.record_draft(session, auto, "Yes we do.")  # auto mode: sent, still to be reviewed
    manifest = export(tmp_path / "out")
    assert manifest.dropped_conversations == {"pending review": 2}
    assert [r["messages"][1]["content"] for r in lines(tmp_path / "out")] == ["Where is my parcel?"]


@pytest.fixture
def sample_store(store_url: str) -> str:
    """The bundled sample, imported and redacted (what `housestyle import --sample` does)."""
    import_file(SAMPLE_PATH, url=store_url)
    redact_store(store_url)
    return store_url


def test_every_exported_line_passes_the_format_rules(sample_store: str, served_base: Path, tmp_path: Path) -> None:
    chat = export(tmp_path / "chat")
    records = lines(tmp_path / "chat")
    assert len(records) == chat.total_conversations > 50
    for record in records:
        assert set(record) == {"messages"}
        ChatRecord.model_validate(record)
        assert record["messages"][0] == {"role": "system", "content": SYSTEM}
        for message in record["messages"]:
            assert set(message) <= {"role", "content", "name"} and message["content"].strip()
    completions = export(tmp_path / "pc", format="prompt-completion")
    pairs = lines(tmp_path / "pc")
    assert len(pairs) == sum(completions.records.values()) == sum(
        (len(r["messages"]) - 1) // 2 for r in records
    )
    for pair in pairs:
        PromptCompletionRecord.model_validate(pair)
    # each line is a chat record's reply: the served base's chat template of the messages before it (what vLLM is
    # sent), then the reply and its end-of-turn marker
    tokenizer = load_tokenizer(served_base)
    replies = {(tokenizer.apply_chat_template(record["messages"][:end], tokenize=False, add_generation_prompt=True),
                record["messages"][end]["content"] + END_TAG)
               for record in records for end in range(2, len(record["messages"]), 2)}
    assert {(pair["prompt"], pair["completion"]) for pair in pairs} == replies
    assert completions.conversations == chat.conversations


def test_split_is_deterministic_and_never_splits_a_conversation(store_url: str, served_base: Path, tmp_path: Path
                                                                ) -> None:
    with db.session_scope(store_url) as session:
        for number in range(60):
            conversation(
                session,
                (f"Question {number} about gadget model {number * 7}", f"Answer {number} one"),
                (f"Follow-up on topic {number} of mine", f"Answer {number} two"),
                external_id=f"c{number}",
            )
    first = export(tmp_path / "a", format="prompt-completion", seed=1)
    again = export(tmp_path / "b", format="prompt-completion", seed=1)
    other = export(tmp_path / "c", format="prompt-completion", seed=2)
    for split in ("train", "validation", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    assert first.content_sha256 == again.content_sha256 != other.content_sha256
    owners: dict[str, set[str]] = {}
    for split in ("train", "validation", "test"):
        for pair in lines(tmp_path / "a", split):
            number = pair["prompt"].split("Question ")[1].split(" ")[0]
            owners.setdefault(number, set()).add(split)
    assert len(owners) == 60 and all(len(splits) == 1 for splits in owners.values())
    assert first.conversations["train"] > first.conversations["validation"] > 0 and first.conversations["test"] > 0
    # a time hold-out sends everything from then on to test; since/until and channels filter first
    later = datetime.now(UTC) - timedelta(hours=1)
    held = export(tmp_path / "d", holdout_after=later)
    assert held.conversations == {"train": 0, "validation": 0, "test": 60}
    assert export(tmp_path / "e", until=later).total_conversations == 0
    assert export(tmp_path / "f", since=later, channels=["web"]).total_conversations == 60
    assert export(tmp_path / "g", channels=["email"]).total_conversations == 0


def test_redaction_replaces_pii_with_placeholders(store_url: str, tmp_path: Path) -> None:
    with db.session_scope(store_url) as session:
        conversation(
            session,
            ("I'm ana@example.com, order GC-1048576, call 415-555-0199", "Thanks Ana, I'll email ana@example.com"),
        )
    manifest = export(tmp_path / "out")
    [record] = lines(tmp_path / "out")
    assert record["messages"][1]["content"] == "I'm <EMAIL_1>, order <ORDER_ID_1>, call <PHONE_1>"
    assert record["messages"][2]["content"] == "Thanks <PERSON_1>, I'll email <EMAIL_1>"
    assert {k: v for k, v in manifest.redactions.items() if v} == {"EMAIL": 2, "ORDER_ID": 1, "PHONE": 1, "PERSON": 1}
    assert "PII redacted: 1 PERSON, 2 EMAIL, 1 PHONE, 1 ORDER_ID" in manifest.summary()
    raw = export(tmp_path / "raw", redact=False)
    assert "ana@example.com" in (tmp_path / "raw" / "train.jsonl").read_text() + (tmp_path / "raw" / "test.jsonl").read_text() + (tmp_path / "raw" / "validation.jsonl").read_text()
    assert raw.redactions == {} and "PII redaction: off" in raw.summary()


def test_near_duplicates_and_macro_copies_are_capped(store_url: str, tmp_path: Path) -> None:
    macro = "Thanks for contacting GadgetCorp! An agent will get back to you within 24 hours."
    long_question = (
        "My SuperWidget {} stopped charging after the latest firmware update and the light keeps blinking red "
        "even though I tried three different cables and two wall chargers"
    )
    with db.session_scope(store_url) as session:
        for _ in range(3):  # the same conversation three times (e.g. a webhook delivered twice)
            conversation(session, ("Do you sell gift cards?", "Yes, from $10 to $500 on our website."))
        conversation(session, (long_question.format("Pro"), "Please reset it: hold the button for 10 seconds."))
        conversation(session, (long_question.format("Pro!"), "Please reset it: hold the button for 10 seconds."))
        for number in range(5):
            conversation(session, (f"Question number {number} about topic {number * 13}", macro))
        conversation(session, ("Is my warranty still valid?", macro), ("It's from 2023", "Yes, it runs 2 years."))
    manifest = export(tmp_path / "out", max_macro_copies=2)
    assert manifest.dedup is not None
    assert (manifest.dedup.exact_duplicates, manifest.dedup.near_duplicates, manifest.dedup.macro_copies) == (2, 1, 4)
    assert manifest.dropped_conversations == {"exact duplicate": 2, "near duplicate": 1, "only macro replies over cap": 3}
    texts = [m["content"] for r in lines(tmp_path / "out") for m in r["messages"]]
    assert texts.count(macro) == 2 and "It's from 2023" in texts and "Is my warranty still valid?" not in texts
    kept_all = export(tmp_path / "all", dedup=False)
    assert kept_all.total_conversations == 11 and kept_all.dedup is None


def test_failed_export_leaves_previous_export_intact(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with db.session_scope(store_url) as session:
        conversation(session, ("Hello", "Hi! How can I help?"))
    out = tmp_path / "out"
    first = export(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(InputError, match="is a file"):
        export(a_file)
    assert a_file.read_text() == "mine"
    # the store goes away half-way: the earlier export stays as it was and no temporary folder is left
    monkeypatch.setenv("HOUSESTYLE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    with pytest.raises(StoreError):
        export(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    assert first.total_conversations == 1


def test_hf_export_loads_with_datasets(store_url: str, tmp_path: Path) -> None:
    from datasets import load_from_disk

    with db.session_scope(store_url) as session:
        for number in range(20):
            conversation(session, (f"Customer question {number} on item {number * 3}", f"Agent answer {number} here"))
    manifest = export(tmp_path / "out", format="hf")
    dataset = load_from_disk(str(tmp_path / "out" / "hf"))
    assert set(dataset) == {"train", "validation", "test"}
    assert {name: len(split) for name, split in dataset.items()} == manifest.conversations
    row = dataset["train"][0]
    assert row["messages"][0] == {"role": "system", "content": SYSTEM} and row["messages"][-1]["role"] == "assistant"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["conversation_ids.tsv", "hf", "manifest.json"]
    export(tmp_path / "all-train", format="hf", ratios=SplitRatios(train=1, validation=0, test=0))
    dataset = load_from_disk(str(tmp_path / "all-train" / "hf"))
    assert (len(dataset["train"]), len(dataset["validation"]), len(dataset["test"])) == (20, 0, 0)


def test_cli_prints_the_summary_and_one_line_errors(sample_store: str, served_base: Path, tmp_path: Path) -> None:
    housestyle = Path(sys.executable).parent / "housestyle"
    env = {**os.environ, "HOUSESTYLE_DATABASE_URL": sample_store}
    done = subprocess.run(
        [str(housestyle), "export", "--format", "prompt-completion", "--out", str(tmp_path / "out"), "--seed", "3"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    manifest = ExportManifest.model_validate_json((tmp_path / "out" / "manifest.json").read_text())
    assert done.stdout.strip() == manifest.summary()
    assert manifest.options["seed"] == 3 and "exported" in done.stdout and "duplicates removed" in done.stdout
    bad = subprocess.run(
        [str(housestyle), "export", "--format", "parquet", "--out", str(tmp_path / "bad")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: unknown format 'parquet'")
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    no_base = subprocess.run(  # prompt-completion renders with the served base's chat template: none, no export
        [str(housestyle), "export", "--format", "prompt-completion", "--out", str(tmp_path / "no-base")],
        capture_output=True, text=True, env={**env, "HOUSESTYLE_BASE_MODEL": str(tmp_path / "models" / "base")},
        timeout=300,
    )
    assert no_base.returncode == 1 and no_base.stderr.startswith(f"error: there is no base model at {tmp_path}")
    assert len(no_base.stderr.strip().splitlines()) == 1 and not (tmp_path / "no-base").exists()
