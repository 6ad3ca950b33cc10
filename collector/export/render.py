"""Turning a conversation's exchanges into the export's records (chat or prompt-completion), validated."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from collector.export.exchanges import Exchange
from collector.export.options import ExportFormat
from collector.export.preference import PREFERENCE_FORMATS, preference_records
from collector.formats import ChatRecord, PromptCompletionRecord, first_problem, surely_valid
from collector.split import SplitRatios
from core.prompts import ASSISTANT, USER, build_messages, grounded_system_prompt, neutralise_control_strings

_JSON = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(..., ensure_ascii=False) without a new encoder each call


class RenderPlan(BaseModel):
    """What a worker needs to turn conversations into finished lines: the format, system prompt and split rules."""

    format: ExportFormat
    system_prompt: str
    seed: int
    ratios: SplitRatios
    holdout_after: datetime | None
    kept: list[str] | None = None  # dpo / kto: the decisions that give rows (None: all)


def render_prompt(system_prompt: str, history: list[Exchange], customer: str) -> str:
    """The prompt of a prompt/completion line: system prompt, the exchanges so far, the customer's turn, `Agent:`."""
    lines = [neutralise_control_strings(system_prompt), ""]
    for earlier_customer, earlier_reply in history:
        lines.append(f"Customer: {neutralise_control_strings(earlier_customer)}")
        lines.append(f"Agent: {neutralise_control_strings(earlier_reply)}")
    lines.append(f"Customer: {neutralise_control_strings(customer)}")
    lines.append("Agent:")
    return "\n".join(lines)


class ShownPassage(NamedTuple):
    """A knowledge passage as a training prompt shows it (what `core.prompts.render_knowledge` reads)."""

    title: str
    text: str


def passages_of(exchange: Exchange) -> list[ShownPassage]:
    """The passages a grounded exchange carries (its third item, `collector.knowledge.export_grounding`)."""
    return [ShownPassage(title, text) for title, text in exchange[2]] if len(exchange) > 2 else []


def records(fmt: ExportFormat, system_prompt: str, exchanges: list[Exchange], kept: list[str] | None = None
            ) -> list[dict[str, Any]]:
    """The validated output records of one conversation; ValidationError if any breaks the format's rules.

    Each reply's prompt carries its own passages, as the service built it. A chat record holds a whole conversation
    under one system prompt, so a conversation whose replies had different passages becomes one record per reply
    (its history, its passages); with the same passages throughout (or none) it stays one record. Preference
    formats (`kept`: the decisions exported) are `collector.export.preference`'s.
    """
    if fmt in PREFERENCE_FORMATS:
        return preference_records(fmt, system_prompt, exchanges, set(kept) if kept is not None else None)
    if fmt == "prompt-completion":
        lines = []
        for index, exchange in enumerate(exchanges):
            customer, reply = exchange[0], exchange[1]
            system = grounded_system_prompt(system_prompt, passages_of(exchange))
            record = {"prompt": render_prompt(system, [pair[:2] for pair in exchanges[:index]], customer),
                      "completion": " " + neutralise_control_strings(reply)}
            if not surely_valid(record):
                PromptCompletionRecord.model_validate(record)
            lines.append(record)
        return lines
    turns = [turn for exchange in exchanges for turn in ((USER, exchange[0]), (ASSISTANT, exchange[1]))]
    shown = [passages_of(exchange) for exchange in exchanges]
    ends = [len(exchanges)] if all(passages == shown[0] for passages in shown) else range(1, len(exchanges) + 1)
    lines = []
    for end in ends:
        record = {"messages": build_messages(system_prompt, turns[: 2 * end], shown[end - 1])}
        if not surely_valid(record):
            ChatRecord.model_validate(record)
        lines.append(record)
    return lines


def render_conversation(render: RenderPlan, exchanges: list[Exchange]) -> tuple[str, list[str]]:
    """(problem, JSON lines) of one conversation: the problem is "" when every record passed the format's rules."""
    try:
        return "", [_JSON(r) for r in records(render.format, render.system_prompt, exchanges, render.kept)]
    except ValidationError as exc:
        return "invalid record: " + first_problem(exc), []
