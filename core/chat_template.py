"""The served prompt as text: chat messages rendered with the chat template of the base model vLLM serves."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.prompts import ASSISTANT, Messages

_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")  # how transformers finds a template's reply blocks


@lru_cache(maxsize=4)
def chat_tokenizer(base_model: str) -> Any:
    """The tokenizer of `base_model` (a model folder or a hub id), whose chat template vLLM applies to every chat
    request; loaded once per process (an export's workers each load their own)."""
    path = Path(base_model).expanduser()
    if not path.is_dir() and (path.is_absolute() or base_model.startswith((".", "~")) or base_model.count("/") != 1):
        raise InputError(f"there is no base model at {base_model}: build one with `housestyle base build --out "
                         f"{base_model}` or set HOUSESTYLE_BASE_MODEL (prompt-completion renders the prompt with the "
                         "served base model's chat template)")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path) if path.is_dir() else base_model)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the tokenizer of base model {base_model} ({type(exc).__name__}); "
                         "is it a complete model folder?") from None
    if not tokenizer.chat_template:
        raise InputError(f"base model {base_model} has no chat template; serve a chat/instruct model")
    return tokenizer


def served_prompt(tokenizer: Any, messages: Messages) -> str:
    """What vLLM feeds the model for `messages` on /v1/chat/completions: the chat template with its generation
    prompt (the text is then tokenised as it is, no special tokens added)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_and_completion(tokenizer: Any, messages: Messages) -> tuple[str, str]:
    """(prompt, completion) text of `messages`, which end with the assistant's reply.

    The prompt is `served_prompt` of the messages before the reply. The completion is what the model must say after
    it: the reply and the template's end-of-turn marker. That is the span the trainer's chat format learns
    (`trainer.chat_format.encode_conversation`): a `{% generation %}` block where the template marks one, else
    everything the template renders after the prompt.
    """
    if not messages or messages[-1]["role"] != ASSISTANT:
        raise ValueError("the messages must end with the assistant's reply")
    prompt = served_prompt(tokenizer, messages[:-1])
    whole, end = _render_with_reply_end(tokenizer, messages)
    if not whole.startswith(prompt):  # the template renders a conversation's prefix differently from the whole
        raise InputError("the base model's chat template renders a reply's prompt differently from the "
                         "conversation around it; prompt-completion cannot be cut from it (export --format chat)")
    return prompt, whole[len(prompt):end if end > len(prompt) else len(whole)]


def _render_with_reply_end(tokenizer: Any, messages: Messages) -> tuple[str, int]:
    """The whole conversation rendered, and where the last `{% generation %}` block ends (0: the template has none)."""
    template = tokenizer.get_chat_template()
    if not _GENERATION_BLOCK.search(template):
        return tokenizer.apply_chat_template(messages, tokenize=False), 0
    from transformers.utils.chat_template_utils import render_jinja_template

    # what `apply_chat_template` does, keeping the character spans of the assistant's blocks it otherwise
    # turns into a token mask
    rendered, spans = render_jinja_template(conversations=[messages], chat_template=template,
                                            return_assistant_tokens_mask=True, **tokenizer.special_tokens_map)
    return rendered[0], spans[0][-1][1] if spans[0] else 0
