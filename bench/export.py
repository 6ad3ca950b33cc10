"""Export speed and memory: 100,000 reviewed conversations (~6 messages each) from SQLite to chat JSONL.

Each export runs in a child process that reports its own wall time and peak RSS. The baseline, in the same run, is
a plain dump of the same rows to JSONL with no hygiene at all (no redaction, dedup, validation or split): the floor.
Peak RSS at 10,000 vs 100,000 conversations shows whether memory stays flat.

Run: .venv/bin/python bench/export.py [--sizes 10000,100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRODUCTS = ["SuperWidget", "NanoCharger", "Gadget Pro 15", "SmartHub", "EchoBuds", "PowerCell X2", "VisionCam"]
PROBLEMS = ["won't turn on", "stopped charging", "keeps disconnecting", "arrived scratched", "is missing a cable",
            "gets very hot", "shows error E-4021", "lost its Bluetooth pairing", "has a cracked screen"]
WORDS = ("please help quickly today really again yesterday since update firmware battery cable box light red green "
         "button reset store warranty refund replace send order week month kids office travel charger").split()
PII = ["my email is {n}.doe@example.com", "call me on (415) 555-01{d:02d}", "order GC-{o}", "account ACC-{o}",
       "ship to {d} Evergreen Terrace, Springfield, OR 97403", "card 4111 1111 1111 1111", "", "", "", "", "", ""]
# the same values as the redaction worker stores them beside the raw text at ingest (export reads only those)
PII_REDACTED = ["my email is <EMAIL_1>", "call me on <PHONE_1>", "order <ORDER_ID_1>", "account <ACCOUNT_ID_1>",
                "ship to <ADDRESS_1>", "card <CARD_1>", "", "", "", "", "", ""]
MACRO = "Thanks for contacting GadgetCorp! An agent will get back to you within 24 hours."


def _customer_text(rng: random.Random, number: int) -> tuple[str, str]:
    """(raw, redacted) text of a customer's message."""
    product, problem = rng.choice(PRODUCTS), rng.choice(PROBLEMS)
    filler = " ".join(rng.choices(WORDS, k=rng.randint(4, 14)))
    kind = rng.randrange(len(PII))
    pii = PII[kind].format(n=f"user{number}", d=number % 100, o=1000000 + number)
    return (f"Hi, my {product} {problem}, {filler}. {pii}".strip(),
            f"Hi, my {product} {problem}, {filler}. {PII_REDACTED[kind]}".strip())


def _reply_text(rng: random.Random, number: int) -> str:
    if rng.random() < 0.05:
        return MACRO
    filler = " ".join(rng.choices(WORDS, k=rng.randint(6, 18)))
    return f"I'm sorry about that! Could you try this: {filler}. Reference {number}."


def generate_store(path: Path, conversations: int, seed: int = 7) -> None:
    """A SQLite store with `conversations` reviewed conversations of 3 exchanges each, written with bulk inserts,
    with the redacted text beside the raw text as the redaction worker leaves it at ingest."""
    from core import db

    db.upgrade(f"sqlite:///{path}")
    db.get_engine(f"sqlite:///{path}").dispose()
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA synchronous=OFF")
    message_id = draft_id = 0
    batch = 10_000
    for first in range(1, conversations + 1, batch):
        conv_rows, message_rows, draft_rows, review_rows = [], [], [], []
        for cid in range(first, min(first + batch, conversations + 1)):
            stamp = (start + timedelta(seconds=cid * 37)).strftime("%Y-%m-%d %H:%M:%S.%f")
            conv_rows.append((cid, f"bench-{cid}", "web", "assist", "closed", "import", stamp, stamp))
            position = 0
            for turn in range(3):
                message_id += 1
                raw, redacted = _customer_text(rng, cid * 3 + turn)
                message_rows.append((message_id, cid, position, "user", raw, redacted, None, stamp))
                position += 1
                draft_id += 1
                draft = _reply_text(rng, cid * 3 + turn)
                decision = rng.choices(["approved", "edited", "rejected"], weights=[70, 25, 5])[0]
                final = draft if decision == "approved" else (draft + " Best, Alice." if decision == "edited" else None)
                draft_rows.append((draft_id, cid, position, draft, draft, "reviewed", stamp))
                review_rows.append((draft_id, draft_id, decision, final, final, "bench", 0.1, stamp))
                if final is not None:
                    message_id += 1
                    message_rows.append((message_id, cid, position, "assistant", final, final, draft_id, stamp))
                    position += 1
        connection.executemany(
            "INSERT INTO conversation (id, external_id, channel, mode, status, source, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", conv_rows)
        connection.executemany(
            "INSERT INTO draft (id, conversation_id, position, content, redacted_content, status, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", draft_rows)
        connection.executemany(
            "INSERT INTO review (id, draft_id, decision, final_text, redacted_final_text, agent_id, edit_distance, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", review_rows)
        connection.executemany(
            "INSERT INTO message (id, conversation_id, position, role, content, redacted_content, draft_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", message_rows)
        connection.commit()
    connection.close()


