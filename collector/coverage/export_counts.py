"""Coverage counts from an export folder (chat or hf): per split, the products and intents of what training saw."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collector.coverage.gaps import TopicTally
from collector.export import ExportManifest
from collector.knowledge.topics import NO_INTENT, NO_PRODUCT, ProductMatcher
from core.errors import InputError
from core.models import Role


def _export_conversations(export_dir: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(split, messages) of every record of a chat or hf export; InputError for anything else."""
    try:
        manifest = ExportManifest.model_validate_json((export_dir / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{export_dir} has no manifest.json; give a folder written by `housestyle export`") from None
    except ValueError:
        raise InputError(f"{export_dir}/manifest.json is not an export manifest; export again") from None
    if manifest.format == "prompt-completion":
        raise InputError(f"{export_dir} is a prompt-completion export; coverage reads chat or hf exports")
    if manifest.format == "hf":
        from datasets import load_from_disk

        for split, dataset in load_from_disk(str(export_dir / "hf")).items():
            for row in dataset:
                yield split, row["messages"]
        return
    for split, name in manifest.files.items():
        with (export_dir / name).open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield split, json.loads(line)["messages"]


def _export_dialogues(export_dir: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(split, turns without the system prompt) of every exported conversation, once each.

    A grounded conversation whose replies had different passages is one record per reply, each holding the previous
    record's turns and one more exchange (`collector.export.render`): those records are one conversation, and its
    last (longest) record stands for it.
    """
    held: tuple[str, list[dict[str, Any]]] | None = None
    for split, messages in _export_conversations(export_dir):
        turns = [m for m in messages if m["role"] != "system"]
        if held is not None and not (split == held[0] and turns[: len(held[1])] == held[1]):
            yield held
        held = (split, turns)
    if held is not None:
        yield held


def count_export(
    export_dir: Path,
    matcher: ProductMatcher,
    classifier: Any,
    product_tallies: dict[str, TopicTally],
    intent_tallies: dict[str, TopicTally],
) -> Counter[str]:
    """Per-split counts of each topic in an export's conversations, the same way topics are found in the store."""
    totals: Counter[str] = Counter()
    for split, turns in _export_dialogues(export_dir):
        totals[split] += 1
        texts = [m["content"] for m in turns]
        customer = [m["content"] for m in turns if m["role"] == Role.USER.value]
        for name in matcher.find("\n".join(texts)) or [NO_PRODUCT]:
            product_tallies[name].splits[split] += 1
        for name in list(dict.fromkeys(i for text in customer if (i := classifier.classify(text)))) or [NO_INTENT]:
            intent_tallies[name].splits[split] += 1
    return totals
