"""HouseStyle's Presidio recognizers: what support chats hold that Presidio's own recognizers miss or check worse.

Each is a Presidio `EntityRecognizer`, so the analyzer runs them beside spaCy's NER in one pass:
- `OfflineEmailRecognizer`: Presidio's e-mail pattern, its domain checked against tldextract's bundled suffix
  list (never downloaded), plus addresses spelled out to dodge filters ("jane dot doe at gmail dot com").
- `PhoneRecognizer`, `CardRecognizer`, `IbanRecognizer`: a loose pattern, then libphonenumber's rules, Luhn and
  IBAN mod-97 (python-stdnum), so prices, dates, versions and tracking numbers stay.
- `ConfiguredIdRecognizer`: the deployment's own order and account id patterns (HOUSESTYLE_ORDER_ID_PATTERN...).
- `LabelledValueRecognizer`: a value a label names, after it ("Order ID: 5545781356", "username is cminh730")
  or before it ("82012 is my zipcode"), labels typed with the usual typos ("oder id", "acount number").
- `AddressRecognizer`: street addresses in any case ("8574 spring street, brighton, ca 82012"), PO boxes.
- `NameRecognizer`: names spaCy's small model misses: after a cue ("my name is albert sanders"), as a vocative
  ("thanks, albert"), a known first name followed by a surname ("Crystal Minh, I don't know my account ID").
- `FilteredSpacyRecognizer`: spaCy's PERSON entities without products, brands and ordinary words.
- `AnswerRecognizer`: the value a message gives when the turn before asked for it ("May I have your order
  id?" → "5545781356"); built per message by the conversation redactor (an ad-hoc recognizer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

import phonenumbers
import tldextract
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import EmailRecognizer, SpacyRecognizer
from rapidfuzz.distance import OSA
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.exceptions import ValidationError

from collector.pii import lexicon
from collector.pii.entities import PiiType

Find = tuple[int, int, PiiType, float]

# tldextract's own snapshot of the Public Suffix List, shipped in its wheel: no cache directory, no URL to fetch
OFFLINE_TLD_EXTRACT = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


class _Recognizer(EntityRecognizer):
    """A Presidio recognizer whose `find` yields (start, end, type, score); Presidio filters by entity."""

    ENTITIES: tuple[PiiType, ...] = ()

    def __init__(self, language: str = "en") -> None:
        super().__init__(supported_entities=[t.value for t in self.ENTITIES], supported_language=language)

    def load(self) -> None:  # nothing to load: patterns compile at import
        pass

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterable[Find]:
        raise NotImplementedError

    def analyze(self, text: str, entities: list[str],
                nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        wanted = set(entities) if entities else None
        return [
            RecognizerResult(pii_type.value, start, end, score, recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})
            for start, end, pii_type, score in self.find(text, nlp_artifacts)
            if end > start and (wanted is None or pii_type.value in wanted)
        ]


# --- e-mail ----------------------------------------------------------------------------------------------------

_EMAIL_SPELLED = re.compile(
    r"\b[\w.+-]+(?:\s*(?:\[dot\]|\(dot\)|\s+dot\s+)\s*[\w-]+)*\s*(?:\[at\]|\(at\)|\s+at\s+)\s*[\w-]+"
    r"(?:\s*(?:\[dot\]|\(dot\)|\s+dot\s+|\.)\s*[\w-]+)*?\s*(?:\[dot\]|\(dot\)|\s+dot\s+|\.)\s*"
    r"(?:com|net|org|io|co|uk|de|fr|edu|gov|info|biz|me|us|ca)\b",
    re.IGNORECASE,
)
_EMAIL = re.compile(EmailRecognizer.PATTERNS[0].regex, re.IGNORECASE)


class OfflineEmailRecognizer(_Recognizer):
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


# --- numbers with a check: phones, cards, IBANs --------------------------------------------------------------

# a run of digits with the separators people type, a lone ")" or "(" included ("383) 730-0068")
_PHONE = re.compile(r"(?<![\w+.,/-])(?:\+|00)?\(?\d[\d\s().-]{5,20}\d(?![\w/]|[.,-]\d)")
_PHONE_WORDS = re.compile(
    r"\b(?:call|called|phone|ph|tel|telephone|mobile|cell|cellphone|number|num|no|text|txt|whatsapp|reach|ring|fax|"
    r"contact|landline)\b", re.IGNORECASE)
# 3-3-4 as North American numbers are written, however the brackets came out
_NANP_SHAPE = re.compile(r"^(?:\+?1[\s.-]*)?\(?\d{3}\)?[\s.-]*\d{3}[\s.-]+\d{4}$")


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


class PhoneRecognizer(_Recognizer):
    """Phone numbers by libphonenumber: valid ones anywhere; merely possible ones written as a phone or named one."""

    ENTITIES = (PiiType.PHONE,)

    def __init__(self, region: str = "US", language: str = "en") -> None:
        super().__init__(language)
        self.region = region.upper()

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        for match in _PHONE.finditer(text):
            candidate = match.group().strip()
            start = match.start() + match.group().index(candidate[0])
            if candidate.endswith(")") or candidate.endswith("("):
                candidate = candidate[:-1].rstrip()
            if not 7 <= len(_digits(candidate)) <= 15:
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


_CARD = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){12,18}(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,30}\b", re.IGNORECASE)


class CardRecognizer(_Recognizer):
    """Payment card numbers: 13-19 digits, spaced or not, that pass Luhn."""

    ENTITIES = (PiiType.CARD,)

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        for match in _CARD.finditer(text):
            digits = _digits(match.group())
            if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
                yield match.start(), match.end(), PiiType.CARD, 0.95


def is_iban(text: str) -> bool:
    """Country code, the country's length and the mod-97 check (python-stdnum)."""
    try:
        stdnum_iban.validate(re.sub(r"[\s-]", "", text), check_country=False)
    except ValidationError:
        return False
    return True