def plain_dump(store: Path, out: Path) -> None:
    """The floor: every message with its review's final text, one JSON line per conversation, nothing else."""
    out.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(store)
    rows = connection.execute(
        "SELECT m.conversation_id, m.role, COALESCE(r.final_text, m.content) FROM message m "
        "LEFT JOIN review r ON r.draft_id = m.draft_id ORDER BY m.conversation_id, m.position"
    )
    with (out / "dump.jsonl").open("w", encoding="utf-8") as dump:
        current, messages = None, []
        for conversation_id, role, content in rows:
            if conversation_id != current and messages:
                dump.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
                messages = []
            current = conversation_id
            messages.append({"role": role, "content": content})
        if messages:
            dump.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


def run_child(mode: str, store: Path, out: Path) -> dict:
    """Run one export in a fresh interpreter; it reports its wall time and its own peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(store), str(out)],
        capture_output=True, text=True, check=True, env={**os.environ, "HOUSESTYLE_DATABASE_URL": f"sqlite:///{store}"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(mode: str, store: Path, out: Path) -> None:
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu_before = 0.0
    if mode == "plain":
        started = time.perf_counter()
        plain_dump(store, out)
        summary = ""
    else:
        from collector.export import ExportOptions, export_dataset
        from core.settings import get_settings

        import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        started = time.perf_counter()
        manifest = export_dataset(ExportOptions(out=out, format="chat"), settings=get_settings(), progress=False)
        summary = manifest.summary()
        baseline_rss = import_rss
    elapsed = time.perf_counter() - started
    me, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + workers.ru_utime + workers.ru_stime - cpu_before
    print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_rss_mb": me.ru_maxrss / 1024,
                      "worker_peak_rss_mb": workers.ru_maxrss / 1024, "start_rss_mb": baseline_rss / 1024,
                      "summary": summary}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--keep", type=Path, default=None, help="reuse/keep stores in this folder")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "STORE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="housestyle-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        store = work / f"store-{size}.db"
        if not store.exists():
            started = time.perf_counter()
            generate_store(store, size)
            print(f"generated {size:,} conversations in {time.perf_counter() - started:.1f} s ({store.stat().st_size / 2**20:.0f} MB)")
        plain = run_child("plain", store, work / f"plain-{size}")
        full = run_child("export", store, work / f"export-{size}")
        results[size] = (plain, full)
        print(f"\n{size:,} conversations:")
        print(f"  plain dump (floor) : {plain['seconds']:6.2f} s wall, {plain['cpu_seconds']:6.2f} s CPU, "
              f"peak RSS {plain['peak_rss_mb']:6.1f} MB")
        print(f"  housestyle export  : {full['seconds']:6.2f} s wall, {full['cpu_seconds']:6.2f} s CPU, "
              f"peak RSS {full['peak_rss_mb']:6.1f} MB (after imports {full['start_rss_mb']:.1f} MB; "
              f"each worker process peaked at {full['worker_peak_rss_mb']:.1f} MB)")
        print(f"  ratio export/plain : x{full['seconds'] / plain['seconds']:.2f} wall, "
              f"x{full['cpu_seconds'] / plain['cpu_seconds']:.2f} CPU; {size / full['seconds']:,.0f} conversations/s")
        print("  " + full["summary"].replace("\n", "\n  "))
    if len(results) > 1:
        small, large = min(results), max(results)
        growth = results[large][1]["peak_rss_mb"] - results[small][1]["peak_rss_mb"]
        print(f"\npeak RSS {small:,} -> {large:,} conversations: {results[small][1]['peak_rss_mb']:.1f} -> "
              f"{results[large][1]['peak_rss_mb']:.1f} MB (+{growth:.1f} MB for {large / small:.0f}x the data)")
    if args.keep is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
