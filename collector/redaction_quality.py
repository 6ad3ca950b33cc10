"""How well the redactor does on a labelled set: recall and precision per PII type and overall."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from collector.redact import PiiSpan, PiiType, Redactor


class LabelledSpan(BaseModel):
    """A piece of PII a person marked: characters [start, end) of `type`."""

    type: PiiType
    start: int
    end: int
    value: str


class LabelledMessage(BaseModel):
    """One line of the labelled set: a support message and every piece of PII in it."""

    text: str
    pii: list[LabelledSpan]
    split: str = "dev"  # dev: the detectors were tuned on it; holdout: written afterwards, never tuned on


class TypeScore(BaseModel):
    labelled: int = 0
    found: int = 0
    recalled: int = 0  # labelled spans wholly replaced by a placeholder of their type
    correct: int = 0  # found spans that overlap a labelled span of their type

    @property
    def recall(self) -> float:
        return self.recalled / self.labelled if self.labelled else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.found if self.found else 1.0


class RedactionQuality(BaseModel):
    per_type: dict[str, TypeScore]
    overall: TypeScore
    misses: list[str]  # "TYPE 'value' in: text" for each labelled span not redacted
    false_finds: list[str]  # "TYPE 'text' in: text" for each find that was not PII of that type


def load_labelled(path: Path) -> list[LabelledMessage]:
    with path.open(encoding="utf-8") as lines:
        return [LabelledMessage.model_validate_json(line) for line in lines if line.strip()]


def _covered(span: LabelledSpan, finds: list[PiiSpan]) -> bool:
    """The whole labelled span lies inside finds of its type (a placeholder may swallow a little more)."""
    cursor = span.start
    for find in sorted(finds, key=lambda f: f.start):
        if find.type == span.type and find.start <= cursor < find.end:
            cursor = find.end
    return cursor >= span.end


def measure(messages: list[LabelledMessage], redactor: Redactor) -> RedactionQuality:
    scores = {pii_type.value: TypeScore() for pii_type in PiiType}
    misses: list[str] = []
    false_finds: list[str] = []
    for message in messages:
        finds = redactor.find(message.text)
        for span in message.pii:
            score = scores[span.type.value]
            score.labelled += 1
            if _covered(span, finds):
                score.recalled += 1
            else:
                misses.append(f"{span.type.value} {span.value!r} in: {message.text}")
        for find in finds:
            score = scores[find.type.value]
            score.found += 1
            if any(s.type == find.type and s.start < find.end and find.start < s.end for s in message.pii):
                score.correct += 1
            else:
                false_finds.append(f"{find.type.value} {message.text[find.start:find.end]!r} in: {message.text}")
    totals: Counter[str] = Counter()
    for score in scores.values():
        totals.update(score.model_dump())
    return RedactionQuality(per_type=scores, overall=TypeScore(**totals), misses=misses, false_finds=false_finds)
