"""How much an agent changed a draft: the one definition of "unchanged", of similarity and of edit distance.

Every place that compares a draft with what was sent (recording a review, the Chatwoot connector deciding between
approved / edited / rejected, the demo's simulated agents, imports) calls these, so "the draft was changed" means
the same everywhere. Texts are compared after `normalise`: runs of whitespace count as one space, and typographic
quotes and dashes as their plain forms, because agents' editors and customers' keyboards swap them freely and no
customer notices the difference.
"""

from __future__ import annotations

import re

from rapidfuzz.distance import Levenshtein

_SPACES = re.compile(r"\s+")
_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
                        "\u00a0": " "})


def normalise(text: str) -> str:
    """The text as compared: plain quotes and dashes, single spaces, no leading or trailing space."""
    return _SPACES.sub(" ", text.translate(_PLAIN)).strip()


def same_text(draft: str, sent: str) -> bool:
    """True when what was sent is the draft unchanged (up to `normalise`)."""
    return normalise(draft) == normalise(sent)


def edit_distance(draft: str, sent: str) -> float:
    """Normalised Levenshtein distance between the two normalised texts: 0 unchanged .. 1 nothing in common."""
    return float(Levenshtein.normalized_distance(normalise(draft), normalise(sent)))


def similarity(draft: str, sent: str) -> float:
    """1 - `edit_distance`: how much of the draft survives in what was sent (0..1)."""
    return 1.0 - edit_distance(draft, sent)
