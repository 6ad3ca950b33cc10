"""Who wrote what: the training split's conversations grouped by customer, the unit user-level privacy protects.

A customer writes many messages, often in several conversations, so protecting one example at a time would let
a frequent customer's data through many times over. A row's customer is, in order: the export's `customer` key
(the platform's contact, the widget's signed-in customer; exports that carry it), `customer_ref`, `contact`,
`conversation`; else its opening customer turn. The last is conservative on purpose: the records one
conversation becomes (one per reply when passages differ) share their opening, and two conversations that open
with the same words merge into one "customer", which only ever bounds more data together, never less.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.chat_format import Messages

CUSTOMER_KEYS = ("customer", "customer_ref", "contact", "conversation")


def customer_of(row: dict[str, Any]) -> str:
    """The customer a training row belongs to (see the module's docstring for the order of the keys)."""
    for key in CUSTOMER_KEYS:
        value = row.get(key)
        if value not in (None, ""):
            return f"{key}:{value}"
    messages = row.get("messages") or []
    opening = next((m.get("content", "") for m in messages if m.get("role") == "user"), None)
    if opening is None:
        prompt = row.get("prompt", "")
        opening = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
    return "opening:" + hashlib.sha256(str(opening).strip().encode()).hexdigest()[:16]


def train_rows(folder: Path) -> list[dict[str, Any]]:
    """The train split's rows as written, in file order (the order `trainer.data.load_export` reads them in)."""
    folder = Path(folder)
    path = folder / "train.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    saved = next((f for f in (folder, folder / "hf") if (f / "dataset_dict.json").is_file()), None)
    if saved is None:
        return []
    from datasets import load_from_disk

    return [dict(row) for row in load_from_disk(str(saved))["train"]]


def group_by_customer(conversations: Sequence[Messages], customers: Sequence[str]) -> list[list[Messages]]:
    """The conversations in groups, one per customer, in order of each customer's first conversation."""
    if len(conversations) != len(customers):
        raise ValueError(f"{len(conversations)} conversations but {len(customers)} customer keys")
    groups: dict[str, list[Messages]] = {}
    for messages, customer in zip(conversations, customers, strict=True):
        groups.setdefault(customer, []).append(messages)
    return list(groups.values())