class IbanRecognizer(_Recognizer):
    """IBANs: the longest prefix of an IBAN-shaped run that passes the country length and mod-97 check."""

    ENTITIES = (PiiType.IBAN,)

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        for match in _IBAN.finditer(text):
            candidate = match.group()
            # the pattern may run on into the next word ("...3000 thanks"): take the longest prefix that checks out
            for end in range(len(candidate), 14, -1):
                if candidate[end - 1].isalnum() and (end == len(candidate) or not candidate[end].isalnum() or
                                                     candidate[end - 1].isdigit() != candidate[end].isdigit()):
                    if is_iban(candidate[:end]):
                        yield match.start(), match.start() + end, PiiType.IBAN, 1.0
                        break


class ConfiguredIdRecognizer(_Recognizer):
    """The deployment's own id formats (HOUSESTYLE_ORDER_ID_PATTERN, HOUSESTYLE_ACCOUNT_ID_PATTERN), any case."""

    ENTITIES = (PiiType.ORDER_ID, PiiType.ACCOUNT_ID)

    def __init__(self, patterns: dict[PiiType, re.Pattern[str]], language: str = "en") -> None:
        super().__init__(language)
        self.patterns = patterns

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        for pii_type, pattern in self.patterns.items():
            for match in pattern.finditer(text):
                yield match.start(), match.end(), pii_type, 0.95


# --- labelled values -------------------------------------------------------------------------------------------

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
_LABEL = re.compile(r"(?<![\w])(?:" + _LABEL_ALTERNATIVES + r")(?![a-z])", re.IGNORECASE)
# what may stand between a label and its value: "order id is: #5545781356", "username would be cminh730"
_FILLER = re.compile(
    r"(?:\s*(?:[:=#\-–,.(]|\bis\b|\bwas\b|\bare\b|\bwere\b|\bwould\s+be\b|\bshould\s+be\b|\bit'?s\b|\bit\s+is\b|\bas\b|"
    r"\bon\s+file\b|\bof\b|\bfor\b|\bthe\b|\bmy\b|\bnumber\b|\bno\b|\bhere\b|\bplease\b|\bthat\b))*\s*",
    re.IGNORECASE)
_VALUE_AFTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]|\d")
_VALUE_BEFORE = re.compile(
    r"(?<![\w@.-])(?P<value>[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])\s*(?:is|was|=|-|:|would\s+be)\s+"
    r"(?:my|the|our|your|his|her)\s+$", re.IGNORECASE)
_ZIP = re.compile(r"\d{5}(?:-\d{4})?|[A-Z]\d[A-Z]\s?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}", re.IGNORECASE)
_ID_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]")


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
        return _ZIP.fullmatch(value) is not None
    if pii_type is PiiType.LAST_DIGITS:
        return value.isdigit() and 3 <= len(value) <= 6
    return False


_WEAK_LABELS = {len(LABELS) - 3, len(LABELS) - 2, len(LABELS) - 1}


