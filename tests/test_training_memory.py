"""Training in bounded memory: the memory plan's choices, the chunked loss, gradient accumulation, one order."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.errors import InputError
from trainer.data import IGNORE, packed_batches
from trainer.fitting import micro_batches
from trainer.loss import CausalLMLoss
from trainer.memory import GIB, MemoryModel, plan_memory
from trainer.train import canonical_order

# a model whose step needs 0.6 GiB runtime + 1.4 GiB weights, 1 MiB per token plain (8 layers of 128 KiB),
# 1/8 MiB + 16 KiB checkpointed (8 layer inputs of 2 KiB and one layer)
MIB = 2**20
MODEL = MemoryModel(weights=int(1.4 * GIB), optimiser=0, layers=8, per_token_layer=MIB // 8,
                    per_token_position=0, per_token_input=2048, loss_chunk=0)


@pytest.mark.parametrize(
    ("cap_gib", "on_gpu", "micro_batch_size", "checkpointing"),
    [
        (20, False, 8, False),  # everything fits: one micro-batch, no recomputation
        (3.5, False, 4, False),  # CPU: halve the micro-batch before paying for recomputation
        (2.3, False, 1, False),  # CPU: one row at a time still without checkpointing
        (2.1, False, 1, True),  # CPU: one row only fits with checkpointing
        (20, True, 8, False),  # GPU: fits as is
        (3, True, 8, True),  # GPU: checkpoint first, keep the device busy with the whole batch
        (2.1, True, 2, True),  # GPU: then shrink
        (2.04, True, 1, True),
    ],
)
def test_memory_plan_shrinks_micro_batches_or_checkpoints_to_fit_the_cap(
    cap_gib: float, on_gpu: bool, micro_batch_size: int, checkpointing: bool
) -> None:
    plan = plan_memory(MODEL, cap_bytes=int(cap_gib * GIB), batch_size=8, row_length=256, on_gpu=on_gpu)
    assert (plan.micro_batch_size, plan.checkpointing) == (micro_batch_size, checkpointing)
    assert plan.estimated_peak <= cap_gib * GIB


def test_memory_plan_refuses_a_cap_nothing_fits_under_with_the_fix() -> None:
    with pytest.raises(InputError, match="raise it or lower --max-length"):
        plan_memory(MODEL, cap_bytes=2 * GIB, batch_size=8, row_length=256, on_gpu=False)


def test_micro_batches_divide_the_batch_size() -> None:
    for batch_size in (1, 6, 8, 12):
        plan = plan_memory(MODEL, cap_bytes=int(2.3 * GIB), batch_size=batch_size, row_length=64, on_gpu=False)
        assert batch_size % plan.micro_batch_size == 0


def _examples(tiny_base: Path, gadgetcorp_export: Path):
    from trainer.data import encode_examples, load_export
    from trainer.model_loading import load_tokenizer

    return encode_examples(load_tokenizer(tiny_base), load_export(gadgetcorp_export)["train"], 256)


def test_chunked_loss_equals_the_full_logits_loss_and_its_gradients(tiny_base: Path, gadgetcorp_export: Path) -> None:
    from trainer.model_loading import load_model

    torch.manual_seed(0)
    model = load_model(tiny_base, torch.device("cpu"))
    batch = packed_batches(_examples(tiny_base, gadgetcorp_export), 256, 4, seed=0)[0]
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    reference = F.cross_entropy(logits.view(-1, logits.size(-1)), batch.targets.view(-1), ignore_index=IGNORE,
                                reduction="sum")
    reference.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    chunked = CausalLMLoss(model, chunk_tokens=37)(batch.input_ids, batch.position_ids, batch.targets)
    chunked.backward()
    torch.testing.assert_close(chunked, reference, rtol=1e-5, atol=1e-3)
    # fp32 sums taken in another order: on one CPU (2026-12-02) 1 of the embedding's 385,536 gradients was 1.7e-5 off
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], rtol=1e-4, atol=5e-5,
                                   msg=lambda detail, name=name: f"{name}: {detail}")


def test_accumulated_micro_batches_give_the_whole_batch_gradient(tiny_base: Path, gadgetcorp_export: Path) -> None:
    from trainer.model_loading import load_model

    model = load_model(tiny_base, torch.device("cpu"))
    loss_model = CausalLMLoss(model)
    batch = packed_batches(_examples(tiny_base, gadgetcorp_export), 256, 4, seed=1)[0]
    targets = int((batch.targets != IGNORE).sum())
    (loss_model(batch.input_ids, batch.position_ids, batch.targets) / targets).backward()
    whole = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    for micro in micro_batches(batch, 1):
        (loss_model(micro.input_ids, micro.position_ids, micro.targets) / targets).backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, whole[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_same_conversations_in_any_line_order_train_in_one_order(gadgetcorp_export: Path) -> None:
    from trainer.data import load_export

    conversations = load_export(gadgetcorp_export)["train"]
    shuffled = random.Random(7).sample(conversations, len(conversations))
    assert shuffled != conversations
    assert canonical_order(shuffled) == canonical_order(conversations)
    assert json.dumps(canonical_order(shuffled)) == json.dumps(canonical_order(list(reversed(conversations))))


def test_memory_grows_with_row_length_through_attention_weights() -> None:
    model = MemoryModel(weights=0, optimiser=0, layers=30, per_token_layer=53_000, per_token_position=108,
                        per_token_input=2304, loss_chunk=0)
    # the same tokens per micro-batch in longer rows need more (measured on SmolLM2: 6.1 vs 11.0 GiB)
    assert model.peak(2, 1024, False) > 1.5 * model.peak(8, 256, False)
    fixed = model.peak(0, 1024, False)  # the runtime alone
    assert model.peak(1, 1024, True) - fixed < (model.peak(1, 1024, False) - fixed) / 10  # checkpointing pays
