"""The knowledge block of a system prompt: passages numbered under a header, fitted to a size; pure, so training and
serving render the same prompt."""

from __future__ import annotations

from collections.abc import Sequence

from collector.knowledge.passages import Passage

KNOWLEDGE_HEADER = "Product information (use it when it answers the customer; never make up facts that are not here):"


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


def render_knowledge(passages: Sequence[Passage]) -> str:
    """The knowledge block of a system prompt: a header and numbered passages; "" for none. Pure and deterministic."""
    if not passages:
        return ""
    items = [f"[{number}] {passage.title}\n{passage.text.strip()}" for number, passage in enumerate(passages, start=1)]
    return KNOWLEDGE_HEADER + "\n\n" + "\n\n".join(items)


def grounded_system_prompt(system_prompt: str, passages: Sequence[Passage]) -> str:
    """The system prompt with the knowledge block after it; exactly `system_prompt` when there are no passages."""
    block = render_knowledge(passages)
    return f"{system_prompt}\n\n{block}" if block else system_prompt
