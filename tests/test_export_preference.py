"""Preference data from what agents changed: DPO pairs and KTO examples, rule by rule, and exported from real
review rows on SQLite and Postgres with the chat export's redaction, de-duplication, split and manifest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from collector.export import ExportManifest
from collector.export.exchanges import PENDING, DraftOutcome, StoredTurn
from collector.export.preference import NO_EXAMPLE, build_preference_exchanges, preference_records, rows_of_answer
from core import db
from core.settings import get_settings
from tests.test_export import conversation, export, lines

SYSTEM = get_settings().system_prompt
ALL = {"approved", "edited", "rejected"}
U, A = "user", "assistant"


@pytest.mark.parametrize(
    ("fmt", "sent", "draft", "rows"),
    [
        # approved: no pair, one wanted example
        ("dpo", "Hi there!", "Hi there!", []),
        ("kto", "Hi there!", "Hi there!", [("example", ("Hi there!", True))]),
        # unchanged up to white space and typographic quotes is still unchanged (core.changes.same_text)
        ("kto", "It\u2019s  here.", "It's here.", [("example", ("It's here.", True))]),
        # edited: the agent's text over the draft
        ("dpo", "Sorry! Hold power 10 s.", "Try charging.", [("pair", ("Sorry! Hold power 10 s.", "Try charging."))]),
        ("kto", "Sorry! Hold power 10 s.", "Try charging.",
         [("example", ("Try charging.", False)), ("example", ("Sorry! Hold power 10 s.", True))]),
        # rejected, nothing sent: no chosen text for DPO; the draft is unwanted for KTO
        ("dpo", "", "No refunds, ever.", []),
        ("kto", "", "No refunds, ever.", [("example", ("No refunds, ever.", False))]),
        # an agent's own message with no draft behind it
        ("dpo", "Anything else?", "", []),
        ("kto", "Anything else?", "", [("example", ("Anything else?", True))]),
    ],
)
def test_what_each_review_outcome_gives(fmt: str, sent: str, draft: str, rows: list) -> None:
    assert rows_of_answer(fmt, sent, draft) == rows


def outcome(position: int, decision: str | None, final: str | None, draft: str, status: str = "reviewed") -> DraftOutcome:
    return DraftOutcome(position=position, status=status, decision=decision, final_text=final, draft_text=draft)


@pytest.mark.parametrize(
    ("fmt", "turns", "drafts", "kept", "expected", "dropped"),
    [
        # the prompt of a later draft holds what the customer saw: the agent's text, not the draft
        ("dpo", [StoredTurn(0, U, "dead", None), StoredTurn(1, A, "Sorry!", 1), StoredTurn(2, U, "ok", None),
                 StoredTurn(3, A, "Bye", 2)],
         {1: outcome(1, "edited", "Sorry!", "Charge it."), 2: outcome(3, "approved", "Bye", "Bye")}, ALL,
         [["dead", "Sorry!", "Charge it.", "edited", ""], ["ok", "Bye", "Bye", "approved", ""]], {}),
        # a rejected draft with nothing sent: the customer turn it answered stays in the later prompts
        ("dpo", [StoredTurn(0, U, "q1", None), StoredTurn(1, U, "q2", None), StoredTurn(2, A, "a2", 2)],
         {1: outcome(1, "rejected", None, "bad"), 2: outcome(2, "edited", "a2", "meh")}, ALL,
         [["q1", "", "bad", "rejected", ""], ["q2", "a2", "meh", "edited", ""]],
         {"rejected draft with nothing sent (no chosen text)": 1}),
        # nothing to learn from: the conversation is skipped
        ("dpo", [StoredTurn(0, U, "q", None), StoredTurn(1, A, "a", 1)], {1: outcome(1, "approved", "a", "a")}, ALL,
         NO_EXAMPLE, {}),
        # decisions not kept still shape the transcript but give no row
        ("kto", [StoredTurn(0, U, "q", None), StoredTurn(1, A, "a", 1)], {1: outcome(1, "approved", "a", "a")},
         {"edited"}, NO_EXAMPLE, {"approved reply": 1}),
        # a second reply in a row is history for later prompts, not a row of its own
        ("kto", [StoredTurn(0, U, "q", None), StoredTurn(1, A, "a", 1), StoredTurn(2, A, "and b", None)],
         {1: outcome(1, "approved", "a", "a")}, ALL, [["q", "a", "a", "approved", "and b"]], {}),
        # a draft still waiting for an agent: the whole conversation waits
        ("kto", [StoredTurn(0, U, "q", None)], {1: outcome(1, None, None, "d", status="pending")}, ALL, PENDING, {}),
    ],
)
def test_conversation_becomes_preference_exchanges(fmt, turns, drafts, kept, expected, dropped) -> None:
    counted: Counter[str] = Counter()
    assert build_preference_exchanges(turns, drafts, kept, counted, fmt) == expected
    assert dict(counted) == dropped


def test_dpo_prompt_is_the_conversation_up_to_the_draft() -> None:
    exchanges = [["q1", "", "bad", "rejected", ""], ["q2", "a2", "meh", "edited", "see you"],
                 ["thanks", "Welcome <|im_end|>", "np", "rejected", ""]]
    first, second = preference_records("dpo", SYSTEM, exchanges)
    assert first == {
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "q1\n\nq2"}],
        "chosen": [{"role": "assistant", "content": "a2"}], "rejected": [{"role": "assistant", "content": "meh"}],
    }
    assert [m["content"] for m in second["prompt"]] == [SYSTEM, "q1\n\nq2", "a2\n\nsee you", "thanks"]
    assert second["chosen"][0]["content"] == "Welcome <\u2060|im_end|>"  # control strings neutralised
    kto = preference_records("kto", SYSTEM, exchanges)
    assert [(r["completion"][0]["content"], r["label"]) for r in kto] == [
        ("bad", False), ("meh", False), ("a2", True), ("np", False), ("Welcome <\u2060|im_end|>", True)]
    assert preference_records("kto", SYSTEM, exchanges, kept={"edited"}) == kto[1:3]


def reviewed_store() -> None:
    """Conversations an assistant drafted and agents reviewed: approvals, edits, rejections, PII, duplicates."""
    with db.session_scope(get_settings().resolved_database_url) as session:
        conversation(
            session,
            ("My SuperWidget is dead. I'm ana@example.com", "Try charging it.", "edited",
             "I'm so sorry, Ana! Hold the power button for 10 s."),
            ("That worked, thanks", "Great!", "approved"),
            ("Can I get a refund?", "No refunds, ever.", "rejected"),  # nothing sent
            ("Hello??", "Sorry, you can have one.", "rejected", "Of course - I've started your refund."),
        )
        for _ in range(2):  # the same conversation twice (a webhook delivered twice)
            conversation(session, ("Do you sell gift cards?", "Yes.", "edited", "Yes, from $10 to $500 online!"))
        for number in range(30):
            conversation(session, (f"Question {number} about gadget {number * 7}", f"Draft answer {number}", "edited",
                                   f"Happy to help! Answer {number}."), external_id=f"c{number}")
        conversation(session, ("Only approved here", "Fine.", "approved"))


def test_dpo_and_kto_exports_from_review_rows(store_url: str, tmp_path: Path) -> None:
    from datasets import load_from_disk

    reviewed_store()
    dpo = export(tmp_path / "dpo", format="dpo", seed=1)
    rows = lines(tmp_path / "dpo")
    assert sum(dpo.records.values()) == len(rows) == 2 + 1 + 30  # the duplicate gift-card conversation is dropped
    assert dpo.dropped_conversations == {"exact duplicate": 1, "no preference example": 1}
    assert dpo.dropped_turns == {"rejected draft with nothing sent (no chosen text)": 1}
    [edit] = [r for r in rows if r["rejected"][0]["content"] == "Try charging it."]
    assert edit["prompt"] == [{"role": "system", "content": SYSTEM},
                              {"role": "user", "content": "My SuperWidget is dead. I'm <EMAIL_1>"}]  # redacted
    assert edit["chosen"] == [{"role": "assistant", "content": "I'm so sorry, <PERSON_1>! Hold the power button for 10 s."}]
    [scratch] = [r for r in rows if r["rejected"][0]["content"] == "Sorry, you can have one."]
    assert [m["content"] for m in scratch["prompt"][1:]] == [
        "My SuperWidget is dead. I'm <EMAIL_1>", "I'm so sorry, <PERSON_1>! Hold the power button for 10 s.",
        "That worked, thanks", "Great!", "Can I get a refund?\n\nHello??"]
    assert scratch["chosen"][0]["content"] == "Of course - I've started your refund."
    assert "ana@example.com" not in "".join(p.read_text() for p in (tmp_path / "dpo").glob("*.jsonl"))
    # the split is by conversation, and the same as the chat export's for the same seed
    chat = export(tmp_path / "chat", seed=1)
    dpo_ids = (tmp_path / "dpo" / "conversation_ids.tsv").read_text().splitlines()
    chat_ids = set((tmp_path / "chat" / "conversation_ids.tsv").read_text().splitlines())
    assert set(dpo_ids) <= chat_ids and len(dpo_ids) == dpo.total_conversations
    assert dpo.conversations["train"] > 0 and dpo.conversations["test"] + dpo.conversations["validation"] > 0
    assert chat.total_conversations == dpo.total_conversations + 1
    # the same rows as an HF DatasetDict in TRL's conversational columns
    dataset = load_from_disk(str(tmp_path / "dpo" / dpo.hf_dataset))
    assert {name: len(split) for name, split in dataset.items()} == dpo.records
    assert set(dataset["train"].column_names) == {"prompt", "chosen", "rejected"}
    saved = ExportManifest.model_validate_json((tmp_path / "dpo" / "manifest.json").read_text())
    assert saved.format == "dpo" and "preference pairs" in saved.summary().splitlines()[0]

    kto = export(tmp_path / "kto", format="kto", seed=1)
    examples = lines(tmp_path / "kto")
    labels = Counter(r["label"] for r in examples)
    # first conversation: edit (2), approval (1), rejection with nothing sent (1), rejection with a reply (2);
    # gift cards 2, the 30 edits 2 each, the approved-only conversation 1
    assert (labels[True], labels[False]) == (3 + 1 + 30 + 1, 3 + 1 + 30)
    assert sum(kto.records.values()) == len(examples) and kto.conversations == chat.conversations
    assert {r["completion"][0]["content"] for r in examples if not r["label"]} >= {"No refunds, ever.", "Try charging it."}
    assert set(load_from_disk(str(tmp_path / "kto" / "hf"))["test"].column_names) == {"prompt", "completion", "label"}
    # filtering by decision: only edits give rows
    edits = export(tmp_path / "edits", format="kto", decisions=["edited"])
    assert {r["completion"][0]["content"] for r in lines(tmp_path / "edits")} >= {"Try charging it."}
    assert "No refunds, ever." not in json.dumps(lines(tmp_path / "edits"))
