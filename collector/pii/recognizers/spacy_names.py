"""spaCy's PERSON entities, less products, brands, allow-listed names and spans of ordinary words."""

from __future__ import annotations

import re

from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from collector.pii import lexicon
from collector.pii.recognizers.labels import label_word_for
from collector.pii.recognizers.names import NameRecognizer, is_brand_word


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
        if any(is_brand_word(w) or w.lower() in self.allow_words or w.lower() in lexicon.NOT_NAME_WORDS
               or label_word_for(w) for w in plain):
            return None
        if all(lexicon.is_common_word(w, 4.5) and not lexicon.is_first_name(w) for w in plain):
            return None  # "Order Status", "Size Chart"
        if NameRecognizer.product_noun_follows(text, words[-1][1]):
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

