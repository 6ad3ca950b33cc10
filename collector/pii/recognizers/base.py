"""The base of HouseStyle's Presidio recognizers: a `find` that yields (start, end, type, score) spans."""

from __future__ import annotations

from collections.abc import Iterable

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from collector.pii.entities import PiiType

Find = tuple[int, int, PiiType, float]


class HouseStyleRecognizer(EntityRecognizer):
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


def digits_of(text: str) -> str:
    """The digits of `text`, in order: how long a phone, card or id number really is."""
    return "".join(ch for ch in text if ch.isdigit())
