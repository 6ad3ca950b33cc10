"""Builds HouseStyle's base models: SmolLM2-135M-Instruct (the real one, trainer.smollm2) or the tiny toy.

The tiny base is the test fixture: a byte-level BPE tokenizer, a 2-layer Llama, a short generic pre-training. It is
pre-trained on GENERIC support text only (customer messages and the assistant's off-style drafts from
the bundled sample), never on the agents' house-style replies: it answers like a generic assistant, so whatever
GadgetCorp voice appears after fine-tuning was learned by the LoRA adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from collector.sample import SAMPLE_PATH
from core.prompts import exchange_messages
from core.settings import Settings
from trainer.base_card import BaseCard, already_built, ensure_free, staged_output, write_card
from trainer.chat_format import CHAT_TEMPLATE, END_TAG, PAD_TOKEN, SPECIAL_TOKENS, Messages
from trainer.data import encode_examples
from trainer.distributed import current_world
from trainer.fitting import FitConfig, Fitter

BaseName = Literal["smollm2", "tiny"]


class TinyBaseConfig(BaseModel):
    """Shape and pre-training of the tiny base; head_dim 64 because vLLM's CPU attention supports it."""

    vocab_size: int = 3000
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 2048
    pretrain_epochs: int = 12
    pretrain_lr: float = 2e-3
    pretrain_batch_size: int = 8
    row_length: int = 256
    seed: int = 0


def read_sample(path: Path = SAMPLE_PATH) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tokenizer_corpus(records: list[dict], system_prompt: str) -> list[str]:
    """Every text of the sample: vocabulary is not voice, and knowing GadgetCorp's words keeps sequences short."""
    texts = [system_prompt]
    for record in records:
        for turn in record["messages"]:
            texts += [text for text in (turn.get("content"), turn.get("draft")) if text]
    return texts


def generic_conversations(records: list[dict], system_prompt: str) -> list[Messages]:
    """Customer message → the generic draft the agents later rewrote or rejected (never their final reply)."""
    conversations = []
    for record in records:
        previous_user = None
        for turn in record["messages"]:
            if turn["role"] == "user":
                previous_user = turn["content"]
            elif turn.get("decision") in ("edited", "rejected") and turn.get("draft") and previous_user:
                conversations.append(exchange_messages(system_prompt, [(previous_user, turn["draft"])]))
    return conversations


def train_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_TAG, pad_token=PAD_TOKEN)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_base(out: Path, config: TinyBaseConfig | None = None, *, settings: Settings) -> Path:
    """Write a loadable (transformers, PEFT, vLLM) tiny chat model to `out`; same seed, same weights."""
    config = config or TinyBaseConfig()
    out = Path(out)
    ensure_free(out)
    system_prompt = settings.system_prompt
    records = read_sample()
    torch.manual_seed(config.seed)
    tokenizer = train_tokenizer(tokenizer_corpus(records, system_prompt), config.vocab_size)
    end_id = tokenizer.convert_tokens_to_ids(END_TAG)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=end_id,
        eos_token_id=end_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(model_config)
    examples = encode_examples(tokenizer, generic_conversations(records, system_prompt), config.row_length,
                               assistant_only=False)
    fitter = Fitter(
        model,
        FitConfig(lr=config.pretrain_lr, epochs=config.pretrain_epochs, batch_size=config.pretrain_batch_size,
                   row_length=config.row_length, seed=config.seed, warmup_steps=10, description="pre-training base"),
        current_world(settings),
    )
    fitter.fit(examples)
    model.generation_config = GenerationConfig(
        bos_token_id=end_id, eos_token_id=end_id, pad_token_id=pad_id, do_sample=False
    )
    from trainer.model_loading import weights_hash

    with staged_output(out) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder, save_jinja_files=False)
        write_card(folder, BaseCard(model="tiny", preset="tiny", source=f"pre-trained here (seed {config.seed})",
                                    weights_sha256=weights_hash(folder)))
    return out


def build_base(model: BaseName, out: Path, *, settings: Settings, tiny: TinyBaseConfig | None = None
               ) -> tuple[Path, bool]:
    """Build base `model` into `out`; (out, False) without work when `out` already holds exactly that base."""
    if already_built(out, model):
        return Path(out), False
    if model == "smollm2":
        from trainer.smollm2 import build_smollm2_base

        return build_smollm2_base(out), True
    return build_tiny_base(out, tiny, settings=settings), True
