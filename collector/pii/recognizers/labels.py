"""Values a label names ("Order ID: 5545781356", "82012 is my zipcode"), label words typed with typos, and the
shape a value of each labelled type has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

from presidio_analyzer.nlp_engine import NlpArtifacts
from rapidfuzz.distance import OSA

from collector.pii import lexicon
from collector.pii.entities import PiiType
from collector.pii.recognizers.base import Find, HouseStyleRecognizer, digits_of

_NUMBER_WORD = r"(?:id|i\.d\.?|#|no\.?|nr\.?|num\.?|numb?er|nmber|numer|code)"
# label phrases, typos included; each names the type of the value it labels
LABELS: list[tuple[PiiType, str]] = [
    (PiiType.LAST_DIGITS, r"(?:last|final)\s+(?:(?:(?:4|four|5|five|3|three|6|six)"
                          r"(?:\s+(?:digits?|numbers?|nums?|#s?))?)|"
                          r"digits|numbers)"
                          r"(?:\s+(?:of|on|for|from)\s+(?:my|the|your|that|this)?\s*"
                          r"(?:credit\s+|debit\s+|bank\s+)?(?:card|cc|phone|account|acct|number|ssn))?"),
    (PiiType.LAST_DIGITS, r"(?:ending|ends|ended)(?:\s+(?:in|with|on))?"),
    (PiiType.USERNAME, r"(?:user\s*-?\s*name|usr\s*name|usernmae|usernam|user\s+nam|login(?:\s+name)?|"
                       r"screen\s*name|handle)"),
    (PiiType.ACCOUNT_ID, r"(?:acc?oun?t|acount|accnt|acct|a/c|user|member(?:ship)?|customer|client|loyalty|"
                         r"rewards?)\s*" + _NUMBER_WORD),
    (PiiType.ORDER_ID, r"(?:ord?er|odrer|oder|ordr|orer|purchase|invoice)\s*" + _NUMBER_WORD),
    (PiiType.REFERENCE, r"(?:confirmation|confirmaton|confimation|confirm|conf|booking|reservation|reservaton|"
                        r"ticket|case|reference|ref|claim|return|rma|refund)\s*" + _NUMBER_WORD),
    (PiiType.ZIP_CODE, r"(?:zip\s*-?\s*(?:code|cod)?|zipcode|zipcod|zpi\s*code|postal\s*code|post\s*code|postcode)"),
    (PiiType.PHONE, r"(?:phone|cell|mobile|telephone|tel)(?:\s*(?:number|numb?er|no\.?|#))?"),
    # weaker: a bare "order", "account" or "ticket" names a value only when the value looks like an id
    (PiiType.REFERENCE, r"(?:confirmation|booking|reservation|ticket|case|reference|ref|claim|rma)"),
    (PiiType.ORDER_ID, r"ord?er"),
    (PiiType.ACCOUNT_ID, r"(?:acc?oun?t|acount|acct)"),
]
_LABEL_ALTERNATIVES = "|".join(f"(?P<L{i}>{pattern})" for i, (_, pattern) in enumerate(LABELS))
LABEL = re.compile(r"(?<![\w])(?:" + _LABEL_ALTERNATIVES + r")(?![a-z])", re.IGNORECASE)
# what may stand between a label and its value: "order id is: #5545781356", "username would be cminh730"
_FILLER = re.compile(
    r"(?:\s*(?:[:=#\-–,.(]|\bis\b|\bwas\b|\bare\b|\bwere\b|\bwould\s+be\b|\bshould\s+be\b|\bit'?s\b|\bit\s+is\b|\bas\b|"
    r"\bon\s+file\b|\bof\b|\bfor\b|\bthe\b|\bmy\b|\bnumber\b|\bno\b|\bhere\b|\bplease\b|\bthat\b))*\s*",
    re.IGNORECASE)
_VALUE_AFTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]|\d")
_VALUE_BEFORE = re.compile(
    r"(?<![\w@.-])(?P<value>[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])\s*(?:is|was|=|-|:|would\s+be)\s+"
    r"(?:my|the|our|your|his|her)\s+$", re.IGNORECASE)
ZIP = re.compile(r"\d{5}(?:-\d{4})?|[A-Z]\d[A-Z]\s?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}", re.IGNORECASE)
_ID_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]")
# a word that may be a value: an id, a handle, a zip ("5545781356", "cminh730", "YX-27444")
VALUE_TOKEN = re.compile(r"(?<![\w@.'-])[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9](?![\w@'-])")

# the words labels are made of: a word one slip away from one of them (and not itself a word) is that word
LABEL_VOCABULARY = ("order", "account", "username", "user", "name", "number", "confirmation", "reservation",
                    "booking", "ticket", "reference", "member", "customer", "zipcode", "postal", "digits", "address",
                    "phone", "email", "ending", "login", "case")


@lru_cache(maxsize=65536)
def label_word_for(word: str) -> str | None:
    """The label word `word` is a typo of ("oder" → "order", "usrname" → "username"), or None."""
    lowered = word.lower()
    if len(lowered) < 3 or lowered in LABEL_VOCABULARY or lexicon.is_common_word(lowered, 3.0):
        return None
    for label in LABEL_VOCABULARY:
        if len(label) >= 4 and abs(len(label) - len(lowered)) <= 1 and OSA.distance(lowered, label) <= 1:
            return label
    return None


def near_label(word: str) -> bool:
    """One slip from a label word, common word or not: "emil:" before an address is "email:", not Emil."""
    lowered = word.lower()
    return any(OSA.distance(lowered, label) <= 1 for label in LABEL_VOCABULARY if len(label) >= 4)


def normalise_labels(text: str) -> tuple[str, list[int]]:
    """`text` with mistyped label words spelt right, and for each of its characters the original's index."""
    pieces: list[str] = []
    origin: list[int] = []
    cursor = 0
    for match in re.finditer(r"[A-Za-z]{3,}", text):
        fixed = label_word_for(match.group())
        if fixed is None:
            continue
        pieces.append(text[cursor:match.start()])
        origin.extend(range(cursor, match.start()))
        pieces.append(fixed)
        origin.extend([match.start()] * len(fixed))
        cursor = match.end()
    if not pieces:
        return text, []
    pieces.append(text[cursor:])
    origin.extend(range(cursor, len(text) + 1))
    return "".join(pieces), origin


