"""Scaling curve: ingest and export time and peak memory at 10k, 100k (and 1M) conversations, SQLite and Postgres.

For each store kind and size: a HouseStyle JSONL file of reviewed conversations (two exchanges each: the customer,
the draft, the agent's decision and final text) is written once (not timed); then, each step in a fresh interpreter
so its peak RSS is its own:
  ingest: `collector.importer.import_file` into an empty store (the bulk path imports and back-fills use);
  export: `collector.export.export_dataset` with every hygiene step on (dedup, macro caps, validation, split).
Between the two, untimed, the texts are marked redacted as the redaction worker leaves texts in which it finds
nothing (the generated texts carry no personal data), so export reads the redacted column as it does in production.
The baseline in the same run is the smallest size: each row gives time and memory as a multiple of it (time growing
like the data and memory staying flat is the goal).

Run: .venv/bin/python bench/scaling.py [--sizes 10000,100000,1000000] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export import PROBLEMS, PRODUCTS, WORDS  # noqa: E402 (the same generated conversations as bench/export.py)


def write_file(path: Path, conversations: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for number in range(conversations):
            messages = []
            for _ in range(2):
                filler = " ".join(rng.choices(WORDS, k=rng.randint(4, 14)))
                messages.append({"role": "user", "content": f"Hi, my {rng.choice(PRODUCTS)} {rng.choice(PROBLEMS)}, "
                                                            f"{filler}. Ticket {number}."})
                reply = f"I'm sorry about that! Could you try this: {' '.join(rng.choices(WORDS, k=10))}. Ref {number}."
                decision = rng.choices(["approved", "edited"], weights=[70, 30])[0]
                final = reply if decision == "approved" else reply + " Best, Alice."
                messages.append({"role": "assistant", "content": final, "draft": reply, "decision": decision})
            out.write(json.dumps({"external_id": f"scale-{number}", "channel": "email", "messages": messages}) + "\n")


def child(step: str, url: str, path: str) -> None:
    from core import db

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    db.open_store(url)
    started = time.perf_counter()
    if step == "ingest":
        from collector.importer import import_file

        report = import_file(Path(path), url=url)
        detail = f"{report.added} conversations, {report.messages} messages"
    else:
        from collector.export import ExportOptions, export_dataset
        from core.settings import Settings

        settings = Settings(database_url=url)
        manifest = export_dataset(ExportOptions(out=Path(path), format="chat"), settings=settings, progress=False)
        detail = f"{sum(manifest.conversations.values())} conversations exported"
    seconds = time.perf_counter() - started
    me, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"seconds": seconds, "cpu": me.ru_utime + me.ru_stime + workers.ru_utime + workers.ru_stime
                      - cpu_before, "peak_mb": me.ru_maxrss / 1024, "worker_peak_mb": workers.ru_maxrss / 1024,
                      "detail": detail}))


def run_child(step: str, url: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", step, url, str(path)], capture_output=True, text=True,
                          env={**os.environ, "HOUSESTYLE_DATABASE_URL": url})
    if done.returncode != 0:
        raise SystemExit(f"{step} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mark_redacted(url: str) -> None:
    """What the redaction worker stores for texts with nothing personal in them: the text itself."""
    from sqlalchemy import text

    from core import db

    with db.get_engine(url).begin() as connection:
        connection.execute(text("UPDATE message SET redacted_content = content"))
        connection.execute(text("UPDATE draft SET redacted_content = content"))
        connection.execute(text("UPDATE review SET redacted_final_text = final_text"))
    db.get_engine(url).dispose()


def bench(label: str, new_url, sizes: list[int], work: Path) -> None:
    rows = []
    for size in sizes:
        source = work / f"scale-{size}.jsonl"
        if not source.exists():
            write_file(source, size)
        url = new_url(size)
        ingest = run_child("ingest", url, source)
        mark_redacted(url)
        export = run_child("export", url, work / f"{label}-export-{size}")
        rows.append((size, ingest, export))
        print(f"{label:8} {size:>9,}  ingest {ingest['seconds']:8.1f} s  peak {ingest['peak_mb']:6.0f} MB | export "
              f"{export['seconds']:7.1f} s  peak {export['peak_mb']:5.0f} MB (workers {export['worker_peak_mb']:.0f} "
              f"MB)  [{ingest['detail']}; {export['detail']}]", flush=True)
    base_size, base_ingest, base_export = rows[0]
    for size, ingest, export in rows[1:]:
        scale = size / base_size
        print(f"{label:8} {size:>9,} vs {base_size:,} ({scale:.0f}x the data): ingest time x"
              f"{ingest['seconds'] / base_ingest['seconds']:.1f}, memory x{ingest['peak_mb'] / base_ingest['peak_mb']:.2f}"
              f"; export time x{export['seconds'] / base_export['seconds']:.1f}, memory x"
              f"{export['peak_mb'] / base_export['peak_mb']:.2f} (workers x"
              f"{export['worker_peak_mb'] / max(base_export['worker_peak_mb'], 1):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("STEP", "URL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="housestyle-scaling-") as folder:
        work = Path(folder)
        if not args.no_sqlite:
            bench("sqlite", lambda size: f"sqlite:///{work}/scale-{size}.db", sizes, work)
        if args.no_postgres:
            return
        from tests.fixtures.stores import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        try:
            bench("postgres", lambda size: cluster.create_database(), sizes, work)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
