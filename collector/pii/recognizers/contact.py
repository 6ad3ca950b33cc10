"""Contact details: e-mail addresses (offline domain check, spelled-out ones) and phone numbers (libphonenumber)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers
import tldextract
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import EmailRecognizer

from collector.pii.entities import PiiType
from collector.pii.recognizers.base import Find, HouseStyleRecognizer, digits_of

# tldextract's own snapshot of the Public Suffix List, shipped in its wheel: no cache directory, no URL to fetch
OFFLINE_TLD_EXTRACT = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


# --- e-mail ----------------------------------------------------------------------------------------------------

_EMAIL_SPELLED = re.compile(
    r"\b[\w.+-]+(?:\s*(?:\[dot\]|\(dot\)|\s+dot\s+)\s*[\w-]+)*\s*(?:\[at\]|\(at\)|\s+at\s+)\s*[\w-]+"
    r"(?:\s*(?:\[dot\]|\(dot\)|\s+dot\s+|\.)\s*[\w-]+)*?\s*(?:\[dot\]|\(dot\)|\s+dot\s+|\.)\s*"
    r"(?:com|net|org|io|co|uk|de|fr|edu|gov|info|biz|me|us|ca)\b",
    re.IGNORECASE,
)
_EMAIL = re.compile(EmailRecognizer.PATTERNS[0].regex, re.IGNORECASE)


class OfflineEmailRecognizer(HouseStyleRecognizer):
    """Presidio's e-mail pattern with its domain check made offline, and spelled-out addresses."""

    ENTITIES = (PiiType.EMAIL,)

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        if "@" in text:
            for match in _EMAIL.finditer(text):
                # the same check as Presidio's EmailRecognizer.validate_result, against the bundled suffix list
                if OFFLINE_TLD_EXTRACT(match.group().rsplit("@", 1)[1]).fqdn:
                    yield match.start(), match.end(), PiiType.EMAIL, 1.0
                elif re.search(r"\.[A-Za-z]{2,24}$", match.group()):
                    # a suffix the list does not know (".example", a new gTLD): still someone's address
                    yield match.start(), match.end(), PiiType.EMAIL, 0.7
        if " at " in text.lower() or "(at)" in text.lower() or "[at]" in text.lower():
            for match in _EMAIL_SPELLED.finditer(text):
                # "jane dot doe at gmail dot com", "rob(at)example(dot)net"; not "your refund at gadgetcorp.com"
                if re.search(r"\bdot\b|\(at\)|\[at\]", match.group(), re.IGNORECASE):
                    yield match.start(), match.end(), PiiType.EMAIL, 0.9


# --- phones ---------------------------------------------------------------------------------------------------

# a run of digits with the separators people type, a lone ")" or "(" included ("383) 730-0068")
PHONE_CANDIDATE = re.compile(r"(?<![\w+.,/-])(?:\+|00)?\(?\d[\d\s().-]{5,20}\d(?![\w/]|[.,-]\d)")
_PHONE_WORDS = re.compile(
    r"\b(?:call|called|phone|ph|tel|telephone|mobile|cell|cellphone|number|num|no|text|txt|whatsapp|reach|ring|fax|"
    r"contact|landline)\b", re.IGNORECASE)
# 3-3-4 as North American numbers are written, however the brackets came out
_NANP_SHAPE = re.compile(r"^(?:\+?1[\s.-]*)?\(?\d{3}\)?[\s.-]*\d{3}[\s.-]+\d{4}$")


class PhoneRecognizer(HouseStyleRecognizer):
    """Phone numbers by libphonenumber: valid ones anywhere; merely possible ones written as a phone or named one."""

    ENTITIES = (PiiType.PHONE,)

    def __init__(self, region: str = "US", language: str = "en") -> None:
        super().__init__(language)
        self.region = region.upper()

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        for match in PHONE_CANDIDATE.finditer(text):
            candidate = match.group().strip()
            start = match.start() + match.group().index(candidate[0])
            if candidate.endswith(")") or candidate.endswith("("):
                candidate = candidate[:-1].rstrip()
            if not 7 <= len(digits_of(candidate)) <= 15:
                continue
            try:
                # "0049 30 1234567": 00 is the international prefix across most of the world
                number = phonenumbers.parse("+" + candidate[2:] if candidate.startswith("00") else candidate,
                                            self.region)
            except phonenumbers.NumberParseException:
                continue
            end = start + len(candidate)
            said = _PHONE_WORDS.search(text, max(0, start - 40), start) is not None
            if candidate.isdigit() and not said:
                continue  # "5545781356" alone is as likely an order id: a phone only when the text says so
            if phonenumbers.is_valid_number(number):
                yield start, end, PiiType.PHONE, 0.75
            elif phonenumbers.is_possible_number(number):
                # numbers outside assigned ranges (555 area codes, typos) are still someone's number when written
                # as one, or when the text says it is one
                if candidate.startswith(("+", "00")) or said or _NANP_SHAPE.match(candidate):
                    yield start, end, PiiType.PHONE, 0.7

