"""The training loss without full-vocabulary logits: cross-entropy over the hidden states of target tokens only.

A causal LM's forward builds logits for every position: batch x length x vocabulary floats (8 x 1024 x 49,152 fp32
is 1.6 GB, and autograd keeps two more copies). Only the assistant's tokens carry a target, so `CausalLMLoss` runs
the decoder to its last hidden states, keeps the rows that have a target, and projects them through the output
layer in chunks, each under activation checkpointing: at most one chunk's logits exist at a time, forward or
backward. Liger's and Apple's cut-cross-entropy kernels do the same fused on GPUs but need Triton, which the CPU
build of torch lacks; this is the plain-torch version of the idea, exact to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from trainer.data import IGNORE, Batch

DEFAULT_CHUNK_TOKENS = 512


def _chunk_loss(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module, softcap: float | None
                ) -> torch.Tensor:
    logits = head(hidden).float()
    if softcap:  # Gemma-style final logit soft-capping, applied as the model's own forward would
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets, reduction="sum")


class CausalLMLoss(torch.nn.Module):
    """Wraps a causal LM (plain or PEFT): forward(batch tensors) -> summed loss over its targets.

    A module of its own so DDP can wrap it: every parameter is reached through this module's forward.
    """

    def __init__(self, model: torch.nn.Module, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> None:
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
        hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
        keep = targets != IGNORE
        hidden, targets = hidden[keep], targets[keep]
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], self.chunk_tokens):
            piece = (hidden[start : start + self.chunk_tokens], targets[start : start + self.chunk_tokens])
            if torch.is_grad_enabled():
                total = total + checkpoint(_chunk_loss, *piece, head, self.softcap, use_reentrant=False)
            else:
                total = total + _chunk_loss(*piece, head, self.softcap)
        return total


def batch_loss(loss_model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's targets, and how many targets there were."""
    loss = loss_model(batch.input_ids, batch.position_ids, batch.targets)
    return loss, int((batch.targets != IGNORE).sum())
