"""What a message is about: the knowledge base's product names it mentions, and its support intent by keywords.

Intents are a keyword table (PyStemmer stems, so "refunded" and "refunds" match "refund"), not clustering: a support
lead can read and edit named intents (HOUSESTYLE_COVERAGE_INTENTS), one message classifies in microseconds for
routing, and the names stay put as conversations arrive, where clusters would be unnamed and shift with every refresh.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

# Checked in order: on a tie the earlier intent wins ("battery dies" is battery before power, "hot while charging"
# overheating before battery).
DEFAULT_INTENTS: dict[str, list[str]] = {
    "overheating": ["hot", "warm", "overheat", "overheating", "heat", "burning"],
    "battery": [
        "battery",
        "batteries",
        "drain",
        "drains",
        "charge",
        "charging",
        "charges",
        "lose its charge",
        "last a day",
    ],
    "connectivity": [
        "connect",
        "connection",
        "disconnect",
        "pair",
        "pairing",
        "bluetooth",
        "wifi",
        "wi fi",
        "network",
        "drops",
        "showing up",
        "signal",
    ],
    "setup": ["set up", "setup", "install", "installation", "configure", "getting started"],
    "speed": ["slow", "slowly", "slower", "speed", "transfer", "transfers"],
    "power": [
        "turn on",
        "turns on",
        "switch on",
        "power on",
        "power",
        "dead",
        "died",
        "no lights",
        "boot",
        "come back on",
        "won't start",
    ],
    "refund": ["refund", "return", "money back", "send back", "send it back", "exchange"],
    "shipping": [
        "ship",
        "shipping",
        "shipped",
        "deliver",
        "delivery",
        "arrive",
        "arrived",
        "track",
        "tracking",
        "package",
        "parcel",
        "internationally",
        "order",
        "isn't here",
        "not here",
    ],
    "warranty": ["warranty", "guarantee", "covered", "repair", "repaired"],
    "hours": ["opening hours", "hours", "available", "what time", "open on"],
}
NO_PRODUCT = "(no product)"
NO_INTENT = "other"

_WORD = re.compile(r"\w+")
_ALNUM = re.compile(r"[^\W_]+")  # letters and digits: "Super-Widget" and "super_widget" are two words each
_CAMEL_PARTS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_JOINERS = {"", " ", "-", "_", "\t"}


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def stems(text: str) -> list[str]:
    """Lower-cased word stems, every word kept (intent phrases such as "turn on" need their short words)."""
    return _stemmer().stemWords(_WORD.findall(text.lower()))


class ProductMatcher:
    """Finds product names in text, forgiving case, a space or hyphen inside the name, and a plural s.

    Names are looked up by a normalised key (lower case, no separators) over runs of adjacent words, not by one big
    regex alternation: that stays linear in the text however many products the knowledge base has.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(dict.fromkeys(name for name in names if name.strip()))
        self._by_key: dict[str, str] = {}
        self._starts: set[str] = set()  # what a mention's first word can be: "mega", "megagadget", "megagadgets"
        self._longest = 1
        for name in self.names:
            key = "".join(_ALNUM.findall(name)).lower()
            self._by_key.setdefault(key, name)
            camel = [part.lower() for part in _CAMEL_PARTS.findall(name)] or [key]
            self._starts |= {"".join(camel[: end + 1]) for end in range(len(camel))} | {key, key + "s", key + "es"}
            # "MegaGadget" may be written as two words: as many words as its CamelCase parts
            self._longest = max(self._longest, len(_ALNUM.findall(name)), len(camel))

    def _matches(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, name) of each mention, longest first at each place, left to right, not overlapping."""
        if not self._by_key or not text:
            return []
        words = list(_ALNUM.finditer(text))
        found = []
        index = 0
        while index < len(words):
            if words[index].group().lower() not in self._starts:  # most words: one set lookup
                index += 1
                continue
            for length in range(min(self._longest, len(words) - index), 0, -1):
                run = words[index : index + length]
                if any(
                    run[i + 1].start() - run[i].end() > 1 or text[run[i].end() : run[i + 1].start()] not in _JOINERS
                    for i in range(length - 1)
                ):
                    continue
                key = "".join(word.group() for word in run).lower()
                name = (
                    self._by_key.get(key)
                    or self._by_key.get(key.removesuffix("s"))
                    or (self._by_key.get(key.removesuffix("es")) if key.endswith("es") else None)
                )
                if name is not None:
                    found.append((run[0].start(), run[-1].end(), name))
                    index += length
                    break
            else:
                index += 1
        return found

    def find(self, text: str) -> list[str]:
        """Product names mentioned in `text`, each once, in order of first mention."""
        return list(dict.fromkeys(name for _, _, name in self._matches(text)))

    def canonicalise(self, text: str) -> str:
        """`text` with every spelling of a product ("mega gadget") written as the knowledge base does ("MegaGadget")."""
        pieces, last = [], 0
        for start, end, name in self._matches(text):
            pieces += [text[last:start], name]
            last = end
        return "".join(pieces) + text[last:] if pieces else text


class IntentClassifier:
    """The support intent of a customer's message: the table's intent with the most keyword phrases in it."""

    def __init__(self, intents: Mapping[str, Sequence[str]]) -> None:
        self.names = list(intents)
        self._phrases = {
            name: [tuple(stems(keyword)) for keyword in keywords if stems(keyword)]
            for name, keywords in intents.items()
        }

    def scores(self, text: str) -> dict[str, int]:
        """Keyword phrases of each intent found in `text` (intents with none left out)."""
        words = stems(text)
        padded = " " + " ".join(words) + " "
        found = {}
        for name, phrases in self._phrases.items():
            hits = sum(1 for phrase in set(phrases) if " " + " ".join(phrase) + " " in padded)
            if hits:
                found[name] = hits
        return found

    def classify(self, text: str) -> str | None:
        """The best intent, or None when no keyword matches (a "thanks", a follow-up)."""
        found = self.scores(text)
        if not found:
            return None
        best = max(found.values())
        return next(name for name in self.names if found.get(name) == best)


@lru_cache(maxsize=8)
def _classifier(items: tuple[tuple[str, tuple[str, ...]], ...]) -> IntentClassifier:
    return IntentClassifier(dict(items))


def intent_classifier(intents: Mapping[str, Sequence[str]] | None = None) -> IntentClassifier:
    """The classifier for a keyword table (default: DEFAULT_INTENTS), built once per table."""
    table = intents or DEFAULT_INTENTS
    return _classifier(tuple((name, tuple(keywords)) for name, keywords in table.items()))
