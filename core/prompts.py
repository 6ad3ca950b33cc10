"""The one prompt builder: how a conversation becomes the chat messages a model sees, in training and in serving.

Export, training, evaluation, generation and the live service all call `build_messages`, so the prompt a model
was trained on and the prompt it is served are the same messages (and so the same tokens under one chat template):
- the system prompt first (the company's, unless the caller brings its own), followed by the knowledge block: the
  passages retrieved for this reply (`collector.knowledge`), numbered under one header, when there are any; then the
  answer-memory block: the brand's past reviewed exchanges most like this one (`collector.memory`), when there are any;
- then the turns as the customer saw them, stored system turns left out;
- consecutive turns of one role joined with a blank line (a customer who writes twice before an answer);
- chat-template control strings in anyone's text (`<|assistant|>`, `<|im_start|>`, `</s>`, `<｜User｜>`, `[INST]`,
  `<<SYS>>`...) neutralised, so a customer cannot forge a turn boundary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
TURN_JOINER = "\n\n"
# U+2060 WORD JOINER: invisible, and any tokenizer then sees "<", a joiner and "|im_start|>", not the control token
_JOINER = "\u2060"
# the shapes special tokens and turn markers take in chat templates, each broken by a joiner after its first
# character: <|name|> (ChatML, Llama 3, Phi), <｜name｜> with full-width bars (DeepSeek), <name> / </name> in lower
# case (<s>, </s>, <start_of_turn>), <<SYS>> / <</SYS>> (Llama 2) and [NAME] / [/NAME] in upper case ([INST],
# [/INST], [SYSTEM_PROMPT], [TOOL_CALLS]: Mistral); upper-case <PERSON_1> is HouseStyle's own redaction placeholder
# and stays as it is, and so do numbered references such as [1]
_CONTROL = re.compile(
    r"<(?=/?\|[^\s<>|]{1,40}\|>"  # <|im_start|>
    r"|/?\uff5c[^\s<>\uff5c]{1,40}\uff5c>"  # <｜User｜>
    r"|/?[a-z_][a-z0-9_.-]{0,29}>"  # </s>
    r"|</?[A-Z][A-Z_]{0,29}>>)"  # <<SYS>>
    r"|\[(?=/?[A-Z][A-Z0-9_]{1,29}\])"  # [INST]
)
_CONTROL_STARTS = ("<", "[")

Messages = list[dict[str, Any]]
KNOWLEDGE_HEADER = "Product information (use it when it answers the customer; never make up facts that are not here):"
MEMORY_HEADER = ("How our agents answered similar questions before (follow what they said when it is the same "
                 "question; placeholders such as <PERSON_1> stand for another customer's details):")


class KnowledgePassage(Protocol):
    """What the prompt shows of a retrieved passage (`collector.knowledge.Passage` is one)."""

    title: str
    text: str


class MemoryExample(Protocol):
    """What the prompt shows of a past reviewed exchange (`collector.memory.Example` is one)."""

    customer: str
    reply: str


def neutralise_control_strings(text: str) -> str:
    """`text` with every chat-template control string broken by an invisible joiner after its `<`."""
    if not any(start in text for start in _CONTROL_STARTS):
        return text
    return _CONTROL.sub(lambda found: found.group(0) + _JOINER, text)


def render_knowledge(passages: Sequence[KnowledgePassage]) -> str:
    """The knowledge block of a system prompt: a header and numbered passages; "" for none. Pure and deterministic."""
    if not passages:
        return ""
    items = [f"[{number}] {passage.title}\n{passage.text.strip()}" for number, passage in enumerate(passages, start=1)]
    return KNOWLEDGE_HEADER + "\n\n" + "\n\n".join(items)


def render_examples(examples: Sequence[MemoryExample]) -> str:
    """The answer-memory block of a system prompt: a header and numbered past exchanges; "" for none. Their
    placeholders stay placeholders: only the current conversation's own values are ever filled into a reply."""
    if not examples:
        return ""
    items = [f"[{number}] Customer: {example.customer.strip()}\nAgent: {example.reply.strip()}"
             for number, example in enumerate(examples, start=1)]
    return MEMORY_HEADER + "\n\n" + "\n\n".join(items)


