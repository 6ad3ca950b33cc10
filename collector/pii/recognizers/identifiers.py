"""Numbers known by their own shape and check: payment cards (Luhn), IBANs (mod-97), the deployment's id patterns."""

from __future__ import annotations

import re
from collections.abc import Iterator

from presidio_analyzer.nlp_engine import NlpArtifacts
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.exceptions import ValidationError

from collector.pii.entities import PiiType
from collector.pii.recognizers.base import Find, HouseStyleRecognizer, digits_of

_CARD = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){12,18}(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,30}\b", re.IGNORECASE)


class CardRecognizer(HouseStyleRecognizer):
    """Payment card numbers: 13-19 digits, spaced or not, that pass Luhn."""

    ENTITIES = (PiiType.CARD,)

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        for match in _CARD.finditer(text):
            digits = digits_of(match.group())
            if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
                yield match.start(), match.end(), PiiType.CARD, 0.95


def is_iban(text: str) -> bool:
    """Country code, the country's length and the mod-97 check (python-stdnum)."""
    try:
        stdnum_iban.validate(re.sub(r"[\s-]", "", text), check_country=False)
    except ValidationError:
        return False
    return True


class IbanRecognizer(HouseStyleRecognizer):
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


class ConfiguredIdRecognizer(HouseStyleRecognizer):
    """The deployment's own id formats (HOUSESTYLE_ORDER_ID_PATTERN, HOUSESTYLE_ACCOUNT_ID_PATTERN), any case."""

    ENTITIES = (PiiType.ORDER_ID, PiiType.ACCOUNT_ID)

    def __init__(self, patterns: dict[PiiType, re.Pattern[str]], language: str = "en") -> None:
        super().__init__(language)
        self.patterns = patterns

    def find(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterator[Find]:
        for pii_type, pattern in self.patterns.items():
            for match in pattern.finditer(text):
                yield match.start(), match.end(), pii_type, 0.95