class LabelledValueRecognizer(_Recognizer):
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
        for label in _LABEL.finditer(text):
            pii_type = label_type(label)
            strong = label_index(label) not in _WEAK_LABELS
            found = self._after(text, label.end(), pii_type, strong)
            if found is None and strong:
                found = self._before(text, label.start(), pii_type)
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
        for match in _ANSWER_TOKEN.finditer(stretch):
            value = match.group()
            if any(ch.isdigit() for ch in value) and value_fits(pii_type, value):
                return position + match.start(), position + match.end(), pii_type, 0.8
            if _LABEL.match(value):
                return None  # another label's value
        return None

    @staticmethod
    def _after(text: str, position: int, pii_type: PiiType, strong: bool) -> Find | None:
        filler = _FILLER.match(text, position)
        cursor = filler.end() if filler else position
        if cursor - position > 40:
            return None
        if pii_type is PiiType.PHONE:
            match = re.compile(r"\+?\(?\d[\d\s().-]{5,20}\d").match(text, cursor)
            if match and 7 <= len(_digits(match.group())) <= 15:
                return match.start(), match.end(), PiiType.PHONE, 0.8
            return None
        if pii_type is PiiType.ZIP_CODE:
            match = _ZIP.match(text, cursor)
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
    def _before(text: str, position: int, pii_type: PiiType) -> Find | None:
        match = _VALUE_BEFORE.search(text, max(0, position - 60), position)
        if match is None or match.end() != position:
            return None
        value = match.group("value")
        if pii_type is PiiType.PHONE:
            return None
        if value_fits(pii_type, value):
            return match.start("value"), match.end("value"), pii_type, 0.9
        return None


_REQUEST = re.compile(
    r"\?|\b(?:please|pls|plz|provide|share|give|send|tell|confirm|need|enter|verify|what|which|may\s+i|can\s+i|"
    r"could\s+i|could\s+you|can\s+you|type|read)\b", re.IGNORECASE)


def asked_types(text: str) -> set[PiiType]:
    """What a turn asks the next one for: a label with no value before or after it, in a question or request
    ("What's your order id?", "Can I get your name and zip code?"), or left hanging at the end ("my username is")."""
    asked: set[PiiType] = set()
    normalised, _ = normalise_labels(text)
    request = _REQUEST.search(normalised) is not None
    for label in _LABEL.finditer(normalised):
        if label_index(label) in _WEAK_LABELS:
            continue
        pii_type = label_type(label)
        if LabelledValueRecognizer._after(normalised, label.end(), pii_type, True) is not None:
            continue
        if LabelledValueRecognizer._before(normalised, label.start(), pii_type) is not None:
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


_ASK_NAME = re.compile(
    r"\b(?:your|ur|the)\s+(?:full\s+|first\s+|last\s+|complete\s+)?name\b|\bwho\s+(?:am\s+i|i\s+am)\s+"
    r"(?:speaking|chatting|talking)|\bname\s+(?:please|pls)\b|\bname\s+on\s+the\s+(?:account|order)\b|"
    r"\bmy\s+(?:full\s+|first\s+)?name\s+is\s*[.:]?\s*$|\bname\s*[:?]\s*$")


# --- street addresses ------------------------------------------------------------------------------------------

STREET_SUFFIXES = (
    "street|st|avenue|ave|av|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|ter|"
    "parkway|pkwy|circle|cir|highway|hwy|square|sq|crescent|close|row|trail|trl|plaza|loop|pike"
)
_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|"
    "PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC"
)
_NOT_STREET_WORD = (
    r"(?!(?:a|an|the|of|my|your|our|to|for|in|on|at|about|and|or|is|it|was|by|with|from|this|that|these|those|"
    r"items?|pairs?|questions?|times?|days?|weeks?|months?|years?|hours?|minutes?|dollars?|bucks|usd|percent|"
    r"orders?|shirts?|sizes?|units?|pieces?|pcs|more|other|different)\b)"
)
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}"
_NOT_CITY = (r"(?!(?:please|pls|thanks|thank|and|or|but|is|it|asap|now|too|instead|zip|zipcode|postal|postcode|code|"
             r"my|the)\b)")
