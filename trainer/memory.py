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

from collector.errors import InputError

GIB = 1024**3
# python, torch, tokenizers and allocator slack on CPU (fitted: peak RSS of SmolLM2 runs at 512 and 2048 tokens
# per micro-batch was 2.45-2.52 and 6.09-6.15 GiB; this model says 2.6 and 6.0)
RUNTIME_OVERHEAD_BYTES = int(0.6 * GIB)
# tensors a decoder layer keeps for backward per token, in units of hidden and intermediate width
# (norms, q/k/v/o inputs, residuals, LoRA inputs and dropout; gate, up, activation, product of the MLP)
HIDDEN_SAVES, INTERMEDIATE_SAVES = 16, 7


@dataclass(frozen=True)
class MemoryModel:
    """What one training step of a model needs, in bytes."""

    weights: int  # every parameter, frozen or not
    optimiser: int  # trainable parameters x (weight + grad + two AdamW moments)
    per_token_plain: int  # activations kept per token without checkpointing (all layers)
    per_token_checkpointed: int  # with checkpointing: each layer's input, plus one layer's activations
    loss_chunk: int  # one chunk of fp32 logits, forward and backward

    def peak(self, tokens: int, checkpointing: bool) -> int:
        per_token = self.per_token_checkpointed if checkpointing else self.per_token_plain
        return RUNTIME_OVERHEAD_BYTES + self.weights + self.optimiser + tokens * per_token + self.loss_chunk


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch_size: int  # rows per forward/backward; batch_size / this many steps are accumulated
    checkpointing: bool
    estimated_peak: int  # bytes


def memory_model(config, *, parameters: int, trainable: int, bytes_per_value: int, chunk_tokens: int) -> MemoryModel:
    """The estimate for a transformers config (hidden_size, intermediate_size, num_hidden_layers, vocab_size)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    intermediate = getattr(config, "intermediate_size", 4 * hidden)
    per_layer = (HIDDEN_SAVES * hidden + INTERMEDIATE_SAVES * intermediate) * bytes_per_value
    return MemoryModel(
        weights=parameters * bytes_per_value,
        optimiser=trainable * 4 * 4,  # fp32 master values, grads, exp_avg, exp_avg_sq
        per_token_plain=layers * per_layer + hidden * bytes_per_value,
        per_token_checkpointed=layers * hidden * bytes_per_value + per_layer,
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
        peak = model.peak(size * row_length, checkpointing)
        if peak <= cap_bytes:
            return MemoryPlan(micro_batch_size=size, checkpointing=checkpointing, estimated_peak=peak)
    least = model.peak(row_length, True)
    raise InputError(f"training needs about {least / GIB:.1f} GiB even one row at a time with checkpointing, above "
                     f"HOUSESTYLE_TRAIN_MEMORY_GIB={cap_bytes / GIB:g}; raise it or lower --max-length")
