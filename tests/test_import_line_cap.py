"""Issue 28 item 13 (import): a 60 MB line of 3,200 small messages was accepted and its redaction ran past 10 minutes
at 4.2 GB. A line over HOUSESTYLE_IMPORT_MAX_LINE_BYTES is one bad line with a reason, skipped without being read
whole; the lines around it still land."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from collector.importer import DEFAULT_MAX_LINE_BYTES, ImportRefused, import_file, iter_lines
from core.settings import Settings


def chat_line(*contents: str) -> str:
    roles = ["user", "assistant"]
    return json.dumps({"messages": [{"role": roles[i % 2], "content": text} for i, text in enumerate(contents)]})


def padded(size: int, seed: str) -> str:
    """A chat line of exactly `size` bytes (its user message padded)."""
    bare = chat_line(seed, "ok")
    line = chat_line(seed + "x" * (size - len(bare)), "ok")
    assert len(line.encode()) == size
    return line


def test_the_import_cap_is_the_settings_default() -> None:
    assert DEFAULT_MAX_LINE_BYTES == Settings().import_max_line_bytes < 60_000_000


def test_a_line_over_the_cap_is_one_bad_line_and_the_rest_lands(store_url: str, tmp_path: Path) -> None:
    """Catches `>` turned into `>=` in iter_lines (the line of exactly the cap is refused) and the cap not applied
    (the long line imported)."""
    cap = 2_000
    dump = chat_line(*(f"message {i}" for i in range(3_200)))  # the reproduction's shape, scaled down
    lines = [padded(cap, "at the cap"), dump, padded(cap + 1, "one byte over"), chat_line("hello", "hi")]
    path = tmp_path / "dump.jsonl"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")

    report = import_file(path, url=store_url, max_line_bytes=cap)
    assert report.added == 2
    assert [error.line for error in report.errors] == [2, 3]
    assert f"{len(dump.encode()):,} bytes, over the 2,000-byte limit" in report.errors[0].reason
    assert "HOUSESTYLE_IMPORT_MAX_LINE_BYTES" in report.errors[0].reason
    assert "2,001 bytes" in report.errors[1].reason

    with pytest.raises(ImportRefused, match="line 2: line is"):
        import_file(path, url=store_url, max_line_bytes=cap, strict=True)


def test_a_line_with_a_bom_at_the_cap_still_fits(tmp_path: Path) -> None:
    """The BOM is not part of the line: catches a read window that forgets it (the first line cut and refused)."""
    line = padded(500, "first")
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r\n" + line.encode())
    assert [text for _, text, _ in iter_lines(path, 500)] == [line, line]


def test_an_oversized_line_is_never_held_whole(tmp_path: Path) -> None:
    """A 30 MB line with a 1 MB cap: peak allocation stays a few MB. Catches reading the line with an unbounded
    `readline()` (or `for raw in handle`) before measuring it."""
    path = tmp_path / "huge.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        handle.write(chat_line("before", "ok") + "\n")
        handle.write(chat_line("x" * 30_000_000, "ok") + "\n")
        handle.write(chat_line("after", "ok") + "\n")
    tracemalloc.start()
    try:
        seen = [(number, text if isinstance(text, str) else "too long", consumed)
                for number, text, consumed in iter_lines(path, 1_000_000)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [text for _, text, _ in seen] == [chat_line("before", "ok"), "too long", chat_line("after", "ok")]
    assert seen[-1][2] == path.stat().st_size  # every byte accounted for in the progress
    assert peak < 6_000_000
