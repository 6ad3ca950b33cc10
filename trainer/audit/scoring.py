"""How likely a model finds each of many versions of one reply: the summed loss of their differing reply tokens.

A canary and its alternatives share everything up to the secret (system prompt, turns, the reply so far), so the
shared tokens run through the model once and their key/value cache serves the whole batch of endings: scoring 128
alternatives costs 128 short endings, not 128 whole conversations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from trainer.chat_format import Messages, encode_conversation

DEFAULT_BATCH = 32  # endings per forward pass; with a 49k vocabulary, 32 x 24 tokens of logits is ~150 MB


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence has in common."""
    shortest = min(len(sequence) for sequence in sequences)
    for position in range(shortest):
        token = sequences[0][position]
        if any(sequence[position] != token for sequence in sequences):
            return position
    return shortest


@torch.no_grad()
def ending_losses(model: torch.nn.Module, tokenizer: Any, conversations: Sequence[Messages], device: torch.device,
                  batch_size: int = DEFAULT_BATCH) -> list[float]:
    """For each conversation, the summed loss (natural log) of its assistant tokens after the part all share."""
    encoded = [encode_conversation(tokenizer, messages) for messages in conversations]
    ids = [input_ids for input_ids, _ in encoded]
    # at least one token of context, and at least one token of each ending left to score
    shared = max(1, min(shared_prefix_length(ids), min(len(sequence) for sequence in ids) - 1))
    prefix = torch.tensor([ids[0][:shared]], device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: list[float] = []
    model.eval()
    for start in range(0, len(ids), batch_size):
        chunk = range(start, min(len(ids), start + batch_size))
        before = model(input_ids=prefix, use_cache=True)
        cache = before.past_key_values
        cache.batch_repeat_interleave(len(chunk))
        endings = [ids[index][shared:] for index in chunk]
        width = max(len(ending) for ending in endings)
        # padding goes on the right: causal attention never lets a real token see it, so no mask is needed
        batch = torch.full((len(chunk), width), pad, dtype=torch.long, device=device)
        for row, ending in enumerate(endings):
            batch[row, : len(ending)] = torch.tensor(ending, device=device)
        after = model(input_ids=batch, past_key_values=cache, use_cache=True).logits
        first = before.logits[:, -1:].expand(len(chunk), 1, after.shape[-1])
        logits = torch.cat([first, after[:, :-1]], dim=1).float()  # logits[:, t] predicts ending token t
        token_loss = -torch.log_softmax(logits, dim=-1).gather(-1, batch.unsqueeze(-1)).squeeze(-1)
        for row, index in enumerate(chunk):
            mask = encoded[index][1][shared:]
            learned = torch.tensor(mask, dtype=torch.bool, device=device)
            losses.append(float(token_loss[row, : len(mask)][learned].sum()))
    return losses
