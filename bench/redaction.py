"""Recall and precision of PII redaction on the labelled support messages, per type and overall.

Baseline in the same run: a naive redactor (e-mail regex plus "any run of 7+ digits"), to show what the checks buy.
Run: .venv/bin/python bench/redaction.py
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.redact import PiiSpan, PiiType, Redactor  # noqa: E402
from collector.redaction_quality import load_labelled, measure  # noqa: E402

LABELLED = Path(__file__).resolve().parents[1] / "tests" / "data" / "pii_labelled.jsonl"


class NaiveRedactor(Redactor):
    """What a quick script would do: e-mails by regex, every long digit run as a phone number."""

    def find(self, text: str) -> list[PiiSpan]:
        spans = [PiiSpan(m.start(), m.end(), PiiType.EMAIL) for m in re.finditer(r"\S+@\S+\.\w+", text)]
        spans += [PiiSpan(m.start(), m.end(), PiiType.PHONE) for m in re.finditer(r"\+?\d[\d\s-]{5,}\d", text)]
        return spans


def main() -> None:
    messages = load_labelled(LABELLED)
    redactor = Redactor.from_settings()
    started = time.perf_counter()
    quality = measure(messages, redactor)
    elapsed = time.perf_counter() - started
    for split in ("dev", "holdout"):
        part = measure([m for m in messages if m.split == split], redactor).overall
        print(f"{split:<8} split: {part.labelled:>3} spans, recall {part.recall:.3f}, precision {part.precision:.3f}")
    naive = measure(messages, NaiveRedactor.from_settings())
    print(f"labelled set: {len(messages)} messages, {quality.overall.labelled} PII spans")
    print(f"{'type':<11} {'spans':>5} {'recall':>7} {'precision':>9}")
    for name, score in quality.per_type.items():
        print(f"{name:<11} {score.labelled:>5} {score.recall:>7.3f} {score.precision:>9.3f}")
    print(f"{'overall':<11} {quality.overall.labelled:>5} {quality.overall.recall:>7.3f} {quality.overall.precision:>9.3f}")
    print(f"naive baseline overall: recall {naive.overall.recall:.3f} precision {naive.overall.precision:.3f}")
    print(f"ratio vs naive: recall x{quality.overall.recall / max(naive.overall.recall, 1e-9):.2f}, "
          f"precision x{quality.overall.precision / max(naive.overall.precision, 1e-9):.2f}")
    print(f"speed: {len(messages) / elapsed:,.0f} messages/s")
    for line in quality.misses:
        print("  missed:", line)
    for line in quality.false_finds:
        print("  false :", line)


if __name__ == "__main__":
    main()
