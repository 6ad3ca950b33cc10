"""What of a conversation becomes training data (`build_exchanges`, rule by rule), and the parallel export path
writing exactly what the serial one writes."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import update

from collector.export import ExportOptions, export_dataset
from collector.export.exchanges import PENDING, DraftOutcome, StoredTurn, build_exchanges
from collector.export.pipeline import PARALLEL_FROM
from collector.importer import import_file
from core.db import session_scope
from core.models import Draft, Message, Review
from core.settings import get_settings

KEPT = {"approved", "edited"}
U, A = "user", "assistant"


def reviewed(position: int, decision: str | None, final: str | None, status: str = "reviewed") -> DraftOutcome:
    return DraftOutcome(position=position, status=status, decision=decision, final_text=final)


@pytest.mark.parametrize(
    ("turns", "drafts", "expected", "dropped"),
    [
        # an approved draft: the customer turn and the agent's text
        ([StoredTurn(0, U, "hi", None), StoredTurn(1, A, "hello!", 1)], {1: reviewed(1, "approved", "hello!")},
         [["hi", "hello!"]], {}),
        # an edit: the agent's final text, never the draft's own
        ([StoredTurn(0, U, "dead widget", None), StoredTurn(1, A, "Sorry! Try the outlet.", 1)],
         {1: reviewed(1, "edited", "Sorry! Try the outlet.")}, [["dead widget", "Sorry! Try the outlet."]], {}),
        # a rejected draft with no reply is dropped together with the turn it answered
        ([StoredTurn(0, U, "q1", None), StoredTurn(1, U, "q2", None), StoredTurn(2, A, "a2", 2)],
         {1: reviewed(1, "rejected", None), 2: reviewed(2, "approved", "a2")}, [["q2", "a2"]],
         {"rejected reply": 1}),
        # a rejected draft the agent replaced with their own reply: not kept by default (decision rejected)
        ([StoredTurn(0, U, "q", None), StoredTurn(1, A, "from scratch", 1)], {1: reviewed(1, "rejected", "from scratch")},
         [], {"rejected reply": 1}),
        # two customer turns before an answer are joined with a blank line
        ([StoredTurn(0, U, "hello", None), StoredTurn(1, U, "anyone?", None), StoredTurn(2, A, "yes!", 1)],
         {1: reviewed(2, "approved", "yes!")}, [["hello\n\nanyone?", "yes!"]], {}),
        # an agent's own message with no draft counts as approved, and follows on the previous reply
        ([StoredTurn(0, U, "q", None), StoredTurn(1, A, "a", 1), StoredTurn(2, A, "and also b", None)],
         {1: reviewed(1, "approved", "a")}, [["q", "a\n\nand also b"]], {}),
        # stored system turns never go out (the company system prompt replaces them)
        ([StoredTurn(0, "system", "old prompt", None), StoredTurn(1, U, "q", None), StoredTurn(2, A, "a", None)], {},
         [["q", "a"]], {}),
        # a reply before any customer message has nothing to answer
        ([StoredTurn(0, A, "welcome!", None), StoredTurn(1, U, "q", None), StoredTurn(2, A, "a", None)], {},
         [["q", "a"]], {"reply before any customer message": 1}),
        # a draft still waiting for an agent: the whole conversation waits
        ([StoredTurn(0, U, "q", None)], {1: reviewed(1, None, None, status="pending")}, PENDING, {}),
    ],
)
def test_exchanges_keep_only_what_agents_sent(turns, drafts, expected, dropped) -> None:
    dropped_turns: Counter[str] = Counter()
    assert build_exchanges(turns, drafts, KEPT, dropped_turns) == expected
    assert dict(dropped_turns) == dropped


def test_rejected_replies_are_kept_when_asked_for() -> None:
    turns = [StoredTurn(0, U, "q", None), StoredTurn(1, A, "from scratch", 1)]
    assert build_exchanges(turns, {1: reviewed(1, "rejected", "from scratch")}, KEPT | {"rejected"}, Counter()) == [
        ["q", "from scratch"]]


WORDS = ("<ORDER_ID_1> <PERSON_1> widget charger screen battery order parcel refund colour size cable button light box invoice warranty "
         "delivery courier address week broken late missing strap manual app update reset speaker case").split()


def many_conversations(path: Path, count: int) -> Path:
    """`count` distinct conversations in HouseStyle JSONL, written as redaction leaves them (placeholders for the
    personal values), random wording, exact repeats of some."""
    rng = random.Random(7)
    with path.open("w") as out:
        for index in range(count):
            customer = " ".join(rng.choices(WORDS, k=12))
            reply = " ".join(rng.choices(WORDS, k=10))
            if index % 11 == 0:  # the same exchange in many conversations: exact duplicates
                customer, reply = "where is my parcel? it has been two weeks", "Sorry! It is on its way."
            out.write(json.dumps({"external_id": f"bulk-{index}", "channel": "web", "messages": [
                {"role": "user", "content": customer},
                {"role": "assistant", "content": reply,
                 "draft": "We are looking into it.", "decision": "edited"},
            ]}) + "\n")
    return path


def mark_redacted(url: str) -> None:
    """The texts above hold no personal value, only placeholders: their redacted form is the text itself."""
    with session_scope(url) as session:
        session.execute(update(Message).values(redacted_content=Message.content))
        session.execute(update(Draft).values(redacted_content=Draft.content))
        session.execute(update(Review).values(redacted_final_text=Review.final_text))


@pytest.mark.parametrize("fmt", ["chat", "prompt-completion"])  # prompt-completion: each worker loads the tokenizer
def test_the_parallel_export_writes_exactly_what_the_serial_export_writes(
    fmt: str, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if fmt == "prompt-completion":
        monkeypatch.setenv("HOUSESTYLE_BASE_MODEL", str(request.getfixturevalue("tiny_base")))
    import_file(many_conversations(tmp_path / "bulk.jsonl", PARALLEL_FROM + 500), url=store_url)
    mark_redacted(store_url)
    exports = {}
    for workers in (1, 2):
        monkeypatch.setenv("HOUSESTYLE_EXPORT_WORKERS", str(workers))
        get_settings.cache_clear()
        exports[workers] = export_dataset(ExportOptions(out=tmp_path / f"workers-{workers}", format=fmt),
                                          settings=get_settings(), progress=False)
    serial, parallel = exports[1], exports[2]
    assert serial.worker_processes == 0 and parallel.worker_processes >= 1  # the pool ran (catches one never used)
    assert serial.total_conversations > PARALLEL_FROM / 2 and serial.dedup.exact_duplicates > 400
    assert serial.redactions["ORDER_ID"] > 1000 and serial.redactions["PERSON"] > 1000
    assert parallel.content_sha256 == serial.content_sha256
    assert (parallel.conversations, parallel.dropped_conversations, parallel.redactions, parallel.dedup) == (
        serial.conversations, serial.dropped_conversations, serial.redactions, serial.dedup)
    for split in ("train", "validation", "test"):
        assert (tmp_path / "workers-2" / f"{split}.jsonl").read_bytes() == (
            tmp_path / "workers-1" / f"{split}.jsonl").read_bytes()
