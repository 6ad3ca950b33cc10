"""manifest.json of an export: counts per split, what was dropped and why, redactions, dedup, options, content hash."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from collector.export.options import ExportFormat
from collector.split import SPLITS

SCHEMA_VERSION = 1


class DedupCounts(BaseModel):
    exact_duplicates: int = 0  # conversations
    near_duplicates: int = 0  # conversations
    macro_copies: int = 0  # replies over the cap (dropped with the customer turn they answered)
    threshold: float
    max_macro_copies: int


class ExportManifest(BaseModel):
    """manifest.json: everything a reader of the export (or an auditor) needs to know about it."""

    schema_version: int = SCHEMA_VERSION
    created_at: datetime
    format: ExportFormat
    system_prompt: str
    brand: str = "default"  # whose conversations these are (`housestyle brands`)
    files: dict[str, str]  # split -> path relative to the export folder
    hf_dataset: str | None = None  # dpo / kto: the same rows as a DatasetDict (`datasets.load_from_disk`)
    conversation_ids: str | None = None  # file of "split<TAB>conversation id" lines: what `housestyle forget` checks
    conversations: dict[str, int]  # split -> conversations
    records: dict[str, int]  # split -> lines / rows (prompt-completion: one per reply)
    dropped_conversations: dict[str, int]  # reason -> conversations
    dropped_turns: dict[str, int]  # reason -> replies dropped (each with the customer turns it answered)
    redactions: dict[str, int]  # PII type -> redacted values (placeholders) in the records
    dedup: DedupCounts | None
    options: dict[str, Any]
    content_sha256: str  # of the records, split by split: the same data gives the same hash
    worker_processes: int = 0  # worker processes that prepared conversations (0: all in the exporting process)

    @property
    def total_conversations(self) -> int:
        return sum(self.conversations.values())

    def summary(self) -> str:
        """A few lines for people: what was written, what was left out, and why."""
        splits = " / ".join(f"{name} {self.conversations.get(name, 0)}" for name in SPLITS)
        lines = [f"exported {self.total_conversations} conversations ({splits}) as {self.format}"]
        if self.format == "prompt-completion":
            lines[0] += f", {sum(self.records.values())} prompt/completion pairs"
        elif self.format in ("dpo", "kto"):
            rows = " / ".join(f"{name} {self.records.get(name, 0)}" for name in SPLITS)
            lines[0] += f", {'preference pairs' if self.format == 'dpo' else 'KTO examples'} {rows}"
        if self.dropped_conversations:
            lines.append("skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.dropped_conversations.items())))
        if self.dropped_turns:
            lines.append("dropped replies: " + ", ".join(f"{n} {why}" for why, n in sorted(self.dropped_turns.items())))
        if self.options.get("redact"):
            found = ", ".join(f"{n} {kind}" for kind, n in self.redactions.items() if n) or "none found"
            lines.append(f"PII redacted: {found}")
        else:
            lines.append("PII redaction: off")
        if self.dedup is not None:
            lines.append(
                f"duplicates removed: {self.dedup.exact_duplicates} exact, {self.dedup.near_duplicates} near "
                f"(similarity >= {self.dedup.threshold}), {self.dedup.macro_copies} macro replies over "
                f"{self.dedup.max_macro_copies} copies"
            )
        else:
            lines.append("de-duplication: off")
        lines.append(f"content sha256 {self.content_sha256}")
        return "\n".join(lines)
