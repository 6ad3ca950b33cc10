"""Reply time: a model trained on redacted chats writes placeholders; no placeholder may reach a customer.

`fill_placeholders` is pure: it fills each placeholder it can from what the conversation knows (its own
placeholder table, the customer's name, e-mail and phone from the platform) and rewrites the reply around the
rest: a name said in passing goes with its comma ("Thanks, <PERSON_1>!" → "Thanks!"), a value after the noun it
names goes alone ("your order <ORDER_ID_1> has shipped" → "your order has shipped"), and any other sentence
that needs the value is dropped. Malformed placeholders a model may write (`<PERSON>`, `[EMAIL]`, `<ORDER_ID_1`)
count as placeholders too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from collector.pii.entities import KnownValues, PiiType

_TYPES = "|".join(sorted((t.value for t in PiiType), key=len, reverse=True))
# well-formed <PERSON_1>, and what a model makes of it: <PERSON>, [PERSON_1], <person_1>, <PERSON_1 (no ">")
_ANY_PLACEHOLDER = re.compile(r"[<\[](?P<type>" + _TYPES + r")(?:_(?P<number>\d+))?(?:[>\]]|(?![\w>\]]))",
                              re.IGNORECASE)
_GREETING = (r"(?:hi|hello|hey|dear|thanks|thank\s+you|thank\s+you\s+so\s+much|thanks\s+so\s+much|thanks\s+again|"
             r"good\s+morning|good\s+afternoon|good\s+evening|welcome|sorry|ok|okay|great|sure|alright|of\s+course|"
             r"no\s+problem|absolutely|certainly|you're\s+welcome)")
_NOUNS = (r"(?:order(?:\s+(?:number|id|#|no\.?))?|account(?:\s+(?:number|id|#|no\.?))?|user\s*name|user\s+id|"
          r"member\s+id|e-?mail(?:\s+address)?|phone(?:\s+number)?|number|zip(?:\s*code)?|postal\s+code|"
          r"(?:shipping\s+|billing\s+)?address|confirmation(?:\s+number)?|booking(?:\s+number)?|"
          r"reservation(?:\s+number)?|ticket(?:\s+number)?|case(?:\s+number)?|reference(?:\s+number)?|card|"
          r"iban|name)")
_NOUN_SUFFIX = r"(?:\s+(?:number|id|no\.?)|\s*#)?"
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+[\"')\]]*|\n|$)")


@dataclass
class FilledReply:
    """The reply as a customer may see it, and what was done to its placeholders."""

    text: str
    filled: dict[str, str] = field(default_factory=dict)  # placeholder -> the value put in its place
    removed: list[str] = field(default_factory=list)  # placeholders rewritten away


def _known_value(pii_type: PiiType, known: KnownValues | None) -> str | None:
    if known is None:
        return None
    direct = {PiiType.PERSON: known.name, PiiType.EMAIL: known.email, PiiType.PHONE: known.phone}.get(pii_type)
    if direct:
        return direct
    others = [value for other_type, value in known.others if other_type is pii_type]
    return others[0] if len(others) == 1 else None


def fill_placeholders(reply: str, placeholders: Mapping[str, str] | None = None, known: KnownValues | None = None
                      ) -> FilledReply:
    """`reply` with every placeholder filled from `placeholders` (the conversation's table) or `known` (a
    KnownValues: the platform's name, e-mail, phone), or written out of the text; never a placeholder left."""
    placeholders = {key.upper(): value for key, value in (placeholders or {}).items()}
    result = FilledReply(text=reply)
    if not _ANY_PLACEHOLDER.search(reply):
        return result

    def value_for(match: re.Match[str]) -> str | None:
        pii_type = PiiType(match.group("type").upper())
        if match.group("number"):
            value = placeholders.get(f"<{pii_type.value}_{match.group('number')}>")
            if value:
                return value
        elif len({k for k in placeholders if k.startswith(f"<{pii_type.value}_")}) == 1:
            return next(v for k, v in placeholders.items() if k.startswith(f"<{pii_type.value}_"))
        return _known_value(pii_type, known)

    def fill(match: re.Match[str]) -> str:
        value = value_for(match)
        if value is None:
            return match.group()
        if PiiType(match.group("type").upper()) is PiiType.PERSON:
            if value.islower():
                value = value.title()  # customers type their names in lower case; a reply writes them properly
            if _is_vocative(match):
                value = value.split()[0]  # "Thanks, Crystal!" rather than "Thanks, Crystal Minh!"
        result.filled[_normal(match)] = value
        return value

    text = _ANY_PLACEHOLDER.sub(fill, reply)
    if _ANY_PLACEHOLDER.search(text):
        result.removed = [_normal(m) for m in _ANY_PLACEHOLDER.finditer(text)]
        text = _rewrite_without_placeholders(text)
    result.text = text
    return result


def _normal(match: re.Match[str]) -> str:
    number = match.group("number")
    return f"<{match.group('type').upper()}_{number}>" if number else f"<{match.group('type').upper()}>"


def _is_vocative(match: re.Match[str]) -> bool:
    before = match.string[:match.start()]
    after = match.string[match.end():]
    return (re.search(_GREETING + r"[\s,!]*$", before, re.IGNORECASE) is not None
            or re.search(r",\s*$", before) is not None and re.match(r"\s*[.!?,]|\s*$", after) is not None
            or (before.strip() == "" or re.search(r"[.!?]\s*$", before)) and re.match(r"\s*,", after) is not None)


_P = _ANY_PLACEHOLDER.pattern


def _rewrite_without_placeholders(text: str) -> str:
    flags = re.IGNORECASE
    person = r"[<\[]PERSON(?:_\d+)?(?:[>\]]|(?![\w>\]]))"
    # a name as a greeting's object: "Hi <PERSON_1>," -> "Hi,"; "Thanks, <PERSON_1>!" -> "Thanks!"
    text = re.sub(r"\b(" + _GREETING + r")[\s,]*" + person + r"(?:\s+" + person + r")*", r"\1", text, flags=flags)
    # a name set off by commas: "I understand, <PERSON_1>." -> "I understand."; "<PERSON_1>, I have…" -> "I have…"
    text = re.sub(r",\s*" + person + r"(?=\s*(?:[.!?,;]|$))", "", text, flags=flags)
    text = re.sub(r"(^|[.!?]\s+|\n)" + person + r"\s*,\s*(\w)", lambda m: m.group(1) + m.group(2).upper(), text,
                  flags=flags)
    # a value in brackets, or after the noun that names it: "your order (<ORDER_ID_1>)", "your order <ORDER_ID_1>"
    text = re.sub(r"\s*\(\s*" + _P + r"\s*\)", "", text, flags=flags)
    text = re.sub(r"\b((?:your|the|this|that|my)\s+(?:\w+\s+)?" + _NOUNS + r")" + _NOUN_SUFFIX + r"\s*[:#]?\s*" + _P,
                  lambda m: _without_number_word(m.group(1)), text, flags=flags)
    # anything else that needs the value: drop the sentence
    if _ANY_PLACEHOLDER.search(text):
        kept = [s for s in _SENTENCE.findall(text) if s and not _ANY_PLACEHOLDER.search(s)]
        text = "".join(kept)
    return _tidy(text)


def _without_number_word(noun_phrase: str) -> str:
    return re.sub(r"\s+(?:number|id|no\.?)$|\s*#$", "", noun_phrase, flags=re.IGNORECASE)


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+([.!?,;:])", r"\1", text)
    text = re.sub(r",\s*([.!?])", r"\1", text)
    text = re.sub(r"([.!?])\s*,", r"\1", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    text = re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text.strip())
    return text
