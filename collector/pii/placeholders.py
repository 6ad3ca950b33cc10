"""Typed placeholders (`<PERSON_1>`, `<ORDER_ID_2>`): one per distinct value within a conversation.

The same value always gets the same placeholder in one conversation, whatever its case or spacing ("Crystal"
and "crystal minh" are one person; "(383) 730-0068" and "383-730-0068" one phone); numbering starts at 1 for
each type in each conversation, in order of first appearance. Upper case inside angle brackets: the prompt
builder (core.prompts) leaves exactly these shapes alone.
"""

from __future__ import annotations

import re

from collector.pii import lexicon
from collector.pii.entities import PiiType

PLACEHOLDER = re.compile(r"<(?P<type>" + "|".join(t.value for t in PiiType) + r")_(?P<number>\d+)>")


def placeholder(pii_type: PiiType, number: int) -> str:
    return f"<{pii_type.value}_{number}>"


def canonical(pii_type: PiiType, value: str) -> str:
    """The form two mentions of one value share."""
    if pii_type in (PiiType.PHONE,):
        digits = re.sub(r"\D", "", value)
        return digits[-10:] if len(digits) >= 10 else digits
    if pii_type in (PiiType.CARD, PiiType.LAST_DIGITS):
        return re.sub(r"\D", "", value)
    if pii_type is PiiType.PERSON:
        return " ".join(re.findall(r"[^\W\d_][\w'-]*", value.lower()))
    if pii_type in (PiiType.EMAIL, PiiType.USERNAME):
        return value.strip().lower()
    if pii_type is PiiType.ADDRESS:
        # the house number and street name: "4273 Kingston Ave" and "4273 kingston ave, monterey, ca" are one place
        street = re.search(r"(\d+[a-z]?)\s+(?:(?:[nsew]|north|south|east|west)\.?\s+)?([^\W\d_][\w'-]*)", value.lower())
        if street:
            return f"{street.group(1)} {street.group(2)}"
    return re.sub(r"[^0-9a-z]", "", value.lower())


class PlaceholderTable:
    """Hands out a conversation's placeholders; `values` maps each placeholder back to the value it replaced."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[PiiType, str], str] = {}
        self._groups: dict[str, str] = {}  # canonical name mention -> the fullest name of that person
        self._fullest: dict[str, str] = {}  # that fullest name -> how it was written
        self._next: dict[PiiType, int] = {}
        self.values: dict[str, str] = {}

    def plan_people(self, names: list[str]) -> None:
        """Group name mentions into people before numbering: a first name alone joins the full name it is part of."""
        forms: dict[str, str] = {}  # canonical -> the first way it was written
        for name in names:
            forms.setdefault(canonical(PiiType.PERSON, name), name.strip())
        forms.pop("", None)
        groups: list[tuple[set[str], str]] = []
        for name in sorted(forms, key=lambda n: -len(n.split())):
            words = set(name.split())
            for group_words, group_name in groups:
                if words <= group_words:
                    self._groups[name] = group_name
                    break
            else:
                groups.append((words, name))
                self._groups[name] = name
                self._fullest[name] = forms[name]

    def get(self, pii_type: PiiType, value: str) -> str:
        key = canonical(pii_type, value)
        if pii_type is PiiType.PERSON:
            key = self._groups.get(key, key)
        existing = self._by_key.get((pii_type, key))
        if existing is not None:
            return existing
        number = self._next.get(pii_type, 0) + 1
        self._next[pii_type] = number
        name = placeholder(pii_type, number)
        self._by_key[(pii_type, key)] = name
        # a person stands for the fullest form of their name: what reply code fills in
        self.values[name] = self._fullest.get(key, value.strip()) if pii_type is PiiType.PERSON else value.strip()
        return name


def name_parts(name: str) -> list[str]:
    """The words of a name that identify its bearer on their own: not "de", "van" or ordinary words."""
    return [
        word for word in re.findall(r"[^\W\d_][\w'-]*", name)
        if len(word) >= 2 and word.lower() not in lexicon.STOPWORDS and word.lower() not in {"de", "la", "van", "von",
                                                                                              "der", "del", "da"}
    ]
