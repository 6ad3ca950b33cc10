"""HouseStyle's Presidio recognizers: what support chats hold that Presidio's own recognizers miss or check worse.

Each is a Presidio `EntityRecognizer`, so the analyzer runs them beside spaCy's NER in one pass:
- `contact`: `OfflineEmailRecognizer`, Presidio's e-mail pattern, its domain checked against tldextract's bundled
  suffix list (never downloaded), plus addresses spelled out to dodge filters ("jane dot doe at gmail dot com");
  `PhoneRecognizer`, a loose pattern, then libphonenumber's rules, so prices, dates and versions stay.
- `identifiers`: `CardRecognizer`, `IbanRecognizer` (Luhn and IBAN mod-97, python-stdnum), so tracking numbers
  stay; `ConfiguredIdRecognizer`, the deployment's own order and account id patterns (HOUSESTYLE_ORDER_ID_PATTERN...).
- `labels`: `LabelledValueRecognizer`, a value a label names, after it ("Order ID: 5545781356", "username is
  cminh730") or before it ("82012 is my zipcode"), labels typed with the usual typos ("oder id", "acount number").
- `addresses`: `AddressRecognizer`, street addresses in any case ("8574 spring street, brighton, ca 82012"), PO boxes.
- `names`: `NameRecognizer`, names spaCy's small model misses: after a cue ("my name is albert sanders"), as a
  vocative ("thanks, albert"), a known first name followed by a surname ("Crystal Minh, I don't know my account ID").
- `spacy_names`: `FilteredSpacyRecognizer`, spaCy's PERSON entities without products, brands and ordinary words.
- `answers`: `AnswerRecognizer`, the value a message gives when the turn before asked for it ("May I have your order
  id?" → "5545781356"), built per message by the conversation redactor (an ad-hoc recognizer); `asked_types`.
`base` holds what they share: `HouseStyleRecognizer` and the `Find` span it yields.
"""

from collector.pii.recognizers.addresses import STREET_SUFFIXES, AddressRecognizer
from collector.pii.recognizers.answers import AnswerRecognizer, asked_types
from collector.pii.recognizers.base import Find
from collector.pii.recognizers.contact import OFFLINE_TLD_EXTRACT, OfflineEmailRecognizer, PhoneRecognizer
from collector.pii.recognizers.identifiers import CardRecognizer, ConfiguredIdRecognizer, IbanRecognizer, is_iban
from collector.pii.recognizers.labels import (
    LABEL_VOCABULARY,
    LABELS,
    LabelledValueRecognizer,
    label_index,
    label_type,
    label_word_for,
    looks_like_id,
    looks_like_username,
    near_label,
    normalise_labels,
    value_fits,
)
from collector.pii.recognizers.names import NameRecognizer
from collector.pii.recognizers.spacy_names import FilteredSpacyRecognizer

__all__ = [
    "LABELS",
    "LABEL_VOCABULARY",
    "OFFLINE_TLD_EXTRACT",
    "STREET_SUFFIXES",
    "AddressRecognizer",
    "AnswerRecognizer",
    "CardRecognizer",
    "ConfiguredIdRecognizer",
    "FilteredSpacyRecognizer",
    "Find",
    "IbanRecognizer",
    "LabelledValueRecognizer",
    "NameRecognizer",
    "OfflineEmailRecognizer",
    "PhoneRecognizer",
    "asked_types",
    "is_iban",
    "label_index",
    "label_type",
    "label_word_for",
    "looks_like_id",
    "looks_like_username",
    "near_label",
    "normalise_labels",
    "value_fits",
]
