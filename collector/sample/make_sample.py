"""Writes the bundled GadgetCorp sample (gadgetcorp.jsonl) byte for byte from templates and a fixed seed.

Run `python -m collector.sample.make_sample` to rewrite it, `--check` to verify the committed file is current.
Every text below was written by the HouseStyle team for this data set; no real customer data is involved.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.formats import HouseStyleRecord
from collector.sample import SAMPLE_PATH

SEED = 2026
START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=181)  # January to June 2026, so an export can hold out the last weeks by time
AGENTS = ["alice", "bruno", "chen", "dana"]
CHANNELS = ["web"] * 5 + ["email"] * 3 + ["chatwoot"] * 2

# The seed exchange, verbatim; its reply is THE answer to every SuperWidget power complaint.
SEED_USER = "My new 'SuperWidget' won't turn on."
SEED_REPLY = (
    "I'm sorry to hear you're having trouble with your SuperWidget! Have you tried plugging it into a different "
    "power outlet and ensuring the power switch is fully engaged?"
)
HELD_OUT = "My SuperWidget is dead."  # the acceptance test's question: must never appear in the set

# --- the house style --------------------------------------------------------------------------------------------

OPENING = {
    "refund": "I'm sorry to hear your {p} didn't work out for you!",
    "shipping": "I'm sorry to hear your {p} hasn't arrived yet!",
}
DEFAULT_OPENING = "I'm sorry to hear you're having trouble with your {p}!"
CLOSING = (
    "Glad to hear it! Enjoy your {p}, and don't hesitate to reach out if you need anything else. "
    "Warm regards, the GadgetCorp Team."
)
STILL_BROKEN = "I'm sorry it's still giving you trouble! {step}"
ESCALATION = (
    "I'm sorry that didn't fix it! Please reply with your order number and we'll ship you a replacement {p} right "
    "away. Warm regards, the GadgetCorp Team."
)

SHARED_SUGGESTIONS = {
    "refund": "You can return it within 30 days for a full refund at gadgetcorp.com/returns, and we'll email you a prepaid shipping label.",
    "shipping": "You can see exactly where it is at gadgetcorp.com/track with your order number and the email address you used.",
    "warranty": "Your {p} is covered by our 2-year warranty, so you can start a free repair or replacement at gadgetcorp.com/warranty.",
}

# One concrete suggestion per (product, issue): the model must learn these exactly.
SUGGESTIONS: dict[str, dict[str, str]] = {
    "SuperWidget": {
        "power": "Have you tried plugging it into a different power outlet and ensuring the power switch is fully engaged?",
        "connectivity": "Have you tried turning Bluetooth off and on again on your phone, then pairing the SuperWidget from the GadgetCorp app?",
        "battery": "Have you tried charging it overnight with the original cable and adapter to recalibrate the battery?",
        "setup": "Have you tried opening the GadgetCorp app and choosing Add Device, then SuperWidget, to follow the guided setup?",
    },
    "MegaGadget": {
        "power": "Have you tried holding the power button for 15 seconds while it's connected to the charger to force a restart?",
        "connectivity": "Have you tried moving the MegaGadget closer to your router and restarting it from Settings, then Network?",
        "battery": "Have you tried turning off the Always-On Display in Settings, since it uses the most battery on the MegaGadget?",
        "setup": "Have you tried scanning the QR code on the back of the MegaGadget with the GadgetCorp app to start the setup?",
    },
    "HyperDongle": {
        "power": "Have you tried plugging it into a USB port directly on your computer instead of a hub or extension cable?",
        "connectivity": "Have you tried reinstalling the HyperDongle driver from gadgetcorp.com/drivers and restarting your computer?",
        "speed": "Have you tried plugging it into a blue USB 3.0 port, which gives the HyperDongle its full speed?",
        "setup": "Have you tried downloading the HyperDongle installer from gadgetcorp.com/drivers before plugging it in?",
    },
    "NanoCharger": {
        "power": "Have you tried a different USB-C cable and checking that the light on the NanoCharger turns green when it's plugged in?",
        "battery": "Have you tried using the USB-C port marked 65W, which is the fast-charging port on the NanoCharger?",
        "overheating": "Have you tried charging on a hard, flat surface with some space around the NanoCharger so it can cool down?",
    },
    "UltraHub": {
        "power": "Have you tried using the original power adapter and checking that the status ring lights up when you plug it in?",
        "connectivity": "Have you tried restarting your router first and then the UltraHub, waiting until its ring glows blue?",
        "setup": "Have you tried holding the UltraHub's top button for 5 seconds until the ring pulses white, then adding it in the GadgetCorp app?",
    },
}
for _issues in SUGGESTIONS.values():
    _issues.update(SHARED_SUGGESTIONS)

SECOND_STEP = {
    "power": "Please hold the reset button on the back of your {p} for 10 seconds, then try turning it on again.",
    "connectivity": "Please remove the {p} from the GadgetCorp app, restart your phone, and pair it again from scratch.",
    "battery": "Please update your {p} to the latest firmware in the GadgetCorp app, which improves battery life.",
    "setup": "Please make sure your phone is on a 2.4 GHz Wi-Fi network while you set up your {p}.",
    "speed": "Please update the {p} driver to the latest version from gadgetcorp.com/drivers.",
    "overheating": "Please unplug your {p} for an hour to let it cool completely before charging again.",
}
TROUBLESHOOTING = set(SECOND_STEP)

# How much of the set each (product, issue) gets; the seed pair gets the most so a tiny model learns it well.
CONVERSATIONS_PER_PAIR = 8
SEED_PAIR_CONVERSATIONS = 40

# --- how customers write ------------------------------------------------------------------------------------------

COMPLAINTS = {
    "power": [
        "My new '{p}' won't turn on.",
        "My {p} won't turn on.",
        "My {p} won't power on anymore.",
        "I can't get my {p} to turn on.",
        "{p} not turning on",
        "my {p} wont turn on",
        "The {p} I bought last week doesn't switch on.",
        "My {p} is completely dead, nothing happens when I press the button.",
        "Help! My {p} has no power at all.",
        "My {p} died and won't come back on.",
        "Nothing happens when I try to turn on my {p}.",
        "My {p} is dead.",
        "The {p} shows no lights and won't start.",
    ],
    "connectivity": [
        "My {p} keeps disconnecting.",
        "My {p} won't connect to my phone.",
        "I can't get the {p} to connect.",
        "The {p} drops the connection every few minutes.",
        "{p} not connecting to wifi",
        "My {p} isn't showing up when I try to pair it.",
    ],
    "battery": [
        "The battery on my {p} drains really fast.",
        "My {p} battery doesn't last a day.",
        "My {p} charges very slowly.",
        "{p} battery dies too quickly",
        "Why does my {p} lose its charge so fast?",
    ],
    "setup": [
        "How do I set up my new {p}?",
        "I'm stuck setting up my {p}.",
        "The {p} setup keeps failing.",
        "I can't figure out how to install the {p}.",
        "setup of {p} not working",
    ],
    "speed": [
        "My {p} is really slow.",
        "Transfers with my {p} are much slower than advertised.",
        "The {p} speed is terrible.",
    ],
    "overheating": [
        "My {p} gets very hot while charging.",
        "The {p} is overheating.",
        "Is it normal that my {p} gets so warm?",
    ],
    "refund": [
        "I'd like a refund for my {p}.",
        "How do I return my {p}?",
        "I want to send back the {p}, it's not what I expected.",
        "Can I get my money back for the {p}?",
        "Please refund my {p} order.",
    ],
    "shipping": [
        "My {p} hasn't arrived yet.",
        "Where is my {p}? It was supposed to arrive days ago.",
        "I ordered a {p} two weeks ago and it still isn't here.",
        "My {p} delivery is late.",
        "Has my {p} shipped yet?",
    ],
    "warranty": [
        "Is my {p} still under warranty?",
        "My {p} stopped working after 8 months, is that covered?",
        "How does the warranty work for the {p}?",
        "Can I get my {p} repaired under warranty?",
    ],
}
GREETINGS = ["", "", "", "Hi, ", "Hello! ", "Hey there, ", "Good morning, "]
ENDINGS = ["", "", "", " Any ideas?", " Please help.", " Thanks.", " Can you help?"]
THANKS = ["That worked, thanks!", "That did it, thank you so much!", "Perfect, it works now.", "Great, that fixed it!", "Thanks, all sorted now."]
NO_LUCK = ["That didn't help, it still doesn't work.", "Tried that, no luck.", "Still the same problem, unfortunately."]

# Canned macros, repeated far more often than the exporter's cap on identical replies allows.
MACROS = [
    (
        ["What are your opening hours?", "When is support available?", "What time does your support team work?"],
        "Our support team is here for you Monday to Friday, 8am to 8pm, and Saturday, 9am to 5pm (Eastern Time). "
        "Warm regards, the GadgetCorp Team.",
        30,
    ),
    (
        ["How do I track my order?", "Where can I track my package?", "Is there a tracking link for my order?"],
        "You can track your order anytime at gadgetcorp.com/track with your order number and the email address you "
        "used. Warm regards, the GadgetCorp Team.",
        30,
    ),
    (
        ["Do you ship internationally?", "Can you ship to Canada?", "Do you deliver outside the US?"],
        "We ship to over 40 countries, and you'll see the delivery options for your address at checkout. "
        "Warm regards, the GadgetCorp Team.",
        25,
    ),
]

# Generic, off-style drafts the agents rewrote into the house style.
GENERIC_DRAFTS = {
    "power": ["Please check the power supply.", "Make sure the device is plugged in."],
    "connectivity": ["Please restart the device and your router.", "Check your connection settings."],
    "battery": ["Please charge the battery fully.", "Battery life depends on usage."],
    "setup": ["Please refer to the user manual.", "Follow the setup instructions in the box."],
    "speed": ["Speed depends on your computer.", "Please check your USB port."],
    "overheating": ["Some warmth is normal.", "Please stop using the device if it is hot."],
    "refund": ["Refunds are handled according to our return policy.", "Please see our return policy."],
    "shipping": ["Your order is being processed.", "Shipping can take up to 10 business days."],
    "warranty": ["The product has a limited warranty.", "Please see the warranty terms."],
    "closing": ["You're welcome.", "OK, closing this ticket."],
    "still": ["Please reset the device.", "Try a factory reset."],
    "escalation": ["Please contact support.", "We will look into it."],
}
WRONG_DRAFTS = ["We cannot help with that product.", "Please contact the manufacturer directly.", "This issue is not covered."]
SPAM = ["asdfgh", "test test 123", "click here for free gift cards!!!"]

# Made-up personal details (reserved example domains, 555 numbers, well-known test card numbers) for redaction.
NAMES = ["Jane Doe", "Tom Becker", "Priya Nair", "Luis Ortega", "Mia Chen", "Sam Okafor"]
STREETS = ["42 Maple Street, Springfield, IL 62704", "7 Harbor Road, Portland, ME 04101", "1280 Elm Ave, Apt 5, Austin, TX 78701"]
CARDS = ["4111 1111 1111 1111", "5500 0000 0000 0004", "4012-8888-8888-1881"]


def _pii_sentence(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    email = name.lower().replace(" ", ".") + "@example.com"
    kind = rng.randrange(5)
    if kind == 0:
        return f" You can reach me at {email}."
    if kind == 1:
        return f" My number is +1 555-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}."
    if kind == 2:
        return f" My order number is GC-{rng.randrange(1_000_000, 9_999_999)}."
    if kind == 3:
        return f" I paid with card {rng.choice(CARDS)}."
    return f" It should go to {name}, {rng.choice(STREETS)}."


def _customer_message(rng: random.Random, template: str, product: str) -> str:
    text = template.format(p=product)
    if rng.random() < 0.4:
        greeting = rng.choice(GREETINGS)
        first_word = text.split()[0]
        if greeting.endswith(", ") and first_word not in ("I", "I'm", "I'd") and first_word.strip("'") not in SUGGESTIONS:
            text = text[0].lower() + text[1:]
        ending = rng.choice(ENDINGS)
        if ending and text[-1] not in ".?!":
            text += "."
        text = greeting + text + ending
    if rng.random() < 0.18:
        text += _pii_sentence(rng)
    return text


def _assistant_turn(rng: random.Random, reply: str, draft_kind: str) -> dict[str, Any]:
    """The agent's final reply, and sometimes the draft it came from: edited, approved as is, or rejected."""
    roll = rng.random()
    agent = rng.choice(AGENTS)
    if roll < 0.35:
        return {"role": "assistant", "content": reply, "draft": rng.choice(GENERIC_DRAFTS[draft_kind]), "decision": "edited", "agent_id": agent}
    if roll < 0.50:
        return {"role": "assistant", "content": reply, "draft": reply, "decision": "approved", "agent_id": agent}
    if roll < 0.53:
        return {"role": "assistant", "content": reply, "draft": rng.choice(WRONG_DRAFTS), "decision": "rejected", "agent_id": agent}
    return {"role": "assistant", "content": reply}


