"""No placeholder ever reaches a customer: a model trained on redacted text writes `<PERSON_1>` where an agent wrote
a name; each reply goes through `collector.pii.fill_placeholders` with what the conversation knows (its placeholder
table, the platform's name, email, phone) before anyone sees it, and what cannot be filled is written out.

Streamed replies are let through a sentence at a time: a sentence may need its placeholder removed together with
the words around it ("Thanks, <PERSON_1>!" -> "Thanks!"), so no part of it goes out before its end is known.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from collector.pii.entities import KnownValues
from collector.pii.replies import fill_placeholders

# a sentence ends at . ! ? (with closing quotes or brackets) followed by white space, or at a line break
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+|\n")
_MAYBE_PLACEHOLDER = re.compile(r"[<\[]")


class ReplyGuard:
    """Fills or removes placeholders in one conversation's reply, whole (`whole`) or as it streams (`feed`/`finish`)."""

    def __init__(self, placeholders: Mapping[str, str] | None, known: KnownValues | None) -> None:
        self.placeholders = dict(placeholders or {})
        self.known = known
        self._pending = ""

    def whole(self, text: str) -> str:
        return self._safe(text)

    def feed(self, piece: str) -> str:
        """Take the next streamed piece; return the text now safe to send (whole sentences), possibly ""."""
        self._pending += piece
        ends = list(_SENTENCE_END.finditer(self._pending))
        if not ends:
            return ""
        cut = ends[-1].end()
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._safe(ready)

    def finish(self) -> str:
        """The rest, once the model has finished."""
        ready, self._pending = self._pending, ""
        return self._safe(ready)

    def _safe(self, text: str) -> str:
        if not _MAYBE_PLACEHOLDER.search(text):
            return text
        trailing = text[len(text.rstrip()):]  # the space between sentences is the stream's, keep it
        filled = fill_placeholders(text.rstrip(), self.placeholders, self.known).text
        return filled + trailing if filled else ""
