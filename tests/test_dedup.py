"""De-duplication rules (collector.dedup): which conversations and replies an export drops, decided on disk so that
memory does not grow with the store."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from collector import dedup
from collector.dedup import DedupPlan, DuplicateFinder

KEEP, EXACT, NEAR = DedupPlan.KEEP, DedupPlan.EXACT, DedupPlan.NEAR
LONG = ("my superwidget stopped charging after the firmware update yesterday and the red light keeps blinking "
        "even though i tried another cable and another wall socket in the office and at home twice")
REPLY = "I'm sorry to hear that! Could you hold the reset button for ten seconds and tell me what the light does?"
MACRO = "Thanks for contacting GadgetCorp!"


def _plan(conversations: list[list[tuple[str, str]]], folder: Path, *, cap: int = 20, partition_size: int = 50_000,
          batch: int = 1000) -> DedupPlan:
    with DuplicateFinder(folder, expected=len(conversations), partition_size=partition_size) as finder:
        for start in range(0, len(conversations), batch):
            finder.add_batch(conversations[start : start + batch])
        return finder.plan(threshold=0.8, max_macro_copies=cap)


CASES = [  # (what the agent's store holds, what is dropped per conversation, which replies are over the cap)
    ("two different conversations are both kept",
     [[("my superwidget is dead", REPLY)], [("where is my order gc-1042", "It ships tomorrow.")]], [KEEP, KEEP], None),
    ("the same exchanges in other case and spacing are an exact duplicate of the first",
     [[("My SuperWidget is dead", REPLY)], [("my  superwidget IS dead", REPLY.upper())]], [KEEP, EXACT], None),
    ("the first of several copies is the one kept",
     [[("hi", "Hello!")], [("order?", "Shipped.")], [("hi", "Hello!")], [("hi", "hello!")]], [KEEP, KEEP, EXACT, EXACT],
     None),
    ("one word changed in a long conversation is a near duplicate",
     [[(LONG, REPLY)], [(LONG + " again", REPLY)]], [KEEP, NEAR], None),
    ("a short message that shares a few words is not a near duplicate",
     [[(LONG, REPLY)], [("my superwidget stopped charging", "Oh no! Which cable do you use?")]], [KEEP, KEEP], None),
    ("a canned reply is kept up to the cap, later copies are over it",
     [[(f"question {n} about my order", MACRO)] for n in range(4)], [KEEP] * 4, [False, False, True, True]),
    ("copies in a dropped conversation do not count towards the cap",
     [[("same question", MACRO)], [("same question", MACRO)], [("other question", MACRO)], [("third one", MACRO)]],
     [KEEP, EXACT, KEEP, KEEP], [False, False, False, True]),
    ("an empty store plans nothing", [], [], []),
]


@pytest.mark.parametrize(("story", "conversations", "drop", "over_cap"), CASES, ids=[case[0] for case in CASES])
def test_what_an_export_drops(story: str, conversations: list, drop: list[int], over_cap: list[bool] | None,
                              tmp_path: Path) -> None:
    plan = _plan(conversations, tmp_path / "dedup", cap=2)
    assert plan.drop.tolist() == drop, story
    replies = sum(len(conversation) for conversation in conversations)
    assert plan.reply_over_cap.tolist() == (over_cap if over_cap is not None else [False] * replies), story


def _store(seed: int, size: int) -> list[list[tuple[str, str]]]:
    """Conversations with exact copies, near copies (a word appended) and canned replies mixed in."""
    rng = random.Random(seed)
    words = "my superwidget is dead please help the battery cable reset order refund thanks hi hello store box".split()
    conversations: list[list[tuple[str, str]]] = []
    for _ in range(size):
        roll = rng.random()
        if conversations and roll < 0.1:
            conversations.append(list(rng.choice(conversations)))
        elif conversations and roll < 0.25:
            conversations.append([(customer + " " + rng.choice(words), reply) for customer, reply in rng.choice(conversations)])
        else:
            conversations.append([(" ".join(rng.choices(words, k=rng.randint(1, 12))),
                                   MACRO if rng.random() < 0.3 else " ".join(rng.choices(words, k=rng.randint(0, 10))))
                                  for _ in range(rng.randint(1, 4))])
    return conversations


@pytest.mark.parametrize("seed", [0, 1])
def test_a_store_split_into_many_partitions_gets_the_same_plan_as_one(seed: int, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    conversations = _store(seed, 6000)
    whole = _plan(conversations, tmp_path / "one", cap=5, batch=500)
    assert whole.exact_duplicates > 300 and whole.near_duplicates > 50 and whole.macro_copies > 100  # all rules at work
    monkeypatch.setattr(dedup, "_WINDOW_ROWS", 1000)  # the signature file read in 6 windows, as a large store's is
    for partition_size in (2000, 250):
        split = _plan(conversations, tmp_path / f"by-{partition_size}", cap=5, partition_size=partition_size, batch=333)
        assert np.array_equal(split.drop, whole.drop) and np.array_equal(split.reply_over_cap, whole.reply_over_cap)


def test_the_finder_leaves_no_scratch_files(tmp_path: Path) -> None:
    folder = tmp_path / "dedup"
    with DuplicateFinder(folder, expected=10) as finder:
        finder.add_batch([[("hi", "Hello!")]])
        assert any(folder.iterdir())
    assert not folder.exists()
