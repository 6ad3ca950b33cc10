"""An ML engineer compares five systems on the held-out split: the base, random few-shot, the base with answer
memory, the adapter, and the adapter with memory, and reads how many replies agents would still correct."""

from __future__ import annotations

import pytest

from collector.memory import exchanges_of_chats
from core.prompts import MEMORY_HEADER, build_messages, render_examples, without_examples
from core.settings import Settings
from trainer.evaluate import has_examples, simulated_correction_rate, with_memory


class Shown:
    def __init__(self, title: str, text: str) -> None:
        self.title, self.text = title, text


class Past:
    def __init__(self, customer: str, reply: str) -> None:
        self.customer, self.reply = customer, reply


PASSAGE = Shown("Warranty", "Two years on every SuperWidget.")
EXAMPLE = Past("Is my SuperWidget under warranty?", "Yes, <PERSON_1>: two years.")


@pytest.mark.parametrize(("passages", "examples"), [
    ((), ()),  # the plain system prompt
    ((PASSAGE,), ()),  # knowledge only: kept as it is
    ((), (EXAMPLE,)),  # memory only: cut
    ((PASSAGE,), (EXAMPLE,)),  # both: the knowledge block stays, the memory block goes
])
def test_without_examples_cuts_only_the_memory_block(passages: tuple, examples: tuple) -> None:
    turns = [("user", "my superwidget broke")]
    served = build_messages("Be kind.", turns, passages, examples)
    assert without_examples(served) == build_messages("Be kind.", turns, passages)
    assert (MEMORY_HEADER in served[0]["content"]) == bool(examples)


def test_without_examples_leaves_messages_without_a_system_prompt() -> None:
    messages = [{"role": "user", "content": MEMORY_HEADER}]
    assert without_examples(messages) == messages


@pytest.mark.parametrize(("replies", "references", "rate"), [
    ([], [], 0.0),
    (["Sorry!"], ["Sorry!"], 0.0),
    (["Sorry  it's  late."], ["Sorry it\u2019s late."], 0.0),  # spacing and quotes are not a correction
    (["Sorry!", "Yes."], ["Sorry!", "No."], 0.5),
    (["Sorry"], ["Sorry!"], 1.0),  # one character is a correction
])
def test_simulated_correction_rate_counts_replies_an_agent_would_change(
    replies: list[str], references: list[str], rate: float
) -> None:
    """Catches: `not same_text` -> `same_text`, or dividing by anything but the number of replies."""
    assert simulated_correction_rate(replies, references) == rate


def test_exchanges_of_chats_pairs_each_reply_with_the_customer_turns_it_answered() -> None:
    chats = [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"},
              {"role": "user", "content": "my widget broke"}, {"role": "assistant", "content": "Sorry!"},
              {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "Anytime."}],
             [{"role": "user", "content": "where is my order"}, {"role": "assistant", "content": ""}]]
    found = exchanges_of_chats(chats)
    assert [(e.conversation_id, e.customer, e.reply) for e in found] == [
        (0, "hi\n\nmy widget broke", "Sorry!"), (0, "thanks", "Anytime.")]
    assert [e.review_id for e in found] == [1, 2]


def chat(question: str, answer: str) -> list[dict]:
    return [{"role": "system", "content": "Be kind."}, {"role": "user", "content": question},
            {"role": "assistant", "content": answer}]


TRAIN = [chat("Is my SuperWidget still under warranty?", "The SuperWidget warranty lasts two years."),
         chat("How do I return my SuperWidget?", "Print the prepaid label and drop the SuperWidget off."),
         chat("When will my SuperWidget arrive?", "The SuperWidget ships within three days."),
         chat("My UltraPhone is dead", "Charge the UltraPhone for an hour.")]


@pytest.mark.parametrize("k", [0, 1, 3])
def test_with_memory_recalls_the_matching_answer_from_the_train_split(k: int) -> None:
    """A held-out question gets the train split's answer to the same question as an example; memory off
    (k=0) still evaluates with 1 (the "with memory" systems show what memory would do)."""
    task = (build_messages("Be kind.", [("user", "warranty on my superwidget??")]),
            "The SuperWidget warranty lasts two years.")
    [(prompt, reference)] = with_memory([task], TRAIN, Settings(memory_examples=k, memory_min_score=0.0))
    system = prompt[0]["content"]
    assert reference == task[1] and has_examples([(prompt, reference)]) and not has_examples([task])
    assert system.split("\n\n", 1)[1].startswith(MEMORY_HEADER)
    assert "[1] Customer: Is my SuperWidget still under warranty?" in system
    assert system.count("Customer:") == (k or 1) and "UltraPhone" not in system  # k best, nothing unrelated
    assert prompt[1:] == task[0][1:]  # the conversation itself is untouched
    assert render_examples([]) == ""
