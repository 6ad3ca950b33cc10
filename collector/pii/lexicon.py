"""Word lists the name and label rules need: first names, common English words, product nouns, label phrases.

First names come from Faker's person providers (MIT; the US, UK, Irish, NZ and Indian lists in full, other
locales' romanised names only where they are not also common English words), so "thanks, albert" is a name and
"thanks, floor" is not. How common a word is comes from `wordfreq` (Zipf scale: 7 is "the", 3 is rare).
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache

from wordfreq import top_n_list, zipf_frequency

_ENGLISH_LOCALES = ("en_US", "en_GB", "en_IE", "en_NZ", "en_IN")
_OTHER_LOCALES = (
    "es_ES", "es_MX", "fr_FR", "de_DE", "it_IT", "pt_BR", "nl_NL", "pl_PL", "tr_TR", "vi_VN", "ja_JP", "zh_CN",
    "id_ID", "sw", "yo_NG", "ro_RO", "cs_CZ", "sv_SE", "da_DK", "no_NO", "fi_FI", "hu_HU", "zu_ZA",
)
_NAME_ATTRIBUTES = ("first_names", "first_names_male", "first_names_female", "first_romanized_names",
                    "first_romanized_names_male", "first_romanized_names_female")
_LAST_ATTRIBUTES = ("last_names", "last_romanized_names")

# function words and chat words that are never a name, whatever a name list says
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her here
hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off
on once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves yes yeah yep nope ok okay sure thanks thank
thx ty hi hello hey dear bye goodbye please pls plz sir madam maam mam guys team everyone all there again anyway
anyways much lot so very really great good fine perfect awesome cool alright right well oh ah um hmm lol sorry
""".split())

# words of labels and support talk that spaCy's small model sometimes calls a person ("zip code", "Order ID")
NOT_NAME_WORDS = frozenset("""
zip zipcode code postal postcode order orders account acct username user login password email e-mail mail phone
number id ids address street avenue refund return exchange shipping delivery tracking package parcel invoice receipt
card visa mastercard amex paypal promo coupon discount membership member customer support agent chat size color
""".split())

# words after a name that make it a brand, not a person: "Calvin Klein jeans", "Tommy Hilfiger shirt"
PRODUCT_NOUNS = frozenset("""
jeans jean shirt shirts tshirt t-shirt tee tees top tops blouse dress dresses skirt skirts jacket jackets coat coats
hoodie hoodies sweater sweaters sweatshirt cardigan pants trousers shorts leggings suit suits boots boot shoes shoe
sneakers sandals heels loafers bag bags handbag purse wallet belt belts watch watches sunglasses hat hats cap
scarf socks underwear bra swimsuit collection brand store line perfume cologne fragrance polo polos vest
""".split())


def _provider_names(locale: str, attributes: tuple[str, ...]) -> set[str]:
    try:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    except ImportError:  # a Faker without that locale: the others still cover most names
        return set()
    names: set[str] = set()
    for attribute in attributes:
        names.update(getattr(provider, attribute, None) or ())
    return {name.lower() for name in names if name.isascii() and name.isalpha() and len(name) >= 2}


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Lower-case first names; a foreign name that is also an English word ("floor", "server") is left out."""
    names: set[str] = set()
    for locale in _ENGLISH_LOCALES:
        names |= _provider_names(locale, _NAME_ATTRIBUTES)
    for locale in _OTHER_LOCALES:
        names |= {name for name in _provider_names(locale, _NAME_ATTRIBUTES) if zipf_frequency(name, "en") < 3.5}
    return frozenset(names - STOPWORDS)


@lru_cache(maxsize=1)
def last_names() -> frozenset[str]:
    """Lower-case family names from the same lists."""
    names: set[str] = set()
    for locale in _ENGLISH_LOCALES + _OTHER_LOCALES:
        names |= _provider_names(locale, _LAST_ATTRIBUTES)
    return frozenset(names - STOPWORDS)


@lru_cache(maxsize=65536)
def zipf(word: str) -> float:
    return zipf_frequency(word, "en")


def is_common_word(word: str, threshold: float = 5.0) -> bool:
    """A function word, or an English word as frequent as "mark" or "june" (Zipf ≥ `threshold`)."""
    lowered = word.lower()
    return lowered in STOPWORDS or zipf(lowered) >= threshold


@lru_cache(maxsize=1)
def _common_words() -> frozenset[str]:
    return frozenset(w for w in top_n_list("en", 40000) if w.isalpha() and len(w) >= 3)


@lru_cache(maxsize=65536)
def is_slip_of_common_word(word: str) -> bool:
    """One letter dropped, added, changed or swapped away from an everyday word ("dissapointed", "recieved")."""
    lowered = word.lower()
    common = _common_words()
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in range(len(lowered) + 1):
        if i < len(lowered) and lowered[:i] + lowered[i + 1:] in common:
            return True
        if i < len(lowered) - 1 and lowered[:i] + lowered[i + 1] + lowered[i] + lowered[i + 2:] in common:
            return True
        for ch in letters:
            if lowered[:i] + ch + lowered[i:] in common:
                return True
            if i < len(lowered) and lowered[:i] + ch + lowered[i + 1:] in common and ch != lowered[i]:
                return True
    return False


def is_first_name(word: str) -> bool:
    return word.lower() in first_names()


_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z]")


def looks_like_name_word(word: str) -> bool:
    """Letters only (an apostrophe or hyphen inside is fine: O'Brien, Smith-Jones), at least two of them."""
    return len(word) >= 2 and _WORD.fullmatch(word) is not None