_CITY = _NOT_CITY + r"[A-Za-z][A-Za-z.'-]+(?:\s" + _NOT_CITY + r"[A-Za-z][A-Za-z.'-]+){0,2}"
_UNIT = r"(?:apt|apartment|suite|ste|unit|flat|room|floor|fl|#)\.?\s*#?\s*[A-Za-z0-9-]+"
_TAIL = (
    r"(?:,?\s+" + _UNIT + r")?"
    r"(?:(?:,\s*|\s+)" + _CITY + r"\b(?=(?:\s*,\s*|\s+)(?:(?:" + _US_STATES + r")\b|\d{5}|" + _UK_POSTCODE + r"\b))"
    r"|,\s*" + _CITY + r"\b(?=\s*[,.!?;)]|\s*$|\s+(?:please|pls|thanks|thank|asap|now|instead|too|and)\b))?"
    r"(?:,?\s+(?:" + _US_STATES + r")(?=[\s,.]|$))?"
    r"(?:,?\s+(?:\d{5}(?:-\d{4})?|" + _UK_POSTCODE + r"))?"
)
_ADDRESS = re.compile(
    r"(?:\b" + _UNIT + r",?\s+)?"
    r"\b\d{1,6}[A-Za-z]?\s+(?:(?:[NSEW]\.?|north|south|east|west)\s+)?"
    r"(?:" + _NOT_STREET_WORD + r"[A-Za-z0-9][\w'.-]*\s+){1,3}(?:" + STREET_SUFFIXES + r")\b\.?(?!\w)" + _TAIL,
    re.IGNORECASE,
)
_ADDRESS_EU = re.compile(
    r"\b[A-ZÄÖÜ][a-zäöüß-]+(?:straße|strasse|str\.|weg|gasse|allee|platz|laan|straat|gatan|vej)\s+\d{1,4}[a-z]?\b"
    r"(?:,\s*\d{4,5}\s+[A-ZÄÖÜ][a-zäöüß]+)?"
)
_PO_BOX = re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d+\b" + _TAIL, re.IGNORECASE)


class AddressRecognizer(_Recognizer):
    """Street addresses with the unit, city, state and zip that follow; European "Hauptstraße 12"; PO boxes."""

    ENTITIES = (PiiType.ADDRESS,)

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        if not any(ch.isdigit() for ch in text):
            return
        for pattern in (_ADDRESS, _ADDRESS_EU, _PO_BOX):
            for match in pattern.finditer(text):
                end = match.end()
                while end > match.start() and text[end - 1] in ",. ":
                    end -= 1
                yield match.start(), end, PiiType.ADDRESS, 0.85


# --- names -----------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z]|\S")
# cues after which what follows is a name ("strong"), or may be one if it is a known first name ("weak")
_STRONG_CUE = re.compile(
    r"\b(?:my\s+(?:full\s+|first\s+|last\s+|sur)?name\s*(?:is|'s|:|=|-)?|"
    r"(?:first|last|sur|family|given|full)\s*-?\s*name\s*(?:is|'s|:|=|-)?|(?:full\s+|first\s+|last\s+)?name\s*(?::|=|-)|"
    r"(?:the\s+)?name\s+is|name's|names\s+is|i\s+am\s+called|call\s+me|(?:this|it)\s+is\s+(?=\w+\s+(?:here|speaking)\b)|"
    r"speaking\s+with|under\s+the\s+name(?:\s+of)?|in\s+the\s+name\s+of|account\s+holder(?:\s+is)?|"
    r"signed\s*,?|regards\s*,?|sincerely\s*,?)\s*", re.IGNORECASE)
# "Ms Oksanen", "mr. gilmore": a title, then a name in any case
_TITLE = re.compile(r"\b(?:mr|mrs|ms|miss|mx|dr|mister|madam)\.?\s+(?=[A-Za-z])", re.IGNORECASE)
_WEAK_CUE = re.compile(r"\b(?:this\s+is|i\s*'?\s*m|i\s+am|it\s*'?\s*s|it\s+is|im|(?:chatting|speaking|talking)\s+"
                       r"(?:with|to)|(?:you'?re|you\s+are)\s+(?:with|talking\s+to))\s+", re.IGNORECASE)
# "claude mohamud here", "Jordan here, how can I help?"
_HERE = re.compile(r"(?:^|[.!?,]\s*|\b(?:hi|hello|hey|morning|evening)[\s,!]+)((?:[A-Za-z][A-Za-z'-]+\s+){0,2}"
                   r"[A-Za-z][A-Za-z'-]+)\s+(?:here|speaking)\b", re.IGNORECASE)
