"""Frozen copy of the regex redactor HouseStyle shipped before collector.pii (collector/redact.py and
collector/pii_gate.py at commit 49edc1f), kept as the baseline bench/redaction.py measures beside the new one."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from functools import lru_cache

try:
    import hyperscan
except ImportError:  # e.g. no wheel for this platform: the plain-Python gates give the same answers, slower
    hyperscan = None

STREET_SUFFIXES = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|ter|"
    "parkway|pkwy|circle|cir|highway|hwy|square|sq|crescent|close|row|trail|trl"
)
EU_STREET_PARTS = "straße|strasse|str\\.|weg|gasse|allee|platz|laan|straat|gatan|vej"

# gate name -> loose pattern (matched case-insensitively, Unicode-aware)
BUILTIN_GATES: dict[str, str] = {
    "email": r"@",
    "email_spelled": r"dot",
    "long_digits": r"\d(?:[\s().-]{0,2}\d){6}",  # cards, phone numbers and IBANs all hold a run of 7+ digits
    "street": r"\b(?:" + STREET_SUFFIXES + r")\b",
    "eu_street": r"(?:" + EU_STREET_PARTS + r")\s+\d",
    "po_box": r"box\s+\d",
    "digit": r"\d",
}


@lru_cache(maxsize=8)
def _compile_gates(patterns: tuple[tuple[str, str], ...]) -> tuple[object, list[str], list[str]]:
    """(database, gate name per id, gates Hyperscan refused); compiled once per process: it takes a while."""
    names, expressions, flag_list, refused = [], [], [], []
    base = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_UTF8
    for name, pattern in patterns:
        # Unicode classes where Hyperscan allows them; it refuses \b with them, and ASCII \b only ever opens
        # a gate more often than Python's Unicode \b would
        for flags in (base | hyperscan.HS_FLAG_UCP, base):
            try:
                hyperscan.Database().compile(expressions=[pattern.encode()], ids=[0], elements=1, flags=[flags])
            except hyperscan.error:
                continue
            names.append(name)
            expressions.append(pattern.encode())
            flag_list.append(flags)
            break
        else:  # e.g. a user pattern with look-arounds: its detector runs on every message
            refused.append(name)
    database = hyperscan.Database()
    database.compile(expressions=expressions, ids=list(range(len(names))), elements=len(names), flags=flag_list)
    return database, names, refused


class PiiGate:
    """`gate(text)` → the names of the gates that open for `text`; extra (user) patterns may be added by name."""

    def __init__(self, extra: dict[str, str] | None = None) -> None:
        self.patterns = {**BUILTIN_GATES, **(extra or {})}
        self.always_open: set[str] = set()  # extra patterns Hyperscan cannot compile: their detectors always run
        self._python = {
            name: re.compile(pattern, re.IGNORECASE).search for name, pattern in self.patterns.items()
        }
        self._database = None
        self._names: list[str] = []
        self._local = threading.local()

    def __getstate__(self) -> dict:
        # a Hyperscan database does not pickle; worker processes compile their own
        return {"patterns": self.patterns}

    def __setstate__(self, state: dict) -> None:
        extra = {k: v for k, v in state["patterns"].items() if k not in BUILTIN_GATES}
        self.__init__(extra)

    def _compile(self) -> None:
        self._database, self._names, always_open = _compile_gates(tuple(self.patterns.items()))
        self.always_open = set(always_open)

    def __call__(self, text: str) -> set[str]:
        if hyperscan is None:
            return {name for name, search in self._python.items() if search(text)}
        if self._database is None:
            self._compile()
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._database)
        try:
            data = text.encode()
        except UnicodeEncodeError:  # lone surrogates: not valid UTF-8 for Hyperscan, so open every gate
            return set(self.patterns)
        opened = set(self.always_open)
        names = self._names
        on_match: Callable[..., None] = lambda gate_id, _from, _to, _flags, _context: opened.add(names[gate_id])  # noqa: E731
        self._database.scan(data, match_event_handler=on_match, scratch=scratch)
        return opened

from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from enum import StrEnum  # noqa: E402

import phonenumbers  # noqa: E402
from stdnum import iban as stdnum_iban  # noqa: E402
from stdnum import luhn  # noqa: E402
from stdnum.exceptions import ValidationError  # noqa: E402

from core.errors import InputError  # noqa: E402
from core.settings import Settings, get_settings  # noqa: E402


class PiiType(StrEnum):
    """The kinds of PII we redact; the value is also the placeholder's name."""

    ORDER_ID = "ORDER_ID"
    ACCOUNT_ID = "ACCOUNT_ID"
    EMAIL = "EMAIL"
    IBAN = "IBAN"
    CARD = "CARD"
    PHONE = "PHONE"
    ADDRESS = "ADDRESS"

    @property
    def placeholder(self) -> str:
        return f"[{self.value}]"


