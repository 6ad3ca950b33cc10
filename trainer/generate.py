"""Greedy replies from a base model, with or without an adapter, under the company's system prompt.

`ReplyGenerator` is what evaluation needs from an engine, for the base or the base with an adapter: chat prompts in,
greedy replies out, and the summed loss of tokenised conversations' targets. `TransformersReplies` is the
in-process one (transformers `generate` in left-padded batches, packed forward passes for the loss);
serving.batch.VllmReplies answers the same through vLLM (continuous batching; prompt log-probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from core.prompts import USER, build_messages
from core.settings import Settings
from trainer.chat_format import Messages
from trainer.data import Example
from trainer.distributed import use_cpu_threads
from trainer.model_loading import load_tokenizer, load_with_adapter, resolve_base

DEFAULT_MAX_NEW_TOKENS = 128


@dataclass
class ReplyModel:
    """A loaded tokenizer + model pair ready to answer."""

    tokenizer: Any
    model: torch.nn.Module
    device: torch.device


def load_reply_model(base: str | Path, adapter: str | Path | None = None, *, settings: Settings) -> ReplyModel:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        use_cpu_threads(settings.cpu_threads)
    base_path = resolve_base(base)
    tokenizer = load_tokenizer(base_path)
    tokenizer.padding_side = "left"  # batched generation continues every prompt from its last real token
    model = load_with_adapter(base_path, Path(adapter) if adapter else None, device).eval()
    return ReplyModel(tokenizer, model, device)


class ReplyGenerator(Protocol):
    def replies(self, prompts: list[Messages], *, adapter: Path | None, max_new_tokens: int) -> list[str]:
        """The greedy reply to each prompt (a conversation ending with a customer turn), in order."""
        ...

    def summed_loss(self, examples: list[Example], *, adapter: Path | None) -> tuple[float, int]:
        """Summed cross-entropy over the examples' targets (natural log), and how many targets there were."""
        ...


class LoadedModels:
    """The base model, or the base with one adapter, loaded on first use; one at a time to bound memory."""

    def __init__(self, base: str | Path, settings: Settings) -> None:
        self.base, self.settings = base, settings
        self._loaded: tuple[Path | None, ReplyModel] | None = None

    def get(self, adapter: str | Path | None) -> ReplyModel:
        key = Path(adapter) if adapter else None
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None  # let the previous model go before loading the next
            self._loaded = (key, load_reply_model(self.base, key, settings=self.settings))
        return self._loaded[1]


class TransformersReplies:
    """ReplyGenerator on transformers' `generate` in this process (left-padded batches of `batch_size`)."""

    def __init__(self, models: LoadedModels, batch_size: int = 16) -> None:
        self.models, self.batch_size = models, batch_size

    def replies(self, prompts: list[Messages], *, adapter: Path | None, max_new_tokens: int) -> list[str]:
        return greedy_replies(self.models.get(adapter), prompts, max_new_tokens=max_new_tokens,
                              batch_size=self.batch_size)

    def summed_loss(self, examples: list[Example], *, adapter: Path | None) -> tuple[float, int]:
        from trainer.distributed import World
        from trainer.fitting import FitConfig, evaluate_loss

        if not examples:
            return 0.0, 0
        reply_model = self.models.get(adapter)
        # rows as long as the longest conversation: attention over a packed row costs its length squared
        row_length = max(len(e.input_ids) for e in examples)
        mean = evaluate_loss(reply_model.model, examples, FitConfig(lr=0, epochs=1, batch_size=8, row_length=row_length),
                             World(rank=0, size=1, device=reply_model.device))
        count = sum(e.target_count for e in examples)
        return mean * count, count


@torch.no_grad()
def greedy_replies(
    reply_model: ReplyModel, prompts: list[Messages], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 16,
) -> list[str]:
    """The greedy continuation of each prompt (a conversation ending with a user turn) as plain text."""
    tokenizer, model = reply_model.tokenizer, reply_model.model
    stop_ids = {tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)} - {None}
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts[start : start + batch_size]]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(reply_model.device)
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(stop_ids),
            pad_token_id=tokenizer.pad_token_id,
        )
        for row in output[:, inputs["input_ids"].shape[1] :]:
            replies.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return replies


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def generate_reply(
    base: str | Path, message: str, *, settings: Settings, adapter: str | Path | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> str:
    """The reply to one customer message, with the company system prompt (HOUSESTYLE_SYSTEM_PROMPT) applied."""
    reply_model = load_reply_model(base, adapter, settings=settings)
    return greedy_replies(reply_model, [build_messages(settings.system_prompt, [(USER, message)])],
                          max_new_tokens=max_new_tokens)[0]