def without_examples(messages: Messages) -> Messages:
    """`messages` with the answer-memory block cut from their system prompt (what the same prompt is without answer
    memory: evaluation compares both); `messages` itself when there is none. The block is always the system prompt's
    last."""
    if not messages or messages[0]["role"] != SYSTEM:
        return messages
    system = messages[0]["content"]
    at = system.find("\n\n" + MEMORY_HEADER)
    return messages if at < 0 else [{**messages[0], "content": system[:at]}, *messages[1:]]


def grounded_system_prompt(
    system_prompt: str, passages: Sequence[KnowledgePassage], examples: Sequence[MemoryExample] = ()
) -> str:
    """The system prompt with the knowledge block, then the answer-memory block, after it; exactly `system_prompt`
    when there are neither passages nor examples."""
    blocks = [block for block in (render_knowledge(passages), render_examples(examples)) if block]
    return "\n\n".join([system_prompt, *blocks])


def build_messages(
    system_prompt: str,
    turns: Iterable[tuple[str, str]],
    passages: Sequence[KnowledgePassage] = (),
    examples: Sequence[MemoryExample] = (),
) -> Messages:
    """The messages a model sees for a conversation: `turns` are (role, text) in the order the customer saw them;
    `passages`: what retrieval found for the reply that follows them; `examples`: the brand's past exchanges most
    like this one (answer memory); none of either: the plain system prompt."""
    system = grounded_system_prompt(system_prompt, passages, examples)
    messages: Messages = [{"role": SYSTEM, "content": neutralise_control_strings(system)}]
    for role, content in turns:
        role = str(role)
        if role == SYSTEM:
            continue  # the company's system prompt replaces whatever a platform stored
        content = neutralise_control_strings(content)
        if len(messages) > 1 and messages[-1]["role"] == role:
            messages[-1]["content"] += TURN_JOINER + content
        else:
            messages.append({"role": role, "content": content})
    return messages


def exchange_messages(system_prompt: str, exchanges: Iterable[tuple[str, str]]) -> Messages:
    """`build_messages` for (customer text, reply) exchanges, the shape exports and golden sets keep."""
    turns: list[tuple[str, str]] = []
    for customer, reply in exchanges:
        turns += [(USER, customer), (ASSISTANT, reply)]
    return build_messages(system_prompt, turns)


def with_system_prompt(messages: Messages, system_prompt: str) -> Messages:
    """Messages that may already lead with a system prompt (an export's records): keep theirs, else add this one."""
    if messages and messages[0]["role"] == SYSTEM:
        return build_messages(messages[0]["content"], [(m["role"], m["content"]) for m in messages[1:]])
    return build_messages(system_prompt, [(m["role"], m["content"]) for m in messages])


def fit_messages(messages: Messages, max_chars: int) -> Messages:
    """`messages` within `max_chars` characters of content: the system prompt and the latest turns that fit.

    Older turns go first; the conversation then starts with a customer turn. A latest customer turn that alone is
    too long keeps its beginning and its end (where a question after a pasted log usually is). Nothing changes when
    the messages fit, so a short conversation's prompt stays the one it was trained on.
    """
    if sum(len(m["content"]) for m in messages) <= max_chars or len(messages) < 2:
        return messages
    system, turns = messages[0], messages[1:]
    room = max(max_chars - len(system["content"]), 200)
    kept: Messages = []
    used = 0
    for message in reversed(turns):
        if used + len(message["content"]) > room:
            break
        kept.insert(0, message)
        used += len(message["content"])
    while kept and kept[0]["role"] != USER:
        used -= len(kept.pop(0)["content"])
    if not kept:  # the latest turn alone is too long
        last = turns[-1]
        head = (room - 5) * 2 // 3
        kept = [{**last, "content": f"{last['content'][:head]} […] {last['content'][-(room - 5 - head):]}"}]
    return [system, *kept]