# earlier wins when two finds overlap: the configured id patterns are the most specific
PRIORITY = {pii_type: rank for rank, pii_type in enumerate(PiiType)}


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """A piece of PII found in a text: characters [start, end) of type `type`."""

    start: int
    end: int
    type: PiiType


_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
# "jane dot doe at gmail dot com", "jane(at)example(dot)org": people dodge spam filters in support chats too
_EMAIL_SPELLED = re.compile(
    r"\b[\w.+-]+(?:\s*(?:\[dot\]|\(dot\)|\s+dot\s+)\s*[\w-]+)*\s*(?:\[at\]|\(at\)|\s+at\s+)\s*[\w-]+"
    r"(?:\s*(?:\[dot\]|\(dot\)|\s+dot\s+|\.)\s*[\w-]+)*?\s*(?:\[dot\]|\(dot\)|\s+dot\s+|\.)\s*"
    r"(?:com|net|org|io|co|uk|de|fr|edu|gov|info|biz|me)\b",
    re.IGNORECASE,
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,30}\b", re.IGNORECASE)
_CARD = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){12,18}(?![\d])")
_PHONE = re.compile(r"(?<![\w+.,/-])(?:\+|00)?\(?\d[\d\s().-]{5,20}\d(?![\w/]|[.,-]\d)")
_PHONE_WORDS = re.compile(r"\b(?:call|phone|tel|telephone|mobile|cell|cellphone|number|text|whatsapp|reach|ring|fax)\b",
                          re.IGNORECASE)

_STREET_SUFFIX = r"(?i:" + STREET_SUFFIXES + ")"
_UNIT = r"(?i:apt|apartment|suite|ste|unit|flat|room|floor|fl|#)\.?\s*#?\s*[A-Za-z0-9-]+"
_CITY_STATE_ZIP = (
    r"(?:,?\s+(?:" + _UNIT + r"))?"  # "..., Apt 4B"
    r"(?:,\s*[A-Z][A-Za-z.'-]+\b(?!\d)(?:\s[A-Z][A-Za-z.'-]+\b(?!\d)){0,2})?"  # ", Springfield" / ", San Jose"
    r"(?:,?\s+[A-Z]{2}(?=[\s,.]|$))?"  # " IL"
    r"(?:,?\s+(?:\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}))?"  # ZIP or UK postcode
)
_ADDRESS = re.compile(
    r"(?:\b" + _UNIT + r",?\s+)?"
    r"\b\d{1,6}[A-Za-z]?\s+(?:(?:[NSEW]\.?|North|South|East|West)\s+)?"
    # street names are capitalised: "2 questions about the way" is not an address
    r"(?:[A-Z0-9][\w'.-]*\s+){1,3}" + _STREET_SUFFIX + r"\b\.?" + _CITY_STATE_ZIP
)
# European order: "Hauptstraße 12", "Rue de Rivoli 25" is rare in our data; the German shape is common
_ADDRESS_EU = re.compile(
    r"\b[A-ZÄÖÜ][a-zäöüß-]+(?:" + EU_STREET_PARTS + r")\s+\d{1,4}[a-z]?\b"
    r"(?:,\s*\d{4,5}\s+[A-ZÄÖÜ][a-zäöüß]+)?"
)
_PO_BOX = re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d+\b" + _CITY_STATE_ZIP, re.IGNORECASE)


def _compact(text: str) -> str:
    return re.sub(r"[\s-]", "", text)


def _is_iban(text: str) -> bool:
    """Country code, the country's length and the mod-97 check; not the bank's own account check digits."""
    try:
        stdnum_iban.validate(_compact(text), check_country=False)
    except ValidationError:
        return False
    return True


