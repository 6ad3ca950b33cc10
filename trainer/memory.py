"""How a training run fits its memory cap: rows per micro-batch and whether to checkpoint activations.

`plan_memory` is a pure decision on an estimate (`MemoryModel`): weights, the LoRA's optimiser state, a fixed
runtime overhead, activations per token (with or without gradient checkpointing) and one loss chunk's logits.
On a CPU, recomputing activations costs a third more time while smaller micro-batches cost almost nothing (the
matrix products are already large), so the plan shrinks the micro-batch first and checkpoints only when one row
does not fit. On a GPU small micro-batches starve the device, so it checkpoints first and shrinks after.
The estimate's constants were fitted to peak RSS measured on SmolLM2-135M and the tiny base (bench/train_memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import InputError

GIB = 1024**3
# python, torch, tokenizers and allocator slack on CPU; with the constants below this model was fitted to the peak
# RSS of SmolLM2-135M runs (bench/train_memory.py): 2.45-2.52 GiB at 2 x 256 tokens per micro-batch (model: 2.6),
# 6.09-6.15 at 8 x 256 (model: 6.1), 11.0 at 2 x 1024 (model: 11.2)
RUNTIME_OVERHEAD_BYTES = int(0.6 * GIB)
# tensors a decoder layer keeps for backward per token, in units of hidden and intermediate width
# (norms, q/k/v/o inputs, residuals, LoRA inputs; gate, up, activation, product of the MLP)
HIDDEN_SAVES, INTERMEDIATE_SAVES = 12, 4
# and per token, per head, per position it attends over: packed rows carry a block mask, which sends CPU SDPA down
# its math path, so attention weights of the whole row are kept (this is why memory grows with row length)
ATTENTION_SAVES = 3


@dataclass(frozen=True)
class MemoryModel:
    """What one training step of a model needs, in bytes."""

    weights: int  # every parameter, frozen or not
    optimiser: int  # trainable parameters x (weight + grad + two AdamW moments)
    layers: int
    per_token_layer: int  # activations one layer keeps per token, attention weights aside
    per_token_position: int  # attention weights one layer keeps per token and per position of its row
    per_token_input: int  # a layer's input, all checkpointing keeps
    loss_chunk: int  # one chunk of fp32 logits, forward and backward

    def peak(self, rows: int, row_length: int, checkpointing: bool) -> int:
        tokens = rows * row_length
        layer = tokens * (self.per_token_layer + self.per_token_position * row_length)
        activations = tokens * self.per_token_input * self.layers + layer if checkpointing else layer * self.layers
        return RUNTIME_OVERHEAD_BYTES + self.weights + self.optimiser + activations + self.loss_chunk


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch_size: int  # rows per forward/backward; batch_size / this many steps are accumulated
    checkpointing: bool
    estimated_peak: int  # bytes


def memory_model(config, *, parameters: int, trainable: int, bytes_per_value: int, chunk_tokens: int) -> MemoryModel:
    """The estimate for a transformers config (hidden_size, intermediate_size, num_hidden_layers, vocab_size)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    intermediate = getattr(config, "intermediate_size", 4 * hidden)
    return MemoryModel(
        weights=parameters * bytes_per_value,
        optimiser=trainable * 4 * 4,  # fp32 master values, grads, exp_avg, exp_avg_sq
        layers=layers,
        per_token_layer=(HIDDEN_SAVES * hidden + INTERMEDIATE_SAVES * intermediate) * bytes_per_value,
        per_token_position=ATTENTION_SAVES * config.num_attention_heads * bytes_per_value,
        per_token_input=hidden * bytes_per_value,
        loss_chunk=3 * chunk_tokens * config.vocab_size * 4,
    )


def plan_memory(model: MemoryModel, *, cap_bytes: int, batch_size: int, row_length: int, on_gpu: bool) -> MemoryPlan:
    """The fastest (micro-batch, checkpointing) whose estimated peak stays under `cap_bytes`; InputError if none."""
    sizes = [size for size in range(batch_size, 0, -1) if batch_size % size == 0]
    if on_gpu:
        order = [(False, batch_size)] + [(True, size) for size in sizes]
    else:
        order = [(False, size) for size in sizes] + [(True, 1)]
    for checkpointing, size in order:
        peak = model.peak(size, row_length, checkpointing)
        if peak <= cap_bytes:
            return MemoryPlan(micro_batch_size=size, checkpointing=checkpointing, estimated_peak=peak)
    least = model.peak(1, row_length, True)
    raise InputError(f"training needs about {least / GIB:.1f} GiB even one row at a time with checkpointing, above "
                     f"HOUSESTYLE_TRAIN_MEMORY_GIB={cap_bytes / GIB:g}; raise it or lower --max-length")
