"""Turning a conversation's exchanges into the export's records (every export format), validated."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from collector.export.exchanges import Exchange
from collector.export.options import ExportFormat, ExportOptions
from collector.export.preference import PREFERENCE_FORMATS, preference_records
from collector.formats import ChatRecord, PromptCompletionRecord, first_problem, surely_valid
from collector.split import SplitRatios
from core.chat_template import chat_tokenizer, prompt_and_completion
from core.prompts import ASSISTANT, USER, build_messages
from core.settings import Settings

_JSON = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(..., ensure_ascii=False) without a new encoder each call


class RenderPlan(BaseModel):
    """What a worker needs to turn conversations into finished lines: the format, system prompt and split rules."""

    format: ExportFormat
    system_prompt: str
    seed: int
    ratios: SplitRatios
    holdout_after: datetime | None
    kept: list[str] | None = None  # dpo / kto: the decisions that give rows (None: all)
    base_model: str | None = None  # prompt-completion: the served base whose chat template renders the prompt

    @classmethod
    def of(cls, options: ExportOptions, settings: Settings) -> RenderPlan:
        """The plan of an export; prompt-completion loads the served base's tokenizer here, so a missing base
        fails before the store is read."""
        base_model = settings.resolved_base_model if options.format == "prompt-completion" else None
        if base_model is not None:
            chat_tokenizer(base_model)
        return cls(format=options.format, system_prompt=settings.system_prompt, seed=options.seed,
                   ratios=options.ratios, holdout_after=options.holdout_after,
                   kept=[decision.value for decision in options.decisions], base_model=base_model)


class ShownPassage(NamedTuple):
    """A knowledge passage as a training prompt shows it (what `core.prompts.render_knowledge` reads)."""

    title: str
    text: str


def passages_of(exchange: Exchange) -> list[ShownPassage]:
    """The passages a grounded exchange carries (its third item, `collector.knowledge.export_grounding`)."""
    return [ShownPassage(title, text) for title, text in exchange[2]] if len(exchange) > 2 else []


class ShownExample(NamedTuple):
    """A past exchange as a training prompt shows it (what `core.prompts.render_examples` reads)."""

    customer: str
    reply: str


def examples_of(exchange: Exchange) -> list[ShownExample]:
    """The answer-memory examples an exchange carries (its fourth item, `collector.export.recalled`)."""
    return [ShownExample(customer, reply) for customer, reply in exchange[3]] if len(exchange) > 3 else []


def records(fmt: ExportFormat, system_prompt: str, exchanges: list[Exchange], kept: list[str] | None = None,
            *, tokenizer: Any = None) -> list[dict[str, Any]]:
    """The validated output records of one conversation; ValidationError if any breaks the format's rules.

    Each reply's prompt carries its own passages and answer-memory examples, as the service built it. A chat record
    holds a whole conversation under one system prompt, so a conversation whose replies had different passages or
    examples becomes one record per reply (its history, its passages and examples); with the same throughout (or
    none) it stays one record. A
    prompt-completion record is one reply: the served prompt as text, rendered by `tokenizer` (the served base's,
    `core.chat_template`) from the same messages, and the reply with the template's end-of-turn marker. Preference
    formats (`kept`: the decisions exported) are `collector.export.preference`'s.
    """
    if fmt in PREFERENCE_FORMATS:
        return preference_records(fmt, system_prompt, exchanges, set(kept) if kept is not None else None)
    turns = [turn for exchange in exchanges for turn in ((USER, exchange[0]), (ASSISTANT, exchange[1]))]
    shown = [passages_of(exchange) for exchange in exchanges]
    examples = [examples_of(exchange) for exchange in exchanges]
    lines = []
    if fmt == "prompt-completion":
        if tokenizer is None:
            raise ValueError("prompt-completion renders the served prompt: pass the base model's tokenizer")
        for end in range(1, len(exchanges) + 1):
            prompt, completion = prompt_and_completion(
                tokenizer, build_messages(system_prompt, turns[: 2 * end], shown[end - 1], examples[end - 1]))
            record = {"prompt": prompt, "completion": completion}
            if not surely_valid(record):
                PromptCompletionRecord.model_validate(record)
            lines.append(record)
        return lines
    same = all(passages == shown[0] for passages in shown) and all(found == examples[0] for found in examples)
    ends = [len(exchanges)] if same else range(1, len(exchanges) + 1)
    for end in ends:
        record = {"messages": build_messages(system_prompt, turns[: 2 * end], shown[end - 1], examples[end - 1])}
        if not surely_valid(record):
            ChatRecord.model_validate(record)
        lines.append(record)
    return lines


def render_conversation(render: RenderPlan, exchanges: list[Exchange]) -> tuple[str, list[str]]:
    """(problem, JSON lines) of one conversation: the problem is "" when every record passed the format's rules."""
    try:
        tokenizer = chat_tokenizer(render.base_model) if render.base_model else None
        lines = records(render.format, render.system_prompt, exchanges, render.kept, tokenizer=tokenizer)
        return "", [_JSON(record) for record in lines]
    except ValidationError as exc:
        return "invalid record: " + first_problem(exc), []
