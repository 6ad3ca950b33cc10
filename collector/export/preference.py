"""Preference data from review outcomes: what an agent changed, as DPO pairs and KTO examples in TRL's layout.

Every reviewed draft says something about the house style. The export formats `dpo` and `kto` turn each reply
slot of a conversation (`collector.export.exchanges.conversation_answers`) into rows:

| the draft and what was sent                         | dpo row                          | kto rows                         |
|-----------------------------------------------------|----------------------------------|----------------------------------|
| sent unchanged (approved)                           | none (history only)              | draft, label true                |
| changed: edited, or rejected with the agent's reply | chosen = sent, rejected = draft  | draft false, and sent true       |
| rejected, nothing sent                              | none (no chosen text)            | draft, label false               |
| no draft (an agent wrote the reply)                 | none                             | sent, label true                 |

"Changed" is `core.changes.same_text`, the one rule the recorder and the connectors apply too. The
`decisions` option filters by the review's decision (default for these formats: all three).

The prompt is the conversation as the assistant saw it when it drafted: the company system prompt, then every
earlier customer turn and every reply that went out, up to the customer turns the draft answered, built by
`core.prompts.build_messages` (the same builder as the chat export and the live service). Rows are TRL's
conversational layout: `{"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [...]}` and
`{"prompt": [messages], "completion": [{"role": "assistant", ...}], "label": bool}`.

In the export's spool, a conversation's "exchanges" are its answers as `[customer, sent, draft, decision, then]`
("" for no text; `then`: replies an agent sent after it before the customer wrote again; with answer memory on, a
sixth item: the past exchanges its prompt is shown, `collector.export.recalled`); `dedup_pairs` gives the (customer, reply) pairs de-duplication and the macro cap look at: what
the customer saw, or the draft when nothing went out.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from collector.export.exchanges import DraftOutcome, StoredTurn, conversation_answers
from collector.formats import ChatMessage, check_turn_order
from core.changes import same_text
from core.prompts import ASSISTANT, TURN_JOINER, USER, build_messages, neutralise_control_strings

PREFERENCE_FORMATS = ("dpo", "kto")
PreferenceFormat = Literal["dpo", "kto"]
NO_EXAMPLE = "no preference example"  # the reason a conversation none of whose replies gives a row is skipped
PreferenceExchange = list[str]  # [customer text, sent or "", draft or "", decision, replies sent after it or ""]


class PastExchange(NamedTuple):
    """An answer-memory example as a preference prompt shows it (what `core.prompts.render_examples` reads)."""

    customer: str
    reply: str


def _text(value: str | None) -> str:
    return value if value and value.strip() else ""


def rows_of_answer(fmt: PreferenceFormat, sent: str, draft: str) -> list[tuple[str, Any]]:
    """What one reply slot gives: dpo [("pair", (chosen, rejected))], kto [("example", (completion, label))]."""
    changed = bool(draft) and bool(sent) and not same_text(draft, sent)
    if fmt == "dpo":
        return [("pair", (sent, draft))] if changed else []
    if not draft:
        return [("example", (sent, True))] if sent else []
    if not sent or changed:
        return [("example", (draft, False))] + ([("example", (sent, True))] if sent else [])
    return [("example", (draft, True))]


def build_preference_exchanges(
    turns: list[StoredTurn], drafts: dict[int, DraftOutcome], kept: set[str], dropped_turns: Counter[str],
    fmt: PreferenceFormat,
) -> list[PreferenceExchange] | str:
    """A conversation's answers as spool exchanges, or the reason to skip it whole (pending, or no row at all)."""
    answers = conversation_answers(turns, drafts)
    if isinstance(answers, str):
        return answers
    exchanges: list[PreferenceExchange] = []
    rows = 0
    for answer in answers:
        sent, draft = _text(answer.sent), _text(answer.draft)
        if not answer.asked:
            if not exchanges:
                dropped_turns["reply before any customer message"] += 1
                continue
            if sent:  # a second reply in a row: history for the next prompts, as in the chat export
                previous = exchanges[-1]
                previous[4] = previous[4] + TURN_JOINER + sent if previous[4] else sent
            if draft and answer.decision in kept:
                dropped_turns["reply after a reply (no customer turn to answer)"] += 1
            continue
        exchanges.append([TURN_JOINER.join(answer.asked), sent, draft, answer.decision, ""])
        if answer.decision not in kept:
            dropped_turns[f"{answer.decision} reply"] += 1
        elif (found := len(rows_of_answer(fmt, sent, draft))) == 0 and fmt == "dpo" and draft and not sent:
            dropped_turns["rejected draft with nothing sent (no chosen text)"] += 1
        else:
            rows += found
    return exchanges if rows else NO_EXAMPLE


def dedup_pairs(exchanges: list[PreferenceExchange]) -> list[tuple[str, str]]:
    """The (customer, reply) pairs de-duplication fingerprints: the text sent, else the draft."""
    return [(customer, sent or draft) for customer, sent, draft, *_ in exchanges]


class _Conversational(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: list[ChatMessage] = Field(min_length=2)

    @model_validator(mode="after")
    def _prompt_ends_with_the_customer(self) -> _Conversational:
        roles = [message.role for message in self.prompt]
        check_turn_order([*roles, ASSISTANT])
        return self


class DpoRecord(_Conversational):
    """A DPO row: the agent's text (chosen) over the draft it replaced (rejected), after the same prompt."""

    chosen: list[ChatMessage] = Field(min_length=1, max_length=1)
    rejected: list[ChatMessage] = Field(min_length=1, max_length=1)


class KtoRecord(_Conversational):
    """A KTO row: one completion and whether the house style wants it (label)."""

    completion: list[ChatMessage] = Field(min_length=1, max_length=1)
    label: bool


def _reply(text: str) -> list[dict[str, str]]:
    return [{"role": ASSISTANT, "content": neutralise_control_strings(text)}]


def preference_records(
    fmt: PreferenceFormat, system_prompt: str, exchanges: list[PreferenceExchange], kept: set[str] | None = None
) -> list[dict[str, Any]]:
    """The validated rows of one conversation (see the table above); ValidationError if one breaks the layout.

    `kept`: the decisions that give rows (None: all); every answer still shapes the later prompts.
    """
    records: list[dict[str, Any]] = []
    turns: list[tuple[str, str]] = []
    for customer, sent, draft, decision, then, *recalled in exchanges:
        turns.append((USER, customer))
        if kept is None or decision in kept:
            examples = [PastExchange(*pair) for pair in recalled[0]] if recalled else []
            prompt = build_messages(system_prompt, turns, (), examples)
            for kind, (text, other) in rows_of_answer(fmt, sent, draft):
                if kind == "pair":
                    record = {"prompt": prompt, "chosen": _reply(text), "rejected": _reply(other)}
                    DpoRecord.model_validate(record)
                else:
                    record = {"prompt": prompt, "completion": _reply(text), "label": other}
                    KtoRecord.model_validate(record)
                records.append(record)
        turns += [(ASSISTANT, text) for text in (sent, then) if text]
    return records


def hf_features(fmt: PreferenceFormat) -> Any:
    """The `datasets.Features` of a preference split (TRL's conversational columns)."""
    from datasets import Features, Value

    messages = [{"role": Value("string"), "content": Value("string")}]
    if fmt == "dpo":
        return Features({"prompt": messages, "chosen": messages, "rejected": messages})
    return Features({"prompt": messages, "completion": messages, "label": Value("bool")})