_VOCATIVE = re.compile(
    r"\b(?:thanks|thank\s+you|thank\s+u|thankyou|thx|ty|hi|hello|hey|dear|bye|goodbye|morning|good\s+morning|"
    r"good\s+afternoon|good\s+evening|welcome|cheers|ok|okay|great|perfect|sure|alright|no\s+problem|"
    r"you'?re\s+welcome|appreciate\s+it|got\s+it|sorry|sounds\s+good|no\s+worries|understood|of\s+course|"
    r"absolutely|certainly|noted|done|awesome|wonderful|excellent|glad\s+(?:i|we)\s+could\s+help|"
    r"happy\s+to\s+help|you'?re\s+all\s+set|take\s+care|have\s+a\s+(?:good|great|nice)\s+(?:day|one|evening))(?:\s+(?:so\s+much|very\s+much|again|a\s+lot|a\s+bunch))?"
    r"\s*[,!.]?\s+", re.IGNORECASE)
_NAME_SENTENCE = re.compile(
    r"(?:^|(?<=[.!?\n])\s*)([A-Za-z][A-Za-z'-]+(?:\s+[A-Za-z][A-Za-z'-]+){1,2})\s*(?=[.!?\n]|$)")
_SURNAME_FIRST = re.compile(r"([A-Za-z][A-Za-z'-]+),\s*([A-Za-z][A-Za-z'-]+)\s*[.!]?\s*$")
_CAMEL = re.compile(r"[a-z][A-Z]")
_NAME_PREFIX = re.compile(r"^(?:Mc|Mac|O'|De|Di|Da|Du|La|Le|Van|Von|St)[A-Z]")


def _is_brand_word(word: str) -> bool:
    """CamelCase inside a word is a product ("SuperWidget", "iPhone"), not McDonald or O'Brien."""
    return _CAMEL.search(word) is not None and _NAME_PREFIX.match(word) is None


