"""How well a redactor does on labelled conversations: recall and precision per PII type, and its misses.

A labelled set is JSON lines, one conversation each: `{"id", "split", "turns": [{"role", "text", "pii":
[{"type", "start", "end", "value"}]}]}`; the older message-per-line shape (`{"text", "pii", "split"}`) reads as
one-turn conversations. A labelled span counts as recalled when finds of its type cover all of it (a
placeholder may swallow a little more); a find counts as correct when it overlaps a labelled span of its type.
`any_type_recall` is the privacy view: covered by finds of any type (the value left the text, whatever its name).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel


class LabelledSpan(BaseModel):
    """A piece of PII a person (or the generator) marked: characters [start, end) of `type`."""

    type: str
    start: int
    end: int
    value: str


class LabelledTurn(BaseModel):
    role: str = "user"
    text: str
    pii: list[LabelledSpan]


class LabelledConversation(BaseModel):
    id: str = ""
    split: str = "dev"  # dev: the detectors were tuned on it; holdout: measured at the end, never tuned on
    turns: list[LabelledTurn]


class Find(BaseModel):
    """What a redactor replaced: characters [start, end) of one turn, as `type`."""

    start: int
    end: int
    type: str


# a redactor under test: the turns (role, text) of one conversation -> its finds, per turn
Finder = Callable[[Sequence[tuple[str, str]]], list[list[Find]]]


class TypeScore(BaseModel):
    labelled: int = 0
    found: int = 0
    recalled: int = 0  # labelled spans wholly covered by finds of their type
    covered: int = 0  # labelled spans wholly covered by finds of any type
    correct: int = 0  # finds that overlap a labelled span of their type

    @property
    def recall(self) -> float:
        return self.recalled / self.labelled if self.labelled else 1.0

    @property
    def any_type_recall(self) -> float:
        return self.covered / self.labelled if self.labelled else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.found if self.found else 1.0


class RedactionQuality(BaseModel):
    messages: int
    per_type: dict[str, TypeScore]
    overall: TypeScore
    misses: list[str]  # "TYPE 'value' in: text" for each labelled span not recalled
    false_finds: list[str]  # "TYPE 'text' in: text" for each find that was not PII of that type


def load_labelled(path: Path) -> list[LabelledConversation]:
    conversations = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            if "turns" not in record:  # one message per line: a conversation of one customer turn
                turn = {"text": record["text"], "pii": record["pii"]}
                record = {"split": record.get("split", "dev"), "turns": [turn]}
            conversations.append(LabelledConversation.model_validate(record))
    return conversations


def _covered(span: LabelledSpan, finds: list[Find], pii_type: str | None) -> bool:
    cursor = span.start
    for find in sorted(finds, key=lambda f: f.start):
        if (pii_type is None or find.type == pii_type) and find.start <= cursor < find.end:
            cursor = find.end
    return cursor >= span.end


def measure(conversations: list[LabelledConversation], finder: Finder, types: Sequence[str]) -> RedactionQuality:
    scores = {name: TypeScore() for name in types}
    misses: list[str] = []
    false_finds: list[str] = []
    messages = 0
    for conversation in conversations:
        finds_per_turn = finder([(turn.role, turn.text) for turn in conversation.turns])
        for turn, finds in zip(conversation.turns, finds_per_turn, strict=True):
            messages += 1
            for span in turn.pii:
                score = scores.setdefault(span.type, TypeScore())
                score.labelled += 1
                if _covered(span, finds, span.type):
                    score.recalled += 1
                else:
                    misses.append(f"{span.type} {span.value!r} in: [{conversation.id} {turn.role}] {turn.text}")
                if _covered(span, finds, None):
                    score.covered += 1
            for find in finds:
                score = scores.setdefault(find.type, TypeScore())
                score.found += 1
                if any(s.type == find.type and s.start < find.end and find.start < s.end for s in turn.pii):
                    score.correct += 1
                else:
                    false_finds.append(f"{find.type} {turn.text[find.start:find.end]!r} in: "
                                       f"[{conversation.id} {turn.role}] {turn.text}")
    overall = TypeScore()
    for score in scores.values():
        for name in TypeScore.model_fields:
            setattr(overall, name, getattr(overall, name) + getattr(score, name))
    return RedactionQuality(messages=messages, per_type=scores, overall=overall, misses=misses,
                            false_finds=false_finds)