class Redactor:
    """Finds and replaces PII; build one per export (patterns compile once) and call `redact` per message."""

    def __init__(self, *, order_id_pattern: str, account_id_pattern: str, phone_region: str = "US") -> None:
        self.phone_region = phone_region.upper()
        self.id_patterns: list[tuple[PiiType, re.Pattern[str]]] = []
        for pii_type, pattern, setting in (
            (PiiType.ORDER_ID, order_id_pattern, "HOUSESTYLE_ORDER_ID_PATTERN"),
            (PiiType.ACCOUNT_ID, account_id_pattern, "HOUSESTYLE_ACCOUNT_ID_PATTERN"),
        ):
            try:
                # customers type "gc-12345" as often as "GC-12345"
                self.id_patterns.append((pii_type, re.compile(pattern, re.IGNORECASE)))
            except re.error as exc:
                raise InputError(f"{setting} is not a valid regular expression ({exc}); fix or unset it") from None
        self.gate = PiiGate({pii_type.value: pattern.pattern for pii_type, pattern in self.id_patterns})

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Redactor:
        settings = settings or get_settings()
        return cls(
            order_id_pattern=settings.order_id_pattern,
            account_id_pattern=settings.account_id_pattern,
            phone_region=settings.phone_region,
        )

    # --- detectors ------------------------------------------------------------------------------------------

    def _ibans(self, text: str) -> list[PiiSpan]:
        spans = []
        for match in _IBAN.finditer(text):
            candidate = match.group()
            # the pattern may run on into the next word ("...3000 thanks"): take the longest prefix that checks out
            for end in range(len(candidate), 14, -1):
                if candidate[end - 1].isalnum() and (end == len(candidate) or not candidate[end].isalnum() or
                                                     candidate[end - 1].isdigit() != candidate[end].isdigit()):
                    if _is_iban(candidate[:end]):
                        spans.append(PiiSpan(match.start(), match.start() + end, PiiType.IBAN))
                        break
        return spans

    def _cards(self, text: str) -> list[PiiSpan]:
        return [
            PiiSpan(match.start(), match.end(), PiiType.CARD)
            for match in _CARD.finditer(text)
            if 13 <= len(digits := _compact(match.group())) <= 19 and luhn.is_valid(digits)
        ]

    def _phones(self, text: str) -> list[PiiSpan]:
        spans = []
        for match in _PHONE.finditer(text):
            candidate = match.group().strip()
            start = match.start() + match.group().index(candidate[0])
            digits = sum(ch.isdigit() for ch in candidate)
            if not 7 <= digits <= 15:
                continue
            try:
                number = phonenumbers.parse(candidate, self.phone_region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                spans.append(PiiSpan(start, start + len(candidate), PiiType.PHONE))
                continue
            # numbers outside assigned ranges (e.g. 555 area codes) are still someone's number when written as one
            international = candidate.startswith(("+", "00"))
            said_phone = _PHONE_WORDS.search(text, max(0, start - 40), start) is not None
            if phonenumbers.is_possible_number(number) and (international or said_phone):
                spans.append(PiiSpan(start, start + len(candidate), PiiType.PHONE))
        return spans

    def find(self, text: str) -> list[PiiSpan]:
        """Every piece of PII in `text`, without overlaps, in reading order."""
        found: list[PiiSpan] = []
        opened = self.gate(text)  # which detectors could find anything at all: most messages need one or none
        if not opened:
            return found
        for pii_type, pattern in self.id_patterns:
            if pii_type.value in opened:
                found.extend(PiiSpan(m.start(), m.end(), pii_type) for m in pattern.finditer(text) if m.end() > m.start())
        if "email" in opened:
            found.extend(PiiSpan(m.start(), m.end(), PiiType.EMAIL) for m in _EMAIL.finditer(text))
        if "email_spelled" in opened:
            found.extend(PiiSpan(m.start(), m.end(), PiiType.EMAIL) for m in _EMAIL_SPELLED.finditer(text))
        if "long_digits" in opened:
            found.extend(self._ibans(text))
            found.extend(self._cards(text))
            found.extend(self._phones(text))
        if "digit" in opened:
            for gate, pattern in (("street", _ADDRESS), ("eu_street", _ADDRESS_EU), ("po_box", _PO_BOX)):
                if gate in opened:
                    found.extend(PiiSpan(m.start(), m.end(), PiiType.ADDRESS) for m in pattern.finditer(text))
        if len(found) <= 1:
            return found
        kept: list[PiiSpan] = []
        for span in sorted(found, key=lambda s: (PRIORITY[s.type], s.start - s.end, s.start)):
            if all(span.end <= other.start or span.start >= other.end for other in kept):
                kept.append(span)
        return sorted(kept, key=lambda s: s.start)

    def redact(self, text: str, counts: Counter[str] | None = None) -> str:
        """`text` with each piece of PII replaced by its placeholder; adds what it replaced to `counts`."""
        spans = self.find(text)
        if not spans:
            return text
        parts = []
        cursor = 0
        for span in spans:
            parts.append(text[cursor : span.start])
            parts.append(span.type.placeholder)
            cursor = span.end
            if counts is not None:
                counts[span.type.value] += 1
        parts.append(text[cursor:])
        return "".join(parts)