class NameRecognizer(_Recognizer):
    """Names spaCy's small model misses, in any case: after a cue, as a vocative, first name + surname."""

    ENTITIES = (PiiType.PERSON,)

    def __init__(self, allow_words: frozenset[str] = frozenset(), language: str = "en") -> None:
        super().__init__(language)
        self.allow_words = allow_words

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        normalised, origin = normalise_labels(text)  # "my nmae is …" is still a cue
        for cue in _STRONG_CUE.finditer(normalised):
            position = origin[cue.end()] if origin else cue.end()
            span = self.name_at(text, position, strict=False)
            if span is None and re.search(r"(?:last|sur|family)\s*-?\s*name", cue.group(), re.IGNORECASE):
                word = re.compile(r"[A-Za-z][A-Za-z'-]+").match(text, position)  # "last name waters": any word
                if word and lexicon.looks_like_name_word(word.group()) and word.group().lower() not in (
                        lexicon.STOPWORDS | lexicon.NOT_NAME_WORDS):
                    span = word.span()
            if span:
                yield span[0], span[1], PiiType.PERSON, 0.9
        for cue in _WEAK_CUE.finditer(text):
            span = self.name_at(text, cue.end(), strict=True)
            if span is None and self._capitalised_rare_word_at(text, cue.end()):
                span = self.name_at(text, cue.end(), strict=False)  # "this is Scarlet"
            if span is None:
                # two words no list has, in any case: "i am raghib quadir and…" (one rare word could be a typo)
                pair = re.compile(r"([A-Za-z][a-z'-]+)\s+([A-Za-z][a-z'-]+)\b").match(text, cue.end())
                if pair and all(self._rare_name_word(w, 3.0) for w in pair.groups()):
                    span = pair.span()
            if span is None:
                # one such word closing the clause: "yo its raghib, the jacket…" — unless it is a slip of a word
                word = re.compile(r"([A-Za-z][a-z'-]+)(?=\s*(?:[,.!?;]|$|\s+(?:and|here)\b))").match(text, cue.end())
                if word and self._unlisted_name(word.group(1)):
                    span = word.span(1)
            if span:
                yield span[0], span[1], PiiType.PERSON, 0.8
        for match in re.finditer(r"(?:^|[,!.]\s*|\b(?:hi|hello|hey)\s+(?:there\s*)?[,!]?\s*)([A-Z][a-z'-]+)\s+from\s+"
                                 r"(?:the\s+)?[A-Z]", text):
            if self._rare_name_word(match.group(1), 4.0) or lexicon.is_first_name(match.group(1)):
                yield match.start(1), match.end(1), PiiType.PERSON, 0.75  # "Hey there, Nina from the Acme team"
        for cue in _TITLE.finditer(text):
            word = re.compile(r"[A-Za-z][A-Za-z'-]+").match(text, cue.end())
            if word and (self._rare_name_word(word.group(), 4.0) or word.group().lower() in lexicon.last_names()):
                span = self.name_at(text, cue.end(), strict=False) or word.span()
                yield span[0], span[1], PiiType.PERSON, 0.85
        for match in _HERE.finditer(text):
            words = match.group(1).split()
            single_capitalised = len(words) == 1 and words[0][0].isupper() and self._rare_name_word(words[0], 4.0)
            if single_capitalised or (all(self._surname_ok(w, capitalised=w[0].isupper()) for w in words[1:])
                                      and self.is_name_start(words[0], strict=len(words) == 1)):
                yield match.start(1), match.end(1), PiiType.PERSON, 0.8
        for cue in _VOCATIVE.finditer(text):
            span = self.name_at(text, cue.end(), strict=True, until_punctuation=True)
            if span is None:
                # a name no list has, alone before the end of the clause: "Thank you Nuru!", "thx raghib"
                word = re.compile(r"([A-Za-z][a-z'-]+)(?=\s*(?:[.!?,;)]|$))").match(text, cue.end())
                if word and (word.group(1)[0].isupper() and self._rare_name_word(word.group(1), 4.0)
                             or self._unlisted_name(word.group(1))):
                    span = word.span(1)
            if span:
                yield span[0], span[1], PiiType.PERSON, 0.8
        # "…, albert." / "…, Albert!" at the end of a clause; "Crystal Minh, I don't know…" at the start
        for match in re.finditer(r"(?:,\s*)([A-Za-z][A-Za-z'-]+)(?=\s*(?:[.!?,;]|$))", text):
            word = match.group(1)
            if self.is_name_start(word, strict=True) or (word[0].isupper() and self._rare_name_word(word, 4.0)):
                yield match.start(1), match.end(1), PiiType.PERSON, 0.75
        start = re.match(r"\s*(?:(?:hi|hello|hey)\b)?[\s,]*", text, re.IGNORECASE).end()
        span = self.name_at(text, start, strict=True)
        if span and re.match(r"\s*,", text[span[1]:]) or span and re.match(r"\s*:", text[span[1]:]) and not near_label(
                text[span[0]:span[1]]):
            yield span[0], span[1], PiiType.PERSON, 0.75
        # two rare words opening a message before a comma or full stop: "Loise Nzioka, I don't know my account ID"
        pair = re.compile(r"([A-Za-z][a-z'-]+)\s+([A-Za-z][a-z'-]+)\s*(?:[,.:;!-]|$)").match(text, start)
        if pair and all(self._rare_name_word(w) for w in pair.groups()) and pair.group(1)[0].isupper() == \
                pair.group(2)[0].isupper():
            yield pair.start(), pair.end(2), PiiType.PERSON, 0.7
        # a sentence that is only a name: "good afternoon. Onyango Beernaert. my coupon…", "crystal minh"
        for match in _NAME_SENTENCE.finditer(text):
            words = match.group(1).split()
            if self._only_name_words(words):
                yield match.start(1), match.end(1), PiiType.PERSON, 0.7
        # a known first name, capitalised, followed by a capitalised surname, anywhere
        for match in re.finditer(r"\b([A-Z][a-z'-]+)\s+([A-Z][A-Za-z'-]+)\b", text):
            first, last = match.group(1), match.group(2)
            if (lexicon.is_first_name(first) and not lexicon.is_common_word(first, 5.3)
                    and self._surname_ok(last, capitalised=True) and not self._brand_context(text, match.end())):
                yield match.start(), match.end(), PiiType.PERSON, 0.7

    def is_name_start(self, word: str, *, strict: bool) -> bool:
        """A word that can open a name; `strict`: a known first name that is not also an everyday word."""
        if not lexicon.looks_like_name_word(word) or _is_brand_word(word) or word.lower() in self.allow_words:
            return False
        if word.lower() in lexicon.STOPWORDS or word.lower() in lexicon.NOT_NAME_WORDS or label_word_for(word):
            return False
        if strict:
            return lexicon.is_first_name(word) and not lexicon.is_common_word(word, 5.0 if word[0].isupper() else 4.7)
        return lexicon.is_first_name(word) or word[0].isupper() or not lexicon.is_common_word(word, 4.3)

    def _unlisted_name(self, word: str) -> bool:
        """A lower-case word that is no English word nor a slip of one: in a name's place, a name ("raghib")."""
        return (len(word) >= 3 and self._rare_name_word(word, 2.5) and not lexicon.is_slip_of_common_word(word))

    def _only_name_words(self, words: list[str]) -> bool:
        """Two or three words that make a name on their own: each a listed name or a rare word, one rare enough."""
        def fits(word: str) -> bool:
            lowered = word.lower()
            listed = lowered in lexicon.first_names() or lowered in lexicon.last_names()
            return (lexicon.looks_like_name_word(word) and lowered not in lexicon.STOPWORDS and not _is_brand_word(word)
                    and lowered not in self.allow_words and lowered not in lexicon.NOT_NAME_WORDS
                    and label_word_for(word) is None and (listed or not lexicon.is_common_word(word, 3.5)))
        if not all(fits(w) for w in words) or len({w[0].isupper() for w in words}) > 1:
            return False
        first_ok = lexicon.is_first_name(words[0]) or not lexicon.is_common_word(words[0], 3.0)
        return first_ok and not all(lexicon.is_common_word(w, 4.5) for w in words)

    def _capitalised_rare_word_at(self, text: str, position: int) -> bool:
        """A capitalised word that is no everyday word ("Scarlet", not "Amazing" or "Tuesday") starts at `position`."""
        word = re.match(r"[A-Z][a-z'-]+\b", text[position:])
        return word is not None and self._rare_name_word(word.group(), 4.0)

    def _rare_name_word(self, word: str, threshold: float = 3.2) -> bool:
        """A word that could be a name nobody listed: letters, not an everyday word, not a label's typo."""
        return (lexicon.looks_like_name_word(word) and not _is_brand_word(word) and word.lower() not in self.allow_words
                and not lexicon.is_common_word(word, threshold) and label_word_for(word) is None
                and word.lower() not in lexicon.NOT_NAME_WORDS)

    def _surname_ok(self, word: str, *, capitalised: bool) -> bool:
        if not lexicon.looks_like_name_word(word) or _is_brand_word(word) or word.lower() in self.allow_words:
            return False
        lowered = word.lower()
        if lowered in lexicon.STOPWORDS or lowered in lexicon.PRODUCT_NOUNS or lowered in lexicon.NOT_NAME_WORDS \
                or label_word_for(word):
            return False
        if capitalised and word[0].isupper():
            return lowered in lexicon.last_names() or not lexicon.is_common_word(word, 4.6)
        return lowered in lexicon.last_names() or lexicon.is_first_name(word) or not lexicon.is_common_word(word, 4.0)

    @staticmethod
    def _brand_context(text: str, end: int) -> bool:
        following = re.match(r"\s+([A-Za-z-]+)", text[end:])
        return following is not None and following.group(1).lower() in lexicon.PRODUCT_NOUNS

    def name_at(self, text: str, position: int, *, strict: bool,
                until_punctuation: bool = False) -> tuple[int, int] | None:
        """The name (first word and up to two more) starting at `position`, or None."""
        tokens = [(m.start() + position, m.end() + position, m.group())
                  for m in _TOKEN.finditer(text[position:position + 80])]
        if not tokens or not self.is_name_start(tokens[0][2], strict=strict):
            return None
        start, end, first = tokens[0]
        if tokens[0][0] - position > 3:
            return None
        capitalised = first[0].isupper()
        for token_start, token_end, word in tokens[1:3]:
            if token_start - end > 1 or not self._surname_ok(word, capitalised=capitalised):
                break
            if capitalised and not word[0].isupper() and not text[start:end].islower():
                break
            end = token_end
        if self._brand_context(text, end):
            return None
        if until_punctuation and end < len(text) and not re.match(r"\s*(?:[.!?,;:)]|$|\s+(?:and|i|we|you|it)\b)",
                                                                   text[end:], re.IGNORECASE):
            # "thanks albert for…" is fine, "thanks mark the order…" is not a vocative: only a known name then
            if not (lexicon.is_first_name(first) and first[0].isupper()):
                return None
        return start, end