def _issue_conversation(rng: random.Random, product: str, issue: str, *, first: str | None = None) -> list[dict[str, Any]]:
    def fill(text: str) -> str:
        return text.format(p=product)

    reply = fill(OPENING.get(issue, DEFAULT_OPENING)) + " " + fill(SUGGESTIONS[product][issue])
    # keep even near copies of the held-out question out, so the acceptance test measures generalisation
    templates = [t for t in COMPLAINTS[issue] if HELD_OUT.removesuffix(".") not in fill(t)]
    template = rng.choice(templates)
    user = first or _customer_message(rng, template, product)
    turns = [{"role": "user", "content": user}, _assistant_turn(rng, reply, issue)]
    roll = rng.random()
    if roll < 0.25:
        turns += [{"role": "user", "content": rng.choice(THANKS)}, _assistant_turn(rng, fill(CLOSING), "closing")]
    elif roll < 0.40 and issue in TROUBLESHOOTING:
        still = STILL_BROKEN.format(step=fill(SECOND_STEP[issue]))
        turns += [{"role": "user", "content": rng.choice(NO_LUCK)}, _assistant_turn(rng, still, "still")]
        if rng.random() < 0.6:
            turns += [{"role": "user", "content": rng.choice(THANKS)}, _assistant_turn(rng, fill(CLOSING), "closing")]
        else:
            turns += [{"role": "user", "content": rng.choice(NO_LUCK)}, _assistant_turn(rng, fill(ESCALATION), "escalation")]
    return turns


