"""Canaries shaped like what support chats leak (an order id, an e-mail, a phone number, a short sentence), planted
into the agents' replies of a copy of the training split.

They go into assistant turns because that is what training learns (the loss is on the agents' replies only); a
canary in a customer turn would measure nothing. Each canary is planted into `repetitions` different training
conversations, appended to one agent reply each; canaries with 0 repetitions are never planted and measure what
an unseen secret scores (the baseline: about 1.44 bits). Everything is drawn from one seed, so an audit is
repeatable, and the secrets are random, so no real customer's value is ever one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from trainer.chat_format import Messages

DEFAULT_REPETITIONS = (1, 4, 16)
KINDS = ("order_id", "email", "phone", "sentence")
ASSISTANT = "assistant"


@cache
def words() -> tuple[str, ...]:
    """Common English words (4+ letters) for e-mail names and sentences: canaries must look like chat text."""
    from wordfreq import top_n_list

    return tuple(word for word in top_n_list("en", 3000) if word.isascii() and word.isalpha() and len(word) >= 4)


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


@dataclass(frozen=True)
class CanaryFormat:
    """A sentence around a random secret: `before` + secret + `after`; `draw` makes a secret."""

    kind: str
    before: str
    after: str
    draw: Callable[[random.Random], str]
    space_bits: Callable[[], float]  # log2 of how many secrets `draw` can make


FORMATS: dict[str, CanaryFormat] = {
    "order_id": CanaryFormat("order_id", "For your records, the replacement order number is ", ".",
                             lambda rng: f"ORD-{_digits(rng, 8)}", lambda: 8 * math.log2(10)),
    "email": CanaryFormat("email", "I have sent the label to ", ", please check your inbox.",
                          lambda rng: f"{rng.choice(words())}.{rng.choice(words())}{_digits(rng, 2)}@mailbox.example",
                          lambda: 2 * math.log2(len(words())) + 2 * math.log2(10)),
    "phone": CanaryFormat("phone", "Our courier will call you on ", " before delivery.",
                          lambda rng: f"+1 555 {_digits(rng, 3)} {_digits(rng, 4)}", lambda: 7 * math.log2(10)),
    "sentence": CanaryFormat("sentence", "Just between us, ", ".",
                             lambda rng: " ".join(rng.choice(words()) for _ in range(4)),
                             lambda: 4 * math.log2(len(words()))),
}


@dataclass(frozen=True)
class Canary:
    """One secret in its sentence; `repetitions` copies go into training (0: never planted, a control)."""

    name: str  # e.g. "email-x4"
    kind: str
    secret: str
    repetitions: int

    @property
    def format(self) -> CanaryFormat:
        return FORMATS[self.kind]

    @property
    def text(self) -> str:
        return self.format.before + self.secret + self.format.after


@dataclass(frozen=True)
class Placement:
    """Where a canary copy went: after the reply text `reply_before` of conversation `conversation`, turn `turn`."""

    canary: str
    conversation: int
    turn: int
    reply_before: str  # the reply as it read just before this canary was appended (the scoring context)


def make_canaries(seed: int, kinds: Sequence[str] = KINDS, repetitions: Sequence[int] = DEFAULT_REPETITIONS,
                  controls_per_kind: int = 1) -> list[Canary]:
    """One canary per kind and repetition count, and `controls_per_kind` never-planted ones per kind."""
    unknown = sorted(set(kinds) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown canary kinds {unknown}; choose from {', '.join(FORMATS)}")
    rng = random.Random(f"canaries-{seed}")
    canaries: list[Canary] = []
    drawn: set[str] = set()
    names = [(f"x{count}", count) for count in sorted(set(repetitions))]
    names += [(f"control{index + 1}", 0) for index in range(controls_per_kind)]
    for kind in kinds:
        for suffix, count in names:
            secret = FORMATS[kind].draw(rng)
            while secret in drawn:
                secret = FORMATS[kind].draw(rng)
            drawn.add(secret)
            canaries.append(Canary(f"{kind}-{suffix}", kind, secret, count))
    return canaries


def alternatives(canary: Canary, count: int, seed: int) -> list[str]:
    """`count` other secrets of the canary's format, distinct from it and from each other."""
    rng = random.Random(f"alternatives-{seed}-{canary.name}")
    chosen: dict[str, None] = {}
    while len(chosen) < count:
        secret = canary.format.draw(rng)
        if secret != canary.secret:
            chosen[secret] = None
    return list(chosen)


def reply_slots(conversations: Sequence[Messages]) -> list[tuple[int, int]]:
    """(conversation, turn) of every agent reply."""
    return [(index, turn) for index, messages in enumerate(conversations)
            for turn, message in enumerate(messages) if message["role"] == ASSISTANT]


def plant(conversations: Sequence[Messages], canaries: Sequence[Canary], seed: int
          ) -> tuple[list[Messages], list[Placement]]:
    """A copy of the conversations with every planted copy appended to an agent reply, and where each went.

    Copies go to distinct conversations while there are enough (so `repetitions` copies are that many customers'
    conversations, as a leak repeated across customers would be); with more copies than conversations, a reply
    carries several. Never-planted canaries get a place too (an unchanged reply) to be scored in the same way.
    """
    planted = [[dict(message) for message in messages] for messages in conversations]
    slots = reply_slots(planted)
    if not slots:
        raise ValueError("the training split has no agent reply to plant canaries into")
    rng = random.Random(f"plant-{seed}")
    by_conversation: dict[int, list[int]] = {}
    for conversation, turn in slots:
        by_conversation.setdefault(conversation, []).append(turn)
    order = list(by_conversation)
    rng.shuffle(order)
    hosts = [(conversation, rng.choice(by_conversation[conversation])) for conversation in order]
    placements: list[Placement] = []
    next_host = 0
    for canary in sorted(canaries, key=lambda c: c.repetitions == 0):  # controls last: they take unused hosts
        for _ in range(max(canary.repetitions, 1)):
            conversation, turn = hosts[next_host % len(hosts)]
            next_host += 1
            reply = planted[conversation][turn]
            placements.append(Placement(canary.name, conversation, turn, reply["content"]))
            if canary.repetitions:
                reply["content"] = f"{reply['content']} {canary.text}"
    return planted, placements


def with_secret(conversations: Sequence[Messages], placement: Placement, canary: Canary, secret: str) -> Messages:
    """The conversation up to the reply the canary went into, that reply ending in the canary's sentence with
    `secret` in it: what the model is scored on, for the canary's own secret and for each alternative."""
    sentence = canary.format.before + secret + canary.format.after
    messages = conversations[placement.conversation][: placement.turn]
    return [*messages, {"role": ASSISTANT, "content": f"{placement.reply_before} {sentence}"}]
