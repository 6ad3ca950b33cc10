"""Recall and precision of PII redaction per type, on labelled support conversations, and throughput on one core.

The new redactor (collector.pii: Presidio + spaCy + HouseStyle's recognizers, conversation-aware) beside the
regex redactor HouseStyle shipped before it (bench/baseline_regex_redactor.py), in the same run:
- tests/data/pii_conversations.jsonl (bench/make_pii_conversations.py): the held-out part, never tuned on, is
  the figure that counts; the dev part is shown too;
- tests/data/pii_labelled.jsonl: the older set of single messages (no names; cards, IBANs, EU addresses).
Throughput: messages per second through each redactor (finding and replacing), one process, BLAS threads 1.

Run: HOUSESTYLE_CPU_THREADS=1 .venv/bin/python bench/redaction.py [--misses] [--split dev|holdout]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_regex_redactor import Redactor as RegexRedactor  # noqa: E402

from collector.pii import ConversationRedactor, PiiType, RedactorConfig  # noqa: E402
from collector.redaction_quality import (  # noqa: E402
    Find,
    LabelledConversation,
    RedactionQuality,
    TypeScore,
    load_labelled,
    measure,
)
from core.settings import Settings  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CONVERSATIONS = DATA / "pii_conversations.jsonl"
MESSAGES = DATA / "pii_labelled.jsonl"
TYPES = [t.value for t in PiiType]
RECALL_TARGET, PRECISION_TARGET = 0.97, 0.90
# what a deployment of the bundled store would allow-list: its company and product names (not the brands it sells)
ALLOW_LIST = ("GadgetCorp", "SuperWidget", "MegaGadget Pro", "UltraLite Jacket", "FlexFit Jeans", "CloudStep Sneakers",
              "AeroKnit Hoodie", "ThermoCore Vest", "EverDry Raincoat")


def new_redactor() -> ConversationRedactor:
    settings = Settings()
    config = RedactorConfig.from_settings(settings)
    return ConversationRedactor(RedactorConfig(**{**config.__dict__, "allow_list": (*config.allow_list, *ALLOW_LIST)}))


def new_finder(redactor: ConversationRedactor):
    def find(turns):
        return [[Find(start=s.start, end=s.end, type=s.type.value) for s in spans] for spans in redactor.find(turns)]
    return find


def regex_finder(redactor: RegexRedactor):
    def find(turns):
        return [[Find(start=s.start, end=s.end, type=s.type.value) for s in redactor.find(text)] for _, text in turns]
    return find


def table(title: str, new: RedactionQuality, old: RedactionQuality, labelled_types_only: bool = False) -> None:
    print(f"\n{title}: {new.messages} messages")
    print(f"{'type':<12} {'spans':>5} | {'recall':>6} {'prec.':>6} {'any-type':>8} | {'regex recall':>12} {'prec.':>6}")
    if labelled_types_only:  # the overall row over the types the set labels
        shown = [t for t in TYPES if t in new.per_type and new.per_type[t].labelled]
        new = new.model_copy(update={"overall": _total(new, shown)})
        old = old.model_copy(update={"overall": _total(old, shown)})
    for name in TYPES + ["overall"]:
        n = new.overall if name == "overall" else new.per_type.get(name)
        o = old.overall if name == "overall" else old.per_type.get(name)
        if n is None or (n.labelled == 0 and n.found == 0 and (o is None or o.found == 0)):
            continue
        if labelled_types_only and n.labelled == 0:
            continue  # a set that never labels a type cannot say whether finds of it are right
        flag = "" if name == "overall" or n.labelled == 0 or (
            n.recall >= RECALL_TARGET and n.precision >= PRECISION_TARGET) else "  below target"
        print(f"{name:<12} {n.labelled:>5} | {n.recall:>6.3f} {n.precision:>6.3f} {n.any_type_recall:>8.3f} | "
              f"{o.recall:>12.3f} {o.precision:>6.3f}{flag}")


def _total(quality: RedactionQuality, types: list[str]) -> TypeScore:
    total = TypeScore()
    for name in types:
        score = quality.per_type.get(name, TypeScore())
        for field in TypeScore.model_fields:
            setattr(total, field, getattr(total, field) + getattr(score, field))
    return total


def throughput(finder, conversations: list[LabelledConversation]) -> float:
    turns = [[(t.role, t.text) for t in c.turns] for c in conversations]
    count = sum(len(t) for t in turns)
    started = time.perf_counter()
    for conversation in turns:
        finder(conversation)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--misses", action="store_true", help="list every miss and false find")
    parser.add_argument("--split", choices=["dev", "holdout", "all"], default="all")
    args = parser.parse_args()
    started = time.perf_counter()
    redactor = new_redactor()
    print(f"ConversationRedactor built in {time.perf_counter() - started:.1f} s "
          f"(spaCy model {redactor.config.spacy_model})")
    finder, baseline = new_finder(redactor), regex_finder(RegexRedactor.from_settings(Settings()))
    conversations = load_labelled(CONVERSATIONS)
    splits = ["dev", "holdout"] if args.split == "all" else [args.split]
    results = {}
    for split in splits:
        part = [c for c in conversations if c.split == split]
        results[split] = (measure(part, finder, TYPES), measure(part, baseline, TYPES))
        table(f"{CONVERSATIONS.name} [{split}]", *results[split])
    older = load_labelled(MESSAGES)
    table(f"{MESSAGES.name} (older single messages; types it labels)", measure(older, finder, TYPES),
          measure(older, baseline, TYPES), labelled_types_only=True)
    sample = [c for c in conversations if c.split == splits[-1]]
    old_rate = throughput(baseline, sample)
    one_rate = throughput(lambda turns: redactor.redact_conversation(turns).texts, sample)
    turns = [([(t.role, t.text) for t in c.turns], None) for c in sample]
    started = time.perf_counter()
    for _ in redactor.redact_conversations(turns):
        pass
    batch_rate = sum(len(t) for t, _ in turns) / (time.perf_counter() - started)
    print(f"\nthroughput, one core, {sum(len(c.turns) for c in sample):,} messages: regex redactor "
          f"{old_rate:,.0f} messages/s; collector.pii redact_conversation {one_rate:,.0f} messages/s "
          f"({one_rate / old_rate:.4f}x), redact_conversations (batched) {batch_rate:,.0f} messages/s "
          f"({batch_rate / old_rate:.4f}x)")
    if args.misses:
        for split, (quality, _) in results.items():
            for line in quality.misses:
                print(f"  [{split}] missed:", line)
            for line in quality.false_finds:
                print(f"  [{split}] false :", line)


if __name__ == "__main__":
    main()