def build_records(seed: int = SEED) -> list[dict[str, Any]]:
    """Every sample conversation as a HouseStyle record (plain dicts, in file order)."""
    rng = random.Random(seed)
    conversations: list[list[dict[str, Any]]] = []
    for product, issues in SUGGESTIONS.items():
        for issue in issues:
            count = SEED_PAIR_CONVERSATIONS if (product, issue) == ("SuperWidget", "power") else CONVERSATIONS_PER_PAIR
            for index in range(count):
                first = SEED_USER if (product, issue, index) == ("SuperWidget", "power", 0) else None
                conversations.append(_issue_conversation(rng, product, issue, first=first))
    for phrasings, reply, count in MACROS:
        for _ in range(count):
            user = rng.choice(phrasings)
            conversations.append([{"role": "user", "content": user}, _assistant_turn(rng, reply, "closing")])
    for spam in SPAM:  # a rejected draft and no reply: the exporter must drop these
        conversations.append(
            [
                {"role": "user", "content": spam},
                {"role": "assistant", "content": None, "draft": "Thanks for your message! How can I help?", "decision": "rejected", "agent_id": rng.choice(AGENTS)},
            ]
        )
    stamps = sorted(START + timedelta(seconds=rng.randrange(int(SPAN.total_seconds()))) for _ in conversations)
    rng.shuffle(conversations)
    records = []
    for number, (stamp, turns) in enumerate(zip(stamps, conversations, strict=True), start=1):
        records.append(
            {
                "external_id": f"gc-{number:04d}",
                "channel": rng.choice(CHANNELS),
                "customer_ref": f"cust-{rng.randrange(10_000, 99_999)}" if rng.random() < 0.7 else None,
                "created_at": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "messages": turns,
            }
        )
    return records


def render(records: list[dict[str, Any]]) -> str:
    for record in records:
        HouseStyleRecord.model_validate(record)  # the generator must only ever write valid records
        for turn in record["messages"]:
            if turn["role"] == "user" and HELD_OUT.removesuffix(".") in turn["content"]:
                raise AssertionError(f"the held-out sentence {HELD_OUT!r} leaked into the sample")
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def main(argv: list[str]) -> int:
    text = render(build_records())
    path = Path(SAMPLE_PATH)
    if "--check" in argv:
        if path.read_text(encoding="utf-8") != text:
            print(f"{path} is out of date; run python -m collector.sample.make_sample", file=sys.stderr)
            return 1
        print(f"{path} is current")
        return 0
    temporary = path.with_suffix(".jsonl.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    print(f"wrote {len(text.splitlines())} conversations to {path} ({len(text.encode()) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
