"""Import memory: peak RSS of `housestyle import` on a large file and on a file with one 50 MB message, against the
same command on a one-line file (the baseline: Python, the libraries, the store) measured in the same run.

The importer reads one line at a time and stores batches of 500 conversations, so the large file should cost about
what the one-line file costs, and a line with a message over HOUSESTYLE_MAX_MESSAGE_CHARS is refused as a bad line
after holding that one line only.

    .venv/bin/python bench/import_memory.py [--conversations 40000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CUSTOMER = "Hi, my SuperWidget won't turn on since the update last night. I tried the power button twice. " * 8
REPLY = "I'm sorry to hear you're having trouble with your SuperWidget! Have you tried a different outlet? " * 8


def write_file(path: Path, conversations: int, *, huge_message_chars: int = 0) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for number in range(conversations):
            record = {"external_id": f"mem-{number}", "messages": [
                {"role": "user", "content": f"{number}: {CUSTOMER}"}, {"role": "assistant", "content": REPLY}]}
            handle.write(json.dumps(record) + "\n")
        if huge_message_chars:
            record = {"messages": [{"role": "user", "content": "x" * huge_message_chars},
                                   {"role": "assistant", "content": "ok"}]}
            handle.write(json.dumps(record) + "\n")
    return path


def peak_rss_mib(path: Path, home: Path) -> tuple[float, float, str]:
    """Run `housestyle import PATH` in a fresh process; (its peak RSS in MiB, seconds, its summary line)."""
    code = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-m', 'plugin.cli', 'import', sys.argv[1]],\n"
        "                   capture_output=True, text=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode, r.stdout.strip()[-120:])\n"
    )
    env = {**os.environ, "HOUSESTYLE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("HOUSESTYLE_DATABASE_URL", None)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=True,
                         cwd=ROOT).stdout.split(maxsplit=2)
    seconds = time.perf_counter() - started
    if out[1] != "0":
        raise SystemExit(f"import of {path} failed: {out}")
    return int(out[0]) / 1024, seconds, out[2].strip() if len(out) > 2 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=40_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="housestyle-bench-import-") as tmp:
        root = Path(tmp)
        small = write_file(root / "one.jsonl", 1)
        large = write_file(root / "large.jsonl", args.conversations)
        huge = write_file(root / "huge.jsonl", 1, huge_message_chars=50_000_000)
        rows = []
        for name, path in (("one line (baseline)", small), (f"{args.conversations:,} conversations", large),
                           ("one 50 MB message", huge)):
            rss, seconds, summary = peak_rss_mib(path, root / f"home-{path.stem}")
            rows.append((name, path.stat().st_size / 2**20, rss, seconds, summary))
        baseline = rows[0][2]
        print(f"load: {os.getloadavg()[0]:.2f} (1-min average) on {os.cpu_count()} cores")
        print(f"{'file':28} {'size MiB':>9} {'peak RSS MiB':>13} {'vs baseline':>12} {'s':>7}  summary")
        for name, size, rss, seconds, summary in rows:
            print(f"{name:28} {size:9.1f} {rss:13.0f} {rss / baseline:11.2f}x {seconds:7.1f}  {summary}")


if __name__ == "__main__":
    main()
