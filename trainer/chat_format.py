"""The chat template of HouseStyle's own base models, and how any base's template marks the assistant's tokens."""

from __future__ import annotations

from typing import Any

from core.errors import InputError

SYSTEM_TAG, USER_TAG, ASSISTANT_TAG, END_TAG, PAD_TOKEN = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"
SPECIAL_TOKENS = [PAD_TOKEN, SYSTEM_TAG, USER_TAG, ASSISTANT_TAG, END_TAG]

# `{% generation %}` marks what the model must learn to say (the reply and its end tag), so
# `apply_chat_template(..., return_assistant_tokens_mask=True)` can build the assistant-only loss mask.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)

Messages = list[dict[str, Any]]


def has_generation_tags(tokenizer: Any) -> bool:
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    return "{% generation %}" in template or "{%- generation %}" in template


def encode_conversation(tokenizer: Any, messages: Messages) -> tuple[list[int], list[int]]:
    """Token ids of a whole conversation and a 0/1 mask that is 1 exactly on the assistant's reply tokens.

    Templates with `{% generation %}` tags give the mask directly; for other bases' templates the reply spans are
    found by rendering growing prefixes of the conversation (templates render prefixes identically).
    """
    if not tokenizer.chat_template:
        raise InputError("the base model's tokenizer has no chat template; use a chat/instruct model as --base")
    if has_generation_tags(tokenizer):
        encoded = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(encoded["input_ids"]), list(encoded["assistant_masks"])
    return _encode_by_prefixes(tokenizer, messages)


def _encode_by_prefixes(tokenizer: Any, messages: Messages) -> tuple[list[int], list[int]]:
    def ids(prefix: Messages, generation_prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(prefix, tokenize=False, add_generation_prompt=generation_prompt)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    input_ids = ids(messages, False)
    mask = [0] * len(input_ids)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(ids(messages[:index], True))
        end = len(ids(messages[: index + 1], False))
        for position in range(start, min(end, len(mask))):
            mask[position] = 1
    return input_ids, mask
