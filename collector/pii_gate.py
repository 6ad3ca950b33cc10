"""Which PII detectors a message can possibly need, from one Hyperscan pass over it (plain `re` where it is missing).

The detectors in `collector.redact` cost tens of microseconds per message in Python's `re`; most messages need
none or one of them. A gate is a loose pattern that must match wherever its detector could find something (false
alarms are fine, misses are not); Hyperscan checks all gates at once in about a microsecond.
"""

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
