"""Training data: reading an export folder, tokenising conversations with assistant-only targets, packing rows.

Packing puts several short conversations into one fixed-length row. Each conversation keeps its own position ids
(restarting at 0); with no attention mask given, transformers turns those resets into a block-diagonal mask, so no
token ever attends to another conversation (the same contract flash-attention's varlen path uses on GPUs).
Targets are shifted per conversation here, so no loss term crosses from one conversation into the next either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch

from collector.split import SPLITS
from core.errors import InputError
from trainer.chat_format import Messages, encode_conversation

log = logging.getLogger("housestyle.training")

IGNORE = -100


class RenderedExample(TypedDict):
    """A prompt-completion row: the served prompt as text (the base's chat template already applied, by
    `core.chat_template`) and the completion after it (the reply and its end-of-turn marker)."""

    prompt: str
    completion: str


Conversation = Messages | RenderedExample  # what an export's split holds, one per training example


@dataclass
class Example:
    """One tokenised conversation: `targets[t]` is the token to predict after `input_ids[t]`, or IGNORE."""

    input_ids: list[int]
    targets: list[int]

    @property
    def target_count(self) -> int:
        return sum(target != IGNORE for target in self.targets)


@dataclass
class Batch:
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    real_tokens: int  # tokens of conversations, not of padding

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.position_ids.to(device), self.targets.to(device), self.real_tokens)


# --- reading exports --------------------------------------------------------------------------------------------


def _conversation_of(row: dict[str, Any]) -> Conversation:
    """Chat rows carry `messages`; prompt/completion rows carry the two halves, as message lists (conversational)
    or as text, which `housestyle export --format prompt-completion` renders with the chat template already."""
    if "messages" in row:
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            return RenderedExample(prompt=prompt, completion=completion)
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        return [{"role": m["role"], "content": m["content"]} for m in [*prompt, *completion]]
    raise InputError(f"a data row has neither `messages` nor `prompt`/`completion` (keys: {sorted(row)}); "
                     "export with `housestyle export --format chat`")


def load_export(folder: Path) -> dict[str, list[Conversation]]:
    """The splits of an export folder: chat or prompt-completion JSONL files (train/validation/test.jsonl) or a
    saved DatasetDict."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder {folder} does not exist; create it with `housestyle export --out {folder}`")
    splits: dict[str, list[Conversation]] = {}
    if (folder / "train.jsonl").is_file():
        for split in SPLITS:
            path = folder / f"{split}.jsonl"
            if path.is_file():
                lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
                splits[split] = [_conversation_of(json.loads(line)) for line in lines]
    elif saved := next((f for f in (folder, folder / "hf") if (f / "dataset_dict.json").is_file()), None):
        from datasets import load_from_disk

        dataset = load_from_disk(str(saved))
        for split in SPLITS:
            if split in dataset:
                splits[split] = [_conversation_of(row) for row in dataset[split]]
    else:
        raise InputError(f"{folder} holds no export (no train.jsonl, no saved dataset); run `housestyle export --out {folder}`")
    if not splits.get("train"):
        raise InputError(f"the export in {folder} has an empty train split; import or review more conversations first")
    return splits


def dataset_hash(folder: Path) -> str:
    """The export's content hash from its manifest, else a sha256 over its split files."""
    manifest_path = Path(folder) / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        for key in ("content_sha256", "content_hash", "dataset_hash"):
            if isinstance(manifest.get(key), str):
                return manifest[key]
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != "manifest.json"):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# --- tokenising -------------------------------------------------------------------------------------------------


def encode_rendered(tokenizer: Any, example: RenderedExample) -> tuple[list[int], list[int]]:
    """Token ids of a rendered prompt and its completion, and a mask that is 1 on the completion's tokens.

    Each half is tokenised on its own, no special tokens added: vLLM tokenises the served prompt alone, and the
    model's reply continues from the prompt's last token."""
    prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    completion = tokenizer(example["completion"], add_special_tokens=False)["input_ids"]
    return [*prompt, *completion], [0] * len(prompt) + [1] * len(completion)


def encode_example(tokenizer: Any, conversation: Conversation, max_length: int, *, assistant_only: bool = True
                   ) -> Example:
    if isinstance(conversation, dict):
        input_ids, assistant_mask = encode_rendered(tokenizer, conversation)
    else:
        input_ids, assistant_mask = encode_conversation(tokenizer, conversation)
    input_ids, assistant_mask = input_ids[:max_length], assistant_mask[:max_length]
    learn = assistant_mask if assistant_only else [1] * len(input_ids)
    targets = [input_ids[t + 1] if learn[t + 1] else IGNORE for t in range(len(input_ids) - 1)] + [IGNORE]
    return Example(input_ids, targets)


def encode_examples(
    tokenizer: Any, conversations: list[Conversation], max_length: int, *, assistant_only: bool = True
) -> list[Example]:
    """Tokenised conversations; those with nothing left to learn (e.g. cut off before any reply) are dropped, and
    a warning says how many were cut at `max_length` (long prompts: answer memory's examples, knowledge passages)."""
    examples = [encode_example(tokenizer, m, max_length, assistant_only=assistant_only) for m in conversations]
    kept = [example for example in examples if example.target_count]
    cut = sum(len(example.input_ids) >= max_length for example in examples)
    if cut:
        log.warning("%d of %d conversations are longer than max_length %d tokens: their ends are cut (%d left nothing "
                    "to learn and are dropped); raise max_length, or lower HOUSESTYLE_MEMORY_EXAMPLES or "
                    "HOUSESTYLE_KNOWLEDGE_TOP_K", cut, len(examples), max_length, len(examples) - len(kept))
    return kept


# --- packing ----------------------------------------------------------------------------------------------------


def pack_rows(examples: list[Example], row_length: int) -> list[list[Example]]:
    """Greedy packing in the given order: a conversation goes into the current row while it fits."""
    rows: list[list[Example]] = []
    current: list[Example] = []
    used = 0
    for example in examples:
        size = len(example.input_ids)
        if current and used + size > row_length:
            rows.append(current)
            current, used = [], 0
        current.append(example)
        used += size
    if current:
        rows.append(current)
    return rows


def collate_packed(rows: list[list[Example]], row_length: int) -> Batch:
    """Rows of packed conversations as tensors; the tail pad is its own segment with no targets."""
    input_ids = torch.zeros(len(rows), row_length, dtype=torch.long)
    position_ids = torch.zeros(len(rows), row_length, dtype=torch.long)
    targets = torch.full((len(rows), row_length), IGNORE, dtype=torch.long)
    real_tokens = 0
    for row_index, row in enumerate(rows):
        start = 0
        for example in row:
            end = start + len(example.input_ids)
            input_ids[row_index, start:end] = torch.tensor(example.input_ids)
            targets[row_index, start:end] = torch.tensor(example.targets)
            position_ids[row_index, start:end] = torch.arange(end - start)
            start = end
        position_ids[row_index, start:] = torch.arange(row_length - start)
        real_tokens += start
    return Batch(input_ids, position_ids, targets, real_tokens)


def packed_batches(
    examples: list[Example], row_length: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1
) -> list[Batch]:
    """One epoch of packed batches for this process: shuffled by `seed`, the same number of batches on every rank."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    rows = pack_rows(order, row_length)
    per_rank = -(-len(rows) // world_size)
    rows = (rows * world_size)[: per_rank * world_size]  # wrap around so every rank gets the same number of rows
    mine = rows[rank::world_size]
    return [collate_packed(mine[i : i + batch_size], row_length) for i in range(0, len(mine), batch_size)]
