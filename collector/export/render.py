"""Turning a conversation's exchanges into the export's records (chat or prompt-completion), validated."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from collector.export.exchanges import Exchange
from collector.export.options import ExportFormat
from collector.export.preference import PREFERENCE_FORMATS, preference_records
from collector.formats import ChatRecord, PromptCompletionRecord, first_problem
from collector.prompts import exchange_messages, neutralise_control_strings
from collector.split import SplitRatios


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


def records(fmt: ExportFormat, system_prompt: str, exchanges: list[Exchange], kept: list[str] | None = None
            ) -> list[dict[str, Any]]:
    """The validated output records of one conversation; ValidationError if any breaks the format's rules."""
    if fmt in PREFERENCE_FORMATS:
        return preference_records(fmt, system_prompt, exchanges, set(kept) if kept is not None else None)
    if fmt == "prompt-completion":
        lines = []
        for index, (customer, reply) in enumerate(exchanges):
            record = {"prompt": render_prompt(system_prompt, exchanges[:index], customer),
                      "completion": " " + neutralise_control_strings(reply)}
            PromptCompletionRecord.model_validate(record)
            lines.append(record)
        return lines
    record = {"messages": exchange_messages(system_prompt, [(customer, reply) for customer, reply in exchanges])}
    ChatRecord.model_validate(record)
    return [record]


def render_conversation(render: RenderPlan, exchanges: list[Exchange]) -> tuple[str, list[str]]:
    """(problem, JSON lines) of one conversation: the problem is "" when every record passed the format's rules."""
    try:
        return "", [json.dumps(r, ensure_ascii=False) for r in records(render.format, render.system_prompt, exchanges,
                                                                                      render.kept)]
    except ValidationError as exc:
        return "invalid record: " + first_problem(exc), []
