"""Ingest speed: messages/s through the recorder on SQLite and Postgres, against raw driver inserts of the same rows.

Each conversation is what live traffic makes: start it, the customer's message, the assistant's draft, the agent's
edit (two transcript messages). "live" runs one transaction per conversation; "batched" 100 per
transaction; "api exchange" is what `/v1/chat/completions` records after each answer (an auto-mode conversation, the
caller's message and the sent reply, one transaction); "widget exchange" what a widget message costs (the message in
one transaction before the model is asked, the draft and its version in a second after: two transactions); "import_file" the same exchanges as a HouseStyle file through the importer's bulk path. The baseline, measured in the same run on the same store kind, inserts the same rows with the raw
driver's executemany in one transaction: the ceiling. Also times `import_file` on the bundled sample.

    .venv/bin/python bench/ingest.py [--conversations 1000] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector import recorder
from collector.importer import import_file  # noqa: E402
from collector.sample import SAMPLE_PATH  # noqa: E402
from core import db  # noqa: E402
from core.models import ReplyMode  # noqa: E402

CUSTOMER = "Hi, my SuperWidget won't turn on. My order number is GC-1234567."
DRAFT = "Please check the power supply."
FINAL = (
    "I'm sorry to hear you're having trouble with your SuperWidget! Have you tried plugging it into a different "
    "power outlet and ensuring the power switch is fully engaged?"
)
PROMPT = [{"role": "system", "content": "You are GadgetCorp's assistant."}, {"role": "user", "content": CUSTOMER}]
MESSAGES_PER_CONVERSATION = 2  # the customer's message and the agent's final reply
BATCH = 100
REPEATS = 3


def record_conversation(session, number: int) -> None:
    conversation = recorder.start_conversation(session, external_id=f"bench-{number}", mode=ReplyMode.ASSIST)
    recorder.add_message(session, conversation.id, "user", CUSTOMER)
    draft = recorder.record_draft(session, conversation.id, DRAFT, adapter_version="v0001-bench", latency_ms=120.0)
    recorder.record_review(session, draft.id, "edited", agent_id="alice", final_text=FINAL)


def recorder_live(url: str, count: int, offset: int) -> None:
    for number in range(offset, offset + count):
        with db.session_scope(url) as session:
            record_conversation(session, number)


def api_exchange(url: str, count: int, offset: int) -> None:
    for number in range(offset, offset + count):
        with db.session_scope(url) as session:
            conversation = recorder.start_conversation(session, external_id=f"api-{number}", channel="api",
                                                       mode=ReplyMode.AUTO, source="api")
            recorder.add_messages(session, conversation.id, [("user", CUSTOMER)])
            recorder.record_draft(session, conversation.id, FINAL, prompt=PROMPT, adapter_version="v0001-bench",
                                  latency_ms=120.0)


def widget_exchange(url: str, count: int, offset: int) -> float:
    """Messages/s of the widget's path: each conversation started beforehand (not timed), then per message the two
    transactions `plugin.assistant` runs; the best of REPEATS."""
    best = 0.0
    for repeat in range(REPEATS):
        first = offset + repeat * count
        with db.session_scope(url) as session:
            ids = [recorder.start_conversation(session, external_id=f"widget-{number}", mode=ReplyMode.AUTO).id
                   for number in range(first, first + count)]
        started = time.perf_counter()
        for conversation_id in ids:
            with db.session_scope(url) as session:  # plugin.assistant.receive_customer_message
                recorder.add_message(session, conversation_id, "user", CUSTOMER)
                recorder.get_conversation(session, conversation_id)
                recorder.transcript_turns(session, conversation_id)
            with db.session_scope(url) as session:  # plugin.assistant.record_reply (auto mode: the reply is sent)
                recorder.record_draft(session, conversation_id, FINAL, prompt=PROMPT, adapter_version="v0001-bench",
                                      latency_ms=120.0)
        best = max(best, count * MESSAGES_PER_CONVERSATION / (time.perf_counter() - started))
    return best


def recorder_batched(url: str, count: int, offset: int) -> None:
    for start in range(offset, offset + count, BATCH):
        with db.session_scope(url) as session:
            for number in range(start, min(start + BATCH, offset + count)):
                record_conversation(session, number)


def raw_rows(count: int, offset: int) -> dict[str, list[tuple]]:
    """The same rows the recorder writes, with explicit ids, for the driver baseline."""
    now = datetime.now(UTC)
    base = 10_000_000 + offset  # clear of the ids the recorder runs use
    rows: dict[str, list[tuple]] = {"conversation": [], "draft": [], "review": [], "message": []}
    for index in range(count):
        cid = base + index
        rows["conversation"].append((cid, f"raw-{cid}", "web", None, "assist", "open", "live", None, now, now))
        rows["draft"].append((cid, cid, 1, DRAFT, None, "v0001-bench", 120.0, "reviewed", None, None, now))
        rows["review"].append((cid, cid, "edited", FINAL, "alice", None, 0.7, now))
        rows["message"].append((2 * cid, cid, 0, "user", CUSTOMER, None, now))
        rows["message"].append((2 * cid + 1, cid, 1, "assistant", FINAL, cid, now))
    return rows


INSERTS = {
    "conversation": "INSERT INTO conversation (id, external_id, channel, customer_ref, mode, status, source, content_hash, created_at, updated_at) VALUES ({})",
    "draft": "INSERT INTO draft (id, conversation_id, position, content, prompt, adapter_version, latency_ms, status, claimed_by, claimed_until, created_at) VALUES ({})",
    "review": "INSERT INTO review (id, draft_id, decision, final_text, agent_id, reason, edit_distance, created_at) VALUES ({})",
    "message": "INSERT INTO message (id, conversation_id, position, role, content, draft_id, created_at) VALUES ({})",
}


def raw_driver(url: str, count: int, offset: int) -> None:
    rows = raw_rows(count, offset)
    engine = db.get_engine(url)
    connection = engine.raw_connection()  # the DB-API connection itself: sqlite3 or psycopg
    try:
        cursor = connection.cursor()
        marker = "?" if engine.dialect.name == "sqlite" else "%s"
        for table, statement in INSERTS.items():
            width = len(rows[table][0])
            cursor.executemany(statement.format(", ".join([marker] * width)), rows[table])
        connection.commit()
    finally:
        connection.close()


def import_path(url: str, count: int, offset: int) -> None:
    """The bulk path: `import_file` on a HouseStyle file of the same exchanges (writing the file is not timed)."""
    import_file(BENCH_FILES[(count, offset)], url=url)


BENCH_FILES: dict[tuple[int, int], Path] = {}


def write_bench_file(folder: Path, count: int, offset: int) -> None:
    path = folder / f"bench-{offset}.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for number in range(offset, offset + count):
            turns = [{"role": "user", "content": CUSTOMER}, {"role": "assistant", "content": FINAL, "draft": DRAFT, "decision": "edited"}]
            out.write(json.dumps({"external_id": f"bulk-{number}", "channel": "web", "messages": turns}) + "\n")
    BENCH_FILES[(count, offset)] = path


def measure(run: Callable[[str, int, int], None], url: str, count: int, offset: int) -> float:
    """Messages per second for `count` conversations: the best of REPEATS runs, since the machine is shared."""
    best = 0.0
    for repeat in range(REPEATS):
        started = time.perf_counter()
        run(url, count, offset + repeat * count)
        best = max(best, count * MESSAGES_PER_CONVERSATION / (time.perf_counter() - started))
    return best


def bench_store(label: str, url: str, count: int, folder: Path) -> None:
    db.upgrade(url)
    for repeat in range(REPEATS):
        write_bench_file(folder, count, 5_000_000 + repeat * count)
    recorder_live(url, 50, 0)  # warm up: connections, statement caches
    raw_driver(url, 50, 50)
    baseline = measure(raw_driver, url, count, 1_000_000)
    live = measure(recorder_live, url, count, 100)
    batched = measure(recorder_batched, url, count, 100 + REPEATS * count)
    api = measure(api_exchange, url, count, 7_000_000)
    widget = widget_exchange(url, count, 8_000_000)
    bulk = measure(import_path, url, count, 5_000_000)
    print(f"{label:8} raw executemany (baseline) {baseline:9,.0f} messages/s")
    print(f"{label:8} recorder, 1 txn/conv       {live:9,.0f} messages/s  ratio {live / baseline:.3f} of baseline")
    print(f"{label:8} recorder, {BATCH} conv/txn     {batched:9,.0f} messages/s  ratio {batched / baseline:.3f} of baseline")
    print(f"{label:8} api exchange, 1 txn        {api:9,.0f} messages/s  ratio {api / baseline:.3f} of baseline")
    print(f"{label:8} widget exchange, 2 txns    {widget:9,.0f} messages/s  ratio {widget / baseline:.3f} of baseline")
    print(f"{label:8} import_file (bulk path)    {bulk:9,.0f} messages/s  ratio {bulk / baseline:.3f} of baseline")


def bench_sample_import(url: str) -> None:
    started = time.perf_counter()
    db.open_store(url)
    report = import_file(SAMPLE_PATH, url=url, source="sample")
    seconds = time.perf_counter() - started
    print(f"sample   import_file gadgetcorp.jsonl: {report.added} conversations, {report.messages} messages in "
          f"{seconds:.2f} s ({report.messages / seconds:,.0f} messages/s, schema upgrade included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000, help="per measured run (best of 3)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="housestyle-bench-") as folder:
        bench_store("sqlite", f"sqlite:///{folder}/bench.db", args.conversations, Path(folder))
        bench_sample_import(f"sqlite:///{folder}/sample.db")
        if args.no_postgres:
            return
        from tests.fixtures.stores import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        try:
            bench_store("postgres", cluster.create_database(), args.conversations, Path(folder))
        finally:
            db.get_engine.cache_clear()  # drop pooled connections before the server goes away
            cluster.stop()


if __name__ == "__main__":
    main()