class FilteredSpacyRecognizer(SpacyRecognizer):
    """spaCy's PERSON entities, less products ("SuperWidget"), brands before a product noun ("Calvin Klein
    jeans"), allow-listed names (the company, its products) and spans of ordinary words only."""

    def __init__(self, allow_words: frozenset[str] = frozenset(), language: str = "en") -> None:
        super().__init__(supported_language=language, supported_entities=["PERSON"], ner_strength=0.85)
        self.allow_words = allow_words

    def analyze(self, text: str, entities: list[str],
                nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        kept = []
        for result in super().analyze(text, entities, nlp_artifacts):
            trimmed = self._trim(text, result.start, result.end)
            if trimmed is None:
                continue
            result.start, result.end = trimmed
            kept.append(result)
        return kept

    def _trim(self, text: str, start: int, end: int) -> tuple[int, int] | None:
        words = [(m.start() + start, m.end() + start, m.group()) for m in re.finditer(r"\S+", text[start:end])]
        # spaCy sometimes takes the greeting or a possessive in: "Thanks Albert", "Albert's"
        while words and (words[0][2].strip(",.!?:;").lower() in lexicon.STOPWORDS):
            words.pop(0)
        while words and (words[-1][2].strip(",.!?:;").lower() in lexicon.STOPWORDS):
            words.pop()
        if not words:
            return None
        plain = [w.strip(",.!?:;()\"'").removesuffix("'s") for _, _, w in words]
        if any(not lexicon.looks_like_name_word(w) for w in plain):
            return None  # digits, handles, placeholders: other recognizers' business
        if any(_is_brand_word(w) or w.lower() in self.allow_words or w.lower() in lexicon.NOT_NAME_WORDS
               or label_word_for(w) for w in plain):
            return None
        if all(lexicon.is_common_word(w, 4.5) and not lexicon.is_first_name(w) for w in plain):
            return None  # "Order Status", "Size Chart"
        if NameRecognizer._brand_context(text, words[-1][1]):
            return None
        if re.search(r"\d\s*$", text[:words[0][0]]):
            return None  # "100 Mbps", "Pixel 8"'s "8 Pro": a person does not follow a number
        if len(plain) == 1:
            word = plain[0]
            if word.isupper() and len(word) <= 4:
                return None  # "GB", "USB", "ID"
            known = word.lower() in lexicon.first_names() or word.lower() in lexicon.last_names()
            if not known and lexicon.is_common_word(word, 3.3):
                return None  # "Bluetooth", "Pixel": spaCy's guess on a capitalised word
        first_start = words[0][0]
        last_end = words[-1][1]
        while last_end > first_start and text[last_end - 1] in ",.!?:;)\"'":
            last_end -= 1
        if text[first_start:last_end].endswith("'s"):
            last_end -= 2
        return first_start, last_end


# --- answers to the turn before --------------------------------------------------------------------------------

_ANSWER_TOKEN = re.compile(r"(?<![\w@.'-])[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9](?![\w@'-])")


class AnswerRecognizer(_Recognizer):
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
            reversed_name = _SURNAME_FIRST.match(text, opener.end())
            if reversed_name and self.names.is_name_start(reversed_name.group(2), strict=False) and \
                    lexicon.looks_like_name_word(reversed_name.group(1)):
                span = reversed_name.start(), reversed_name.end(2)  # "moon, shari": surname first, as on forms
            if span is None:  # "sure, tea rissanen": an everyday first word is a name when a surname follows
                pair = re.compile(r"([A-Za-z][a-z'-]+)\s+([A-Za-z][a-z'-]+)\s*[.!]?\s*$").match(text, opener.end())
                if pair and lexicon.looks_like_name_word(pair.group(1)) and pair.group(1).lower() not in \
                        lexicon.STOPWORDS and (self.names._rare_name_word(pair.group(2), 3.0)
                                               or pair.group(2).lower() in lexicon.last_names()):
                    span = pair.start(), pair.end(2)
            if span:
                yield span[0], span[1], PiiType.PERSON, 0.85
        if PiiType.PHONE in asked:
            for match in _PHONE.finditer(text):
                if 7 <= len(_digits(match.group())) <= 15:
                    yield match.start(), match.end(), PiiType.PHONE, 0.8
        for match in _ANSWER_TOKEN.finditer(text):
            value = match.group()
            pii_type = self._type_of(value, asked)
            if pii_type is not None:
                yield match.start(), match.end(), pii_type, 0.85

    @staticmethod
    def _type_of(value: str, asked: set[PiiType]) -> PiiType | None:
        digits_only = value.isdigit()
        if digits_only and PiiType.ZIP_CODE in asked and _ZIP.fullmatch(value):
            return PiiType.ZIP_CODE
        if digits_only and PiiType.LAST_DIGITS in asked and 3 <= len(value) <= 6:
            return PiiType.LAST_DIGITS
        if _ZIP.fullmatch(value) and not digits_only and PiiType.ZIP_CODE in asked and any(c.isdigit() for c in value):
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
