"""The knowledge block of a system prompt: the passages that fit a size (rendered by `core.prompts`, so training
and serving render the same prompt)."""

from __future__ import annotations

from collections.abc import Sequence

from collector.knowledge.passages import Passage

# the block itself is rendered by the one prompt builder, so training and serving prompts cannot drift apart
from core.prompts import KNOWLEDGE_HEADER, grounded_system_prompt, render_knowledge

__all__ = ["KNOWLEDGE_HEADER", "fit_passages", "grounded_system_prompt", "render_knowledge"]


def fit_passages(passages: Sequence[Passage], max_chars: int) -> list[Passage]:
    """The leading passages whose rendered block fits in `max_chars` (always at least the first, cut to fit)."""
    kept: list[Passage] = []
    for passage in passages:
        if len(render_knowledge([*kept, passage])) <= max_chars:
            kept.append(passage)
        elif not kept:
            room = max_chars - len(render_knowledge([passage.model_copy(update={"text": ""})])) - 1
            text = passage.text[: max(room, 0)].rsplit(" ", 1)[0] + "…"
            kept.append(passage.model_copy(update={"text": text}))
            break
        else:
            break
    return kept