def label_index(match: re.Match[str]) -> int:
    return next(int(name[1:]) for name, value in match.groupdict().items() if value is not None)


def label_type(match: re.Match[str]) -> PiiType:
    return LABELS[label_index(match)][0]


def looks_like_id(value: str, *, strong: bool = True) -> bool:
    """An order, account or reference id: 4+ characters with a digit ("5545781356", "4VEJCYVP8U", "GC-10485");
    with a weak label (a bare "order"), 5+ characters and a digit, or a run of capitals."""
    if not _ID_CHARS.fullmatch(value) or not 4 <= len(value) <= 16:  # 18-character tracking numbers are not ids
        return False
    has_digit = any(ch.isdigit() for ch in value)
    if has_digit:
        return len(value) >= (4 if strong else 5) and not re.fullmatch(r"(?:19|20)\d\d", value)  # not a year
    return strong and len(value) >= 6 and value.isupper()


def looks_like_username(value: str) -> bool:
    """A handle: letters and digits (dots, dashes, underscores inside), not an ordinary word ("wrong", "not")."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*[A-Za-z0-9]", value) or not 3 <= len(value) <= 30:
        return False
    if re.fullmatch(r"1Z[0-9A-Z]{16}", value, re.IGNORECASE) or label_word_for(value):
        return False  # a UPS tracking number; a mistyped label word
    if any(ch.isdigit() for ch in value) or "_" in value or "." in value:
        return True
    return not lexicon.is_common_word(value, threshold=3.0) or lexicon.is_first_name(value)


def value_fits(pii_type: PiiType, value: str, *, strong: bool = True) -> bool:
    """Whether `value` has the shape a value of `pii_type` has."""
    if pii_type in (PiiType.ORDER_ID, PiiType.ACCOUNT_ID, PiiType.REFERENCE):
        return looks_like_id(value, strong=strong)
    if pii_type is PiiType.USERNAME:
        return looks_like_username(value)
    if pii_type is PiiType.ZIP_CODE:
        return ZIP.fullmatch(value) is not None
    if pii_type is PiiType.LAST_DIGITS:
        return value.isdigit() and 3 <= len(value) <= 6
    return False


WEAK_LABELS = {len(LABELS) - 3, len(LABELS) - 2, len(LABELS) - 1}


class LabelledValueRecognizer(HouseStyleRecognizer):
    """A value right after its label, or right before "is my <label>"; phones after a label need 7+ digits."""

    ENTITIES = (PiiType.ORDER_ID, PiiType.ACCOUNT_ID, PiiType.USERNAME, PiiType.REFERENCE, PiiType.ZIP_CODE,
                PiiType.LAST_DIGITS, PiiType.PHONE)

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        normalised, origin = normalise_labels(text)
        for start, end, pii_type, score in self.find_exact(normalised):
            if origin:
                start, end = origin[start], origin[end - 1] + 1
            yield start, end, pii_type, score

    def find_exact(self, text: str) -> Iterator[Find]:
        for label in LABEL.finditer(text):
            pii_type = label_type(label)
            strong = label_index(label) not in WEAK_LABELS
            found = self.value_after(text, label.end(), pii_type, strong)
            if found is None and strong:
                found = self.value_before(text, label.start(), pii_type)
            if found is None and strong:
                found = self._later(text, label.end(), pii_type)
            if found is not None:
                yield found

    @staticmethod
    def _later(text: str, position: int, pii_type: PiiType) -> Find | None:
        """A value further along the same sentence: "a case number from last time, it's YX-27444"."""
        if pii_type not in (PiiType.ORDER_ID, PiiType.ACCOUNT_ID, PiiType.REFERENCE, PiiType.ZIP_CODE,
                            PiiType.LAST_DIGITS):
            return None
        stretch = re.match(r"[^.!?\n]{0,50}", text[position:]).group()
        for match in VALUE_TOKEN.finditer(stretch):
            value = match.group()
            if any(ch.isdigit() for ch in value) and value_fits(pii_type, value):
                return position + match.start(), position + match.end(), pii_type, 0.8
            if LABEL.match(value):
                return None  # another label's value
        return None

    @staticmethod
    def value_after(text: str, position: int, pii_type: PiiType, strong: bool) -> Find | None:
        """The value of `pii_type` right after a label ending at `position`, or None."""
        filler = _FILLER.match(text, position)
        cursor = filler.end() if filler else position
        if cursor - position > 40:
            return None
        if pii_type is PiiType.PHONE:
            match = re.compile(r"\+?\(?\d[\d\s().-]{5,20}\d").match(text, cursor)
            if match and 7 <= len(digits_of(match.group())) <= 15:
                return match.start(), match.end(), PiiType.PHONE, 0.8
            return None
        if pii_type is PiiType.ZIP_CODE:
            match = ZIP.match(text, cursor)
            if match and not (match.end() < len(text) and text[match.end()].isalnum()):
                return match.start(), match.end(), pii_type, 0.95
            return None
        match = _VALUE_AFTER.match(text, cursor)
        if match is None:
            return None
        value = match.group().rstrip(".-_")
        if value_fits(pii_type, value, strong=strong):
            return match.start(), match.start() + len(value), pii_type, 0.95 if strong else 0.8
        return None

    @staticmethod
    def value_before(text: str, position: int, pii_type: PiiType) -> Find | None:
        """The value of `pii_type` right before "is my <label>", the label starting at `position`, or None."""
        match = _VALUE_BEFORE.search(text, max(0, position - 60), position)
        if match is None or match.end() != position:
            return None
        value = match.group("value")
        if pii_type is PiiType.PHONE:
            return None
        if value_fits(pii_type, value):
            return match.start("value"), match.end("value"), pii_type, 0.9
        return None

