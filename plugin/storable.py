"""Text every store can keep: no NUL (Postgres refuses it) and no lone surrogate (not encodable as UTF-8)."""

from __future__ import annotations


def storable(text: str) -> str:
    """The text unchanged, or a ValueError saying what to fix: for what a client sends us and can send again."""
    if "\x00" in text:
        raise ValueError("contains a NUL character; remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired surrogate (not valid Unicode text); send UTF-8 text") from None
    return text


def storable_text(text: str) -> str:
    """A platform's message as the store can keep it: a NUL or lone surrogate cannot be refused back to the platform
    (the customer's message would be lost), so it is replaced by U+FFFD."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
