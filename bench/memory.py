"""Answer memory: retrieval latency and index memory at 10k, 100k and 1M stored exchanges, and the time from an
agent's review to its exchange being retrievable.

1. Index: a synthetic brand's exchanges (products x intents x phrasings, with placeholders, like the redacted store
   holds) are indexed (`collector.memory.index.MemoryIndex`); `search` (k=3) is timed for 1000 new questions
   (p50/p99), and one more exchange appended to the built index (what a new review costs) is timed too. Memory: the
   index's arrays and texts (`nbytes`) and the process's RSS growth while building it.
2. Through the store (SQLite, the same exchanges inserted as redacted rows): `collector.memory.recall` per message
   (stamp read + search + prompt fit, what the reply path calls), the first build from the store, and review ->
   retrievable: `recorder.record_review`, the redaction worker's pass over that conversation (spaCy), then the
   next `recall` that finds it (index extended, not rebuilt). The worker runs every HOUSESTYLE_REDACT_INTERVAL_S
   (2 s), so a review waits that long at most, plus what is measured here. The index holds the brand's newest
   HOUSESTYLE_MEMORY_MAX_EXCHANGES exchanges (default 100,000; `index_rows` shows it): a 1M store recalls like 100k.

Run: .venv/bin/python bench/memory.py [--sizes 10000 100000] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PRODUCTS = ["SuperWidget", "MegaGadget", "UltraPhone", "NanoHub", "PowerDock", "SmartLamp", "AeroFan", "HydroBottle"]
INTENTS = {
    "warranty": (["Is my {p} still under warranty?", "How long is the {p} warranty?", "Does the warranty cover my {p}?",
                  "my {p} broke after a year, covered?"], "The {p} warranty lasts {n} years from purchase, <PERSON_1>."),
    "return": (["How do I return my {p}?", "I want to send the {p} back", "Can I get a refund for the {p}?",
                "return label for {p} order <ORDER_ID_1>"], "Print the prepaid label for order <ORDER_ID_1> and drop "
               "the {p} at any post office within {n}0 days."),
    "shipping": (["When will my {p} arrive?", "Where is my {p} order?", "How long does {p} shipping take?",
                  "{p} delivery is late"], "The {p} ships within {n} days; tracking is on its way to <EMAIL_1>."),
    "setup": (["The {p} setup keeps failing", "How do I set up my {p}?", "{p} won't pair with my phone",
               "cannot connect {p} to wifi"], "Hold the {p} button for {n} seconds until the light blinks, then pair."),
    "billing": (["I was charged twice for the {p}", "Why is my {p} invoice wrong?", "{p} payment failed",
                 "refund the double {p} charge"], "Sorry! The extra {p} charge is refunded within {n} business days."),
}
FILLERS = ["", "Hi, ", "Hello there. ", "Quick question: ", "Thanks in advance. ", "Urgent: "]


def exchanges(count: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    made = []
    for i in range(count):
        product, (phrasings, reply) = rng.choice(PRODUCTS), rng.choice(list(INTENTS.values()))
        customer = rng.choice(FILLERS) + rng.choice(phrasings).format(p=product) + f" (ticket {i})"
        made.append((customer, reply.format(p=product, n=rng.randint(1, 5))))
    return made


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_index(size: int) -> dict:
    from collector.memory.exchanges import StoredExchange
    from collector.memory.index import MemoryIndex

    rows = [StoredExchange(i + 1, i + 1, c, r) for i, (c, r) in enumerate(exchanges(size))]
    MemoryIndex.build(rows[:10]).search("warm up the tokenizer", k=3)  # imports and stemmer out of the measure
    before = rss_mib()
    started = time.perf_counter()
    index = MemoryIndex.build(rows)
    build_s = time.perf_counter() - started
    grown = rss_mib() - before
    queries = [c for c, _ in exchanges(1000, seed=1)]
    index.search(queries[0], k=3)  # warm
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, k=3, min_score=2.0)
        times.append((time.perf_counter() - started) * 1000)
    extra = StoredExchange(size + 1, size + 1, "Is my AeroFan under warranty still?", "Yes, two years.")
    started = time.perf_counter()
    index.extended([extra], set(), stamp=None, settled=size + 1)
    append_ms = (time.perf_counter() - started) * 1000
    return {"exchanges": size, "build_s": round(build_s, 2), "search_p50_ms": round(percentile(times, 0.5), 3),
            "search_p99_ms": round(percentile(times, 0.99), 3), "append_one_ms": round(append_ms, 2),
            "index_nbytes_mib": round(index.nbytes / 2**20, 1), "rss_growth_mib": round(grown, 1)}


def fill_store(url: str, size: int) -> None:
    """`size` reviewed, redacted exchanges inserted as rows (what the recorder and redaction worker leave)."""
    from sqlalchemy import insert

    from core.db import session_scope
    from core.models import Conversation, Draft, Message, Review

    pairs = exchanges(size)
    with session_scope(url) as session:
        session.execute(insert(Conversation.__table__), [
            {"id": i + 1, "brand_id": 1, "external_id": f"c{i}", "channel": "web", "mode": "assist",
             "status": "open", "source": "live", "created_at": _now(), "updated_at": _now()} for i in range(size)])
        session.execute(insert(Draft.__table__), [
            {"id": i + 1, "conversation_id": i + 1, "position": 1, "content": r, "redacted_content": r,
             "status": "reviewed", "created_at": _now()} for i, (_, r) in enumerate(pairs)])
        session.execute(insert(Message.__table__), [
            row for i, (c, r) in enumerate(pairs) for row in (
                {"conversation_id": i + 1, "position": 0, "role": "user", "content": c, "redacted_content": c,
                 "created_at": _now()},
                {"conversation_id": i + 1, "position": 1, "role": "assistant", "content": r, "redacted_content": r,
                 "draft_id": i + 1, "created_at": _now()})])
        session.execute(insert(Review.__table__), [
            {"id": i + 1, "draft_id": i + 1, "decision": "approved", "final_text": r, "redacted_final_text": r,
             "agent_id": "alice", "edit_distance": 0.0, "created_at": _now()} for i, (_, r) in enumerate(pairs)])


def _now():
    from core.models import utcnow

    return utcnow()


def bench_store(size: int, settings) -> dict:
    from collector import recorder
    from collector.memory import forget_indexes, memory_index, recall
    from collector.pii.erasure import forget
    from collector.pii.ingest import redact_conversations, redactor_for
    from core.db import open_store, session_scope
    from core.models import Role

    folder = tempfile.mkdtemp(prefix="memory-bench-")
    url = open_store(f"sqlite:///{folder}/store.db")
    fill_store(url, size)
    settings = settings.model_copy(update={"database_url": url, "memory_examples": 3})
    forget_indexes()
    started = time.perf_counter()
    recall(url, [("user", "warm")], brand_id=1, settings=settings)
    first_build_s = time.perf_counter() - started
    with session_scope(url) as session:
        index_rows = len(memory_index(session, 1, newest=settings.memory_max_exchanges))
    times = []
    with session_scope(url) as session:
        for query, _ in exchanges(500, seed=2):
            started = time.perf_counter()
            recall(session, [("user", query)], brand_id=1, settings=settings)
            times.append((time.perf_counter() - started) * 1000)
    redactor = redactor_for(settings)
    redactor.redact_conversation([("user", "warm up spaCy")])
    question = "Hi, my name is Jane Roe (jane.roe@example.com) and my Zorblax toaster sparks, is that covered?"
    started = time.perf_counter()
    with session_scope(url) as session:
        conversation = recorder.start_conversation(session)
        recorder.add_message(session, conversation.id, Role.USER, question)
        draft = recorder.record_draft(session, conversation.id, "Let me check.")
        recorder.record_review(session, draft.id, "edited", agent_id="alice",
                               final_text="Jane, sparks are covered: we send a new Zorblax toaster today.")
    review_s = time.perf_counter() - started
    started = time.perf_counter()
    with session_scope(url) as session:
        redact_conversations(session, redactor, [conversation.id])
    redact_s = time.perf_counter() - started
    started = time.perf_counter()
    found = recall(url, [("user", "Zorblax toaster sparks")], brand_id=1, settings=settings).examples
    retrievable_s = time.perf_counter() - started
    assert found and "Zorblax" in found[0].reply and "Jane" not in found[0].reply, found
    # an erasure: the next recall trims the cached index; before, it rebuilt the index from the store (the baseline)
    forget(url, actor="bench", email="jane.roe@example.com")
    started = time.perf_counter()
    after_erasure = recall(url, [("user", "Zorblax toaster sparks")], brand_id=1, settings=settings).examples
    erasure_s = time.perf_counter() - started
    assert not any("Zorblax" in example.reply for example in after_erasure), after_erasure
    forget_indexes()
    started = time.perf_counter()
    rebuilt = recall(url, [("user", "Zorblax toaster sparks")], brand_id=1, settings=settings).examples
    rebuild_s = time.perf_counter() - started
    assert rebuilt == after_erasure, (rebuilt, after_erasure)
    return {"exchanges": size, "index_rows": index_rows, "first_build_from_store_s": round(first_build_s, 2),
            "recall_p50_ms": round(percentile(times, 0.5), 3), "recall_p99_ms": round(percentile(times, 0.99), 3),
            "review_recorded_ms": round(review_s * 1000, 1), "redaction_pass_ms": round(redact_s * 1000, 1),
            "next_recall_finds_it_ms": round(retrievable_s * 1000, 1),
            "review_to_retrievable_ms_excl_worker_wait": round((review_s + redact_s + retrievable_s) * 1000, 1),
            "mean_stdev_recall_ms": [round(statistics.mean(times), 3), round(statistics.pstdev(times), 3)],
            "recall_after_erasure_ms": round(erasure_s * 1000, 1), "rebuild_from_store_ms": round(rebuild_s * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from core.settings import Settings

    settings = Settings()
    results = {"index": [], "store": []}
    for size in args.sizes:
        results["index"].append(bench_index(size))
        print(json.dumps(results["index"][-1]), flush=True)
    for size in args.sizes:
        results["store"].append(bench_store(size, settings))
        print(json.dumps(results["store"][-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
