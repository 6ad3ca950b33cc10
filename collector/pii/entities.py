"""The kinds of personal data HouseStyle redacts, a found piece of it (a span of one message), and what the platform
already knows about a customer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PiiType(StrEnum):
    """A kind of personal data; the value is also the placeholder's stem (`<ORDER_ID_1>`)."""

    PERSON = "PERSON"
    EMAIL = "EMAIL"
    PHONE = "PHONE"
    ADDRESS = "ADDRESS"  # a street address, with the city, state and zip that follow it
    ZIP_CODE = "ZIP_CODE"  # a zip or postal code on its own
    ORDER_ID = "ORDER_ID"
    ACCOUNT_ID = "ACCOUNT_ID"  # account, user, member and customer ids
    USERNAME = "USERNAME"
    REFERENCE = "REFERENCE"  # confirmation, booking, reservation, ticket and case numbers
    LAST_DIGITS = "LAST_DIGITS"  # "the last four digits of my card are 4242"
    CARD = "CARD"
    IBAN = "IBAN"


# when two finds of different types cover the same characters, the earlier type here wins: a value a customer
# labelled ("order id: 5545781356") is more certain than a shape ("that looks like a phone number")
PRIORITY = {pii_type: rank for rank, pii_type in enumerate([
    PiiType.EMAIL, PiiType.IBAN, PiiType.CARD, PiiType.ORDER_ID, PiiType.ACCOUNT_ID, PiiType.USERNAME,
    PiiType.REFERENCE, PiiType.LAST_DIGITS, PiiType.ADDRESS, PiiType.ZIP_CODE, PiiType.PHONE, PiiType.PERSON,
])}


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """A piece of personal data in one text: characters [start, end) of type `type`, found with `score` (0..1)."""

    start: int
    end: int
    type: PiiType
    score: float = 1.0
    why: str = ""  # which recognizer or rule found it, for the bench's error listing

    def overlaps(self, other: PiiSpan) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class KnownValues:
    """What the platform knows about the customer (Chatwoot's contact, a signed-in widget user): redacted exactly
    wherever it appears, a name's first or last name alone and any case included."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    others: tuple[tuple[PiiType, str], ...] = ()  # e.g. ((PiiType.ACCOUNT_ID, "4VEJCYVP8U"),)

    @classmethod
    def from_stored(cls, stored: dict | None) -> KnownValues | None:
        """A conversation's `known_values` column (name, email, phone) as the redactor and the reply guard take it."""
        if not stored:
            return None
        return cls(name=stored.get("name"), email=stored.get("email"), phone=stored.get("phone"))

    def values(self) -> list[tuple[PiiType, str]]:
        found = [(PiiType.PERSON, self.name), (PiiType.EMAIL, self.email), (PiiType.PHONE, self.phone)]
        return [(t, v.strip()) for t, v in [*found, *self.others] if v and v.strip()]


def resolve_overlaps(spans: list[PiiSpan]) -> list[PiiSpan]:
    """No two spans overlap: the longer one wins, then the more certain, then the type earlier in PRIORITY."""
    kept: list[PiiSpan] = []
    for span in sorted(spans, key=lambda s: (s.start - s.end, -round(s.score, 2), PRIORITY[s.type], s.start)):
        if not any(span.overlaps(other) for other in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)
