"""The one prompt builder: how a conversation becomes the chat messages a model sees, in training and in serving.

Export, training, evaluation, generation and the live service all call `build_messages`, so the prompt a model
was trained on and the prompt it is served are the same messages (and so the same tokens under one chat template):
- the system prompt first (the company's, unless the caller brings its own), followed by the knowledge block: the
  passages retrieved for this reply (`collector.knowledge`), numbered under one header, when there are any;
- then the turns as the customer saw them, stored system turns left out;
- consecutive turns of one role joined with a blank line (a customer who writes twice before an answer);
- chat-template control strings in anyone's text (`<|assistant|>`, `<|im_start|>`, `</s>`...) neutralised, so a
  customer cannot forge a turn boundary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
TURN_JOINER = "\n\n"
# U+2060 WORD JOINER: invisible, and any tokenizer then sees "<", a joiner and "|im_start|>", not the control token
_JOINER = "\u2060"
# the shapes special tokens take in chat templates: <|name|>, and <name> / </name> in lower case (<s>, </s>,
# <file_sep>); upper-case <PERSON_1> is HouseStyle's own redaction placeholder and stays as it is
_CONTROL = re.compile(r"<(?=/?\|[^\s<>|]{1,40}\|>|/?[a-z_][a-z0-9_.-]{0,29}>)")

Messages = list[dict[str, Any]]
KNOWLEDGE_HEADER = "Product information (use it when it answers the customer; never make up facts that are not here):"


class KnowledgePassage(Protocol):
    """What the prompt shows of a retrieved passage (`collector.knowledge.Passage` is one)."""

    title: str
    text: str


def neutralise_control_strings(text: str) -> str:
    """`text` with every chat-template control string broken by an invisible joiner after its `<`."""
    if "<" not in text:
        return text
    return _CONTROL.sub("<" + _JOINER, text)


def render_knowledge(passages: Sequence[KnowledgePassage]) -> str:
    """The knowledge block of a system prompt: a header and numbered passages; "" for none. Pure and deterministic."""
    if not passages:
        return ""
    items = [f"[{number}] {passage.title}\n{passage.text.strip()}" for number, passage in enumerate(passages, start=1)]
    return KNOWLEDGE_HEADER + "\n\n" + "\n\n".join(items)


def grounded_system_prompt(system_prompt: str, passages: Sequence[KnowledgePassage]) -> str:
    """The system prompt with the knowledge block after it; exactly `system_prompt` when there are no passages."""
    block = render_knowledge(passages)
    return f"{system_prompt}\n\n{block}" if block else system_prompt


def build_messages(
    system_prompt: str, turns: Iterable[tuple[str, str]], passages: Sequence[KnowledgePassage] = ()
) -> Messages:
    """The messages a model sees for a conversation: `turns` are (role, text) in the order the customer saw them;
    `passages`: what retrieval found for the reply that follows them (none: the plain system prompt)."""
    system = grounded_system_prompt(system_prompt, passages)
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
