"""Street addresses in any case ("8574 spring street, brighton, ca 82012"), European street names, PO boxes."""

from __future__ import annotations

import re
from collections.abc import Iterator

from presidio_analyzer.nlp_engine import NlpArtifacts

from collector.pii.entities import PiiType
from collector.pii.recognizers.base import Find, HouseStyleRecognizer

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


class AddressRecognizer(HouseStyleRecognizer):
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

