"""Names spaCy's small model misses: after a cue, as a vocative, a known first name followed by a surname."""

from __future__ import annotations

import re
from collections.abc import Iterator

from presidio_analyzer.nlp_engine import NlpArtifacts

from collector.pii import lexicon
from collector.pii.entities import PiiType
from collector.pii.recognizers.base import Find, HouseStyleRecognizer
from collector.pii.recognizers.labels import label_word_for, near_label, normalise_labels

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
# "moon, shari": surname, comma, first name, as forms have it
SURNAME_FIRST = re.compile(r"([A-Za-z][A-Za-z'-]+),\s*([A-Za-z][A-Za-z'-]+)\s*[.!]?\s*$")
_CAMEL = re.compile(r"[a-z][A-Z]")
_NAME_PREFIX = re.compile(r"^(?:Mc|Mac|O'|De|Di|Da|Du|La|Le|Van|Von|St)[A-Z]")


def is_brand_word(word: str) -> bool:
    """CamelCase inside a word is a product ("SuperWidget", "iPhone"), not McDonald or O'Brien."""
    return _CAMEL.search(word) is not None and _NAME_PREFIX.match(word) is None


class NameRecognizer(HouseStyleRecognizer):
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
                if pair and all(self.rare_name_word(w, 3.0) for w in pair.groups()):
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
            if self.rare_name_word(match.group(1), 4.0) or lexicon.is_first_name(match.group(1)):
                yield match.start(1), match.end(1), PiiType.PERSON, 0.75  # "Hey there, Nina from the Acme team"
        for cue in _TITLE.finditer(text):
            word = re.compile(r"[A-Za-z][A-Za-z'-]+").match(text, cue.end())
            if word and (self.rare_name_word(word.group(), 4.0) or word.group().lower() in lexicon.last_names()):
                span = self.name_at(text, cue.end(), strict=False) or word.span()
                yield span[0], span[1], PiiType.PERSON, 0.85
        for match in _HERE.finditer(text):
            words = match.group(1).split()
            single_capitalised = len(words) == 1 and words[0][0].isupper() and self.rare_name_word(words[0], 4.0)
            if single_capitalised or (all(self._surname_ok(w, capitalised=w[0].isupper()) for w in words[1:])
                                      and self.is_name_start(words[0], strict=len(words) == 1)):
                yield match.start(1), match.end(1), PiiType.PERSON, 0.8
        for cue in _VOCATIVE.finditer(text):
            span = self.name_at(text, cue.end(), strict=True, until_punctuation=True)
            if span is None:
                # a name no list has, alone before the end of the clause: "Thank you Nuru!", "thx raghib"
                word = re.compile(r"([A-Za-z][a-z'-]+)(?=\s*(?:[.!?,;)]|$))").match(text, cue.end())
                if word and (word.group(1)[0].isupper() and self.rare_name_word(word.group(1), 4.0)
                             or self._unlisted_name(word.group(1))):
                    span = word.span(1)
            if span:
                yield span[0], span[1], PiiType.PERSON, 0.8
        # "…, albert." / "…, Albert!" at the end of a clause; "Crystal Minh, I don't know…" at the start
        for match in re.finditer(r"(?:,\s*)([A-Za-z][A-Za-z'-]+)(?=\s*(?:[.!?,;]|$))", text):
            word = match.group(1)
            if self.is_name_start(word, strict=True) or (word[0].isupper() and self.rare_name_word(word, 4.0)):
                yield match.start(1), match.end(1), PiiType.PERSON, 0.75
        start = re.match(r"\s*(?:(?:hi|hello|hey)\b)?[\s,]*", text, re.IGNORECASE).end()
        span = self.name_at(text, start, strict=True)
        if span and re.match(r"\s*,", text[span[1]:]) or span and re.match(r"\s*:", text[span[1]:]) and not near_label(
                text[span[0]:span[1]]):
            yield span[0], span[1], PiiType.PERSON, 0.75
        # two rare words opening a message before a comma or full stop: "Loise Nzioka, I don't know my account ID"
        pair = re.compile(r"([A-Za-z][a-z'-]+)\s+([A-Za-z][a-z'-]+)\s*(?:[,.:;!-]|$)").match(text, start)
        if pair and all(self.rare_name_word(w) for w in pair.groups()) and pair.group(1)[0].isupper() == \
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
                    and self._surname_ok(last, capitalised=True) and not self.product_noun_follows(text, match.end())):
                yield match.start(), match.end(), PiiType.PERSON, 0.7

    def is_name_start(self, word: str, *, strict: bool) -> bool:
        """A word that can open a name; `strict`: a known first name that is not also an everyday word."""
        if not lexicon.looks_like_name_word(word) or is_brand_word(word) or word.lower() in self.allow_words:
            return False
        if word.lower() in lexicon.STOPWORDS or word.lower() in lexicon.NOT_NAME_WORDS or label_word_for(word):
            return False
        if strict:
            return lexicon.is_first_name(word) and not lexicon.is_common_word(word, 5.0 if word[0].isupper() else 4.7)
        return lexicon.is_first_name(word) or word[0].isupper() or not lexicon.is_common_word(word, 4.3)

    def _unlisted_name(self, word: str) -> bool:
        """A lower-case word that is no English word nor a slip of one: in a name's place, a name ("raghib")."""
        return (len(word) >= 3 and self.rare_name_word(word, 2.5) and not lexicon.is_slip_of_common_word(word))

    def _only_name_words(self, words: list[str]) -> bool:
        """Two or three words that make a name on their own: each a listed name or a rare word, one rare enough."""
        def fits(word: str) -> bool:
            lowered = word.lower()
            listed = lowered in lexicon.first_names() or lowered in lexicon.last_names()
            return (lexicon.looks_like_name_word(word) and lowered not in lexicon.STOPWORDS and not is_brand_word(word)
                    and lowered not in self.allow_words and lowered not in lexicon.NOT_NAME_WORDS
                    and label_word_for(word) is None and (listed or not lexicon.is_common_word(word, 3.5)))
        if not all(fits(w) for w in words) or len({w[0].isupper() for w in words}) > 1:
            return False
        first_ok = lexicon.is_first_name(words[0]) or not lexicon.is_common_word(words[0], 3.0)
        return first_ok and not all(lexicon.is_common_word(w, 4.5) for w in words)

    def _capitalised_rare_word_at(self, text: str, position: int) -> bool:
        """A capitalised word that is no everyday word ("Scarlet", not "Amazing" or "Tuesday") starts at `position`."""
        word = re.match(r"[A-Z][a-z'-]+\b", text[position:])
        return word is not None and self.rare_name_word(word.group(), 4.0)

    def rare_name_word(self, word: str, threshold: float = 3.2) -> bool:
        """A word that could be a name nobody listed: letters, not an everyday word, not a label's typo."""
        return (lexicon.looks_like_name_word(word) and not is_brand_word(word) and word.lower() not in self.allow_words
                and not lexicon.is_common_word(word, threshold) and label_word_for(word) is None
                and word.lower() not in lexicon.NOT_NAME_WORDS)

    def _surname_ok(self, word: str, *, capitalised: bool) -> bool:
        if not lexicon.looks_like_name_word(word) or is_brand_word(word) or word.lower() in self.allow_words:
            return False
        lowered = word.lower()
        if lowered in lexicon.STOPWORDS or lowered in lexicon.PRODUCT_NOUNS or lowered in lexicon.NOT_NAME_WORDS \
                or label_word_for(word):
            return False
        if capitalised and word[0].isupper():
            return lowered in lexicon.last_names() or not lexicon.is_common_word(word, 4.6)
        return lowered in lexicon.last_names() or lexicon.is_first_name(word) or not lexicon.is_common_word(word, 4.0)

    @staticmethod
    def product_noun_follows(text: str, end: int) -> bool:
        """A product noun follows `end` ("Calvin Klein jeans"): the words before it are a brand, not a person."""
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
        if self.product_noun_follows(text, end):
            return None
        if until_punctuation and end < len(text) and not re.match(r"\s*(?:[.!?,;:)]|$|\s+(?:and|i|we|you|it)\b)",
                                                                   text[end:], re.IGNORECASE):
            # "thanks albert for…" is fine, "thanks mark the order…" is not a vocative: only a known name then
            if not (lexicon.is_first_name(first) and first[0].isupper()):
                return None
        return start, end

