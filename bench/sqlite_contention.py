"""Many threads writing live exchanges to one SQLite store: the in-process write queue against SQLite's busy handler.

Each thread writes API exchanges (conversation, system + customer message, the draft) in a closed loop, one
transaction each, through the recorder. The store's own engine (`core.db.get_engine`) queues writers on an
in-process lock; the baseline, in the same run on a fresh store, is a plain engine with the same pragmas, where
writers meet SQLite's busy handler (it sleeps 1, 2, 5 ... 100 ms between tries). Prints txn/s and p50/p99/max.

Run: .venv/bin/python bench/sqlite_contention.py [--threads 8,32] [--transactions 960]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, event  # noqa: E402
from sqlmodel import Session  # noqa: E402

from collector import recorder  # noqa: E402
from core.db import _set_sqlite_pragmas, get_engine, open_store  # noqa: E402
from core.models import ReplyMode, Role  # noqa: E402


def busy_handler_engine(url: str):
    """The baseline: the same store and pragmas, no in-process write queue."""
    engine = create_engine(url)
    event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


def contend(engine, threads: int, per_thread: int) -> dict[str, float]:
    """`threads` writers, `per_thread` exchanges each; throughput and per-transaction latency."""
    latencies: list[float] = []

    def work() -> None:
        for _ in range(per_thread):
            started = time.perf_counter()
            with Session(engine, expire_on_commit=False) as session:
                conversation = recorder.start_conversation(session, channel="api", mode=ReplyMode.AUTO, source="api")
                recorder.add_messages(session, conversation.id, [(Role.SYSTEM, "You are helpful."),
                                                                 (Role.USER, "My SuperWidget is dead.")])
                recorder.record_draft(session, conversation.id, "Have you tried plugging it in?",
                                      prompt=[{"role": "user", "content": "My SuperWidget is dead."}],
                                      adapter_version=None, latency_ms=3.0)
                session.commit()
            latencies.append(time.perf_counter() - started)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {"txn_per_s": len(latencies) / wall, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "max_ms": latencies[-1] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="8,32")
    parser.add_argument("--transactions", type=int, default=960, help="per run, split over the threads")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    for threads in (int(n) for n in args.threads.split(",")):
        for name, make in (("write queue", get_engine), ("busy handler", busy_handler_engine)):
            url = open_store(f"sqlite:///{tempfile.mkdtemp()}/store.db")
            figures = contend(make(url), threads, args.transactions // threads)
            print(f"{threads:>3} threads, {name:<12}: {figures['txn_per_s']:.0f} txn/s, p50 {figures['p50_ms']:.1f} ms, "
                  f"p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.0f} ms")


if __name__ == "__main__":
    main()
