"""Answers to the turn before: what a turn asks for ("May I have your order id?"), and the value the next one gives."""

from __future__ import annotations

import re
from collections.abc import Iterator

from presidio_analyzer.nlp_engine import NlpArtifacts

from collector.pii import lexicon
from collector.pii.entities import PiiType
from collector.pii.recognizers.base import Find, HouseStyleRecognizer, digits_of
from collector.pii.recognizers.contact import PHONE_CANDIDATE
from collector.pii.recognizers.labels import (
    LABEL,
    VALUE_TOKEN,
    WEAK_LABELS,
    ZIP,
    LabelledValueRecognizer,
    label_index,
    label_type,
    looks_like_username,
    normalise_labels,
    value_fits,
)
from collector.pii.recognizers.names import SURNAME_FIRST, NameRecognizer

_REQUEST = re.compile(
    r"\?|\b(?:please|pls|plz|provide|share|give|send|tell|confirm|need|enter|verify|what|which|may\s+i|can\s+i|"
    r"could\s+i|could\s+you|can\s+you|type|read)\b", re.IGNORECASE)
_ASK_NAME = re.compile(
    r"\b(?:your|ur|the)\s+(?:full\s+|first\s+|last\s+|complete\s+)?name\b|\bwho\s+(?:am\s+i|i\s+am)\s+"
    r"(?:speaking|chatting|talking)|\bname\s+(?:please|pls)\b|\bname\s+on\s+the\s+(?:account|order)\b|"
    r"\bmy\s+(?:full\s+|first\s+)?name\s+is\s*[.:]?\s*$|\bname\s*[:?]\s*$")


def asked_types(text: str) -> set[PiiType]:
    """What a turn asks the next one for: a label with no value before or after it, in a question or request
    ("What's your order id?", "Can I get your name and zip code?"), or left hanging at the end ("my username is")."""
    asked: set[PiiType] = set()
    normalised, _ = normalise_labels(text)
    request = _REQUEST.search(normalised) is not None
    for label in LABEL.finditer(normalised):
        if label_index(label) in WEAK_LABELS:
            continue
        pii_type = label_type(label)
        if LabelledValueRecognizer.value_after(normalised, label.end(), pii_type, True) is not None:
            continue
        if LabelledValueRecognizer.value_before(normalised, label.start(), pii_type) is not None:
            continue
        dangling = re.fullmatch(r"(?:\s|[:#=\-.,]|\bis\b|\bwas\b|\bare\b)*", normalised[label.end():],
                                re.IGNORECASE) is not None
        if request or dangling:
            asked.add(pii_type)
    lowered = normalised.lower()
    if _ASK_NAME.search(lowered) and (request or re.search(r"name\s*(?:is|:)?\s*[.:]?\s*$", lowered)):
        asked.add(PiiType.PERSON)
    if request and re.search(r"\be-?mail\b", lowered) and "@" not in lowered:
        asked.add(PiiType.EMAIL)
    if request and re.search(r"(?<!e-mail )(?<!email )\baddress\b|\bwhere\s+should\s+we\s+(?:send|ship)", lowered) \
            and not re.search(r"\d{2,}\s+\w+", lowered):
        asked.add(PiiType.ADDRESS)
    if request and re.search(r"\b(?:phone|mobile|cell|number\s+to\s+(?:reach|call|text))\b", lowered):
        asked.add(PiiType.PHONE)
    return asked


class AnswerRecognizer(HouseStyleRecognizer):
    """The value a message gives for what the turn before asked ("May I have your username?" → "cminh730")."""

    ENTITIES = (PiiType.ORDER_ID, PiiType.ACCOUNT_ID, PiiType.USERNAME, PiiType.REFERENCE, PiiType.ZIP_CODE,
                PiiType.LAST_DIGITS, PiiType.PHONE, PiiType.PERSON)

    def __init__(self, asked: set[PiiType], names: NameRecognizer, language: str = "en") -> None:
        super().__init__(language)
        self.asked = asked
        self.names = names

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        asked = set(self.asked)
        if PiiType.PERSON in asked:
            opener = re.match(r"\s*(?:(?:sure|yes|yeah|yep|ok|okay|hi|hello|of\s+course|certainly)\b[\s,!.]*)*"
                              r"(?:(?:it'?s|it\s+is|i'?m|i\s+am|this\s+is|my\s+name\s+is|name\s+is|its)\s+)?", text,
                              re.IGNORECASE)
            span = self.names.name_at(text, opener.end(), strict=False)
            reversed_name = SURNAME_FIRST.match(text, opener.end())
            if reversed_name and self.names.is_name_start(reversed_name.group(2), strict=False) and \
                    lexicon.looks_like_name_word(reversed_name.group(1)):
                span = reversed_name.start(), reversed_name.end(2)  # "moon, shari": surname first, as on forms
            if span is None:  # "sure, tea rissanen": an everyday first word is a name when a surname follows
                pair = re.compile(r"([A-Za-z][a-z'-]+)\s+([A-Za-z][a-z'-]+)\s*[.!]?\s*$").match(text, opener.end())
                if pair and lexicon.looks_like_name_word(pair.group(1)) and pair.group(1).lower() not in \
                        lexicon.STOPWORDS and (self.names.rare_name_word(pair.group(2), 3.0)
                                               or pair.group(2).lower() in lexicon.last_names()):
                    span = pair.start(), pair.end(2)
            if span:
                yield span[0], span[1], PiiType.PERSON, 0.85
        if PiiType.PHONE in asked:
            for match in PHONE_CANDIDATE.finditer(text):
                if 7 <= len(digits_of(match.group())) <= 15:
                    yield match.start(), match.end(), PiiType.PHONE, 0.8
        for match in VALUE_TOKEN.finditer(text):
            value = match.group()
            pii_type = self._type_of(value, asked)
            if pii_type is not None:
                yield match.start(), match.end(), pii_type, 0.85

    @staticmethod
    def _type_of(value: str, asked: set[PiiType]) -> PiiType | None:
        digits_only = value.isdigit()
        if digits_only and PiiType.ZIP_CODE in asked and ZIP.fullmatch(value):
            return PiiType.ZIP_CODE
        if digits_only and PiiType.LAST_DIGITS in asked and 3 <= len(value) <= 6:
            return PiiType.LAST_DIGITS
        if ZIP.fullmatch(value) and not digits_only and PiiType.ZIP_CODE in asked and any(c.isdigit() for c in value):
            return PiiType.ZIP_CODE
        order = [PiiType.ORDER_ID, PiiType.REFERENCE, PiiType.ACCOUNT_ID] if digits_only else (
            [PiiType.ACCOUNT_ID, PiiType.ORDER_ID, PiiType.REFERENCE] if value.upper() == value
            else [PiiType.USERNAME, PiiType.ACCOUNT_ID, PiiType.ORDER_ID, PiiType.REFERENCE])
        for pii_type in order:
            if pii_type in asked and value_fits(pii_type, value):
                return pii_type
        if PiiType.USERNAME in asked and not digits_only and looks_like_username(value) and (
                any(ch.isdigit() for ch in value) or not lexicon.is_common_word(value, 3.5)):
            return PiiType.USERNAME
        return None
