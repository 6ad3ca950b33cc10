"""Generate the labelled support conversations that measure PII redaction (tests/data/pii_conversations.jsonl).

Whole conversations of an online clothing and gadget store: customers and agents, names in any case, labelled
ids with typos, values given in the message after the agent asked, values split across two messages, agents
repeating values back, and the look-alikes that must stay (products, brands, sizes, prices, dates, tracking
numbers, promo codes). Every personal value is labelled with its characters in its message.

Two parts that share nothing but this code: `dev` (the detectors were tuned on it) and `holdout` (measured once,
at the end, never tuned on). They differ in seed, phrasings (two separate template banks written apart), name
lists (Faker locales: the held-out part draws half its first names and all its surnames from locales the
detector's first-name list does not include), id, phone, username and address formats, and brands.

Run: .venv/bin/python bench/make_pii_conversations.py  (deterministic; rewrites the file)
"""

from __future__ import annotations

import importlib
import json
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "pii_conversations.jsonl"

# slot -> PII type (slots not listed carry no personal data)
SLOT_TYPES = {
    "full": "PERSON",
    "first": "PERSON",
    "last": "PERSON",
    "agent": "PERSON",
    "email": "EMAIL",
    "phone": "PHONE",
    "order": "ORDER_ID",
    "account": "ACCOUNT_ID",
    "username": "USERNAME",
    "zip": "ZIP_CODE",
    "address": "ADDRESS",
    "ref": "REFERENCE",
    "last4": "LAST_DIGITS",
    "card": "CARD",
    "iban": "IBAN",
}


def _names(locales: list[str], attributes: tuple[str, ...]) -> list[str]:
    names: set[str] = set()
    for locale in locales:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attribute in attributes:
            try:
                names.update(getattr(provider, attribute, None) or ())
            except TypeError:  # a provider property, not a list
                pass
    return sorted(n for n in names if n.isascii() and n.isalpha() and len(n) >= 3)


FIRST = ("first_names", "first_names_male", "first_names_female")
LAST = ("last_names",)


@dataclass
class Part:
    """What differs between the dev and held-out parts."""

    name: str
    seed: int
    conversations: int
    common_first: list[str]
    rare_first: list[str]
    last: list[str]
    agents: list[str]
    bank: dict[str, list[str]]
    order_formats: list[str]
    account_formats: list[str]
    username_formats: list[str]
    phone_formats: list[str]
    email_domains: list[str]
    brands: list[str]
    streets: list[str]
    cities: list[tuple[str, str]]
    extras: dict[str, list[str]] = field(default_factory=dict)


PRODUCTS = [
    "SuperWidget",
    "MegaGadget Pro",
    "UltraLite Jacket",
    "FlexFit Jeans",
    "CloudStep Sneakers",
    "AeroKnit Hoodie",
    "ThermoCore Vest",
    "EverDry Raincoat",
]
ITEMS = ["jeans", "shirt", "jacket", "hoodie", "dress", "boots", "sweater", "shorts", "sneakers", "coat", "belt"]
COMPANY = "GadgetCorp"


# --- the two template banks: {slot} is filled; text in customer turns may be lower-cased or typo'd -----------

DEV_BANK: dict[str, list[str]] = {
    "agent_greet": [
        "Hi! {agent} from {company} here to help.",
        "Hi, thanks for contacting {company}! My name is {agent}, how can I help you today?",
        "Hello! You're chatting with {agent}. What can I do for you?",
        "Good morning, {agent} here. How may I help?",
    ],
    "open_name": [
        "hiya, im {first}, my parcel is missing",
        "this is {first} {last} again",
        "its {first}",
        "Ms {last} here",
        "Hi there! {first} {last} speaking",
        "{first} here, quick question",
        "it's {first} {last}, hi",
        "hey, i'm {first}",
        "good afternoon. {full}. my coupon is not working",
        "hi my name is {full}",
        "Hello, my name is {full} and I need help with my order",
        "{full}, I don't know my account ID",
        "hey this is {first}, I have a problem",
        "hi, {full} here. my package never arrived",
        "my name's {full}. I was double charged",
    ],
    "open_plain": [
        "hi, I have a problem with my order",
        "hello I want to return the {item} I bought",
        "i cant log in to my account",
        "my {product} stopped working after 2 days",
        "Do you have the {brand} {item} in size {size}?",
        "I want to change my shipping address",
    ],
    "ask_name": [
        "Sorry to hear that. May I have your full name please?",
        "Could I get your name first?",
        "Who am I speaking with today?",
    ],
    "ask_username": [
        "Can you give me your username?",
        "What is your username please?",
        "Could you provide the username on the account?",
    ],
    "ask_account": [
        "Could you please provide your account ID?",
        "What's the account id?",
        "Please share your account ID so I can look you up.",
    ],
    "ask_order": ["Can I have the order ID please?", "What is your order number?", "Could you give me the order id?"],
    "ask_zip": ["And what is your zip code?", "Can you confirm the zip code on file?", "What's the zip code?"],
    "ask_email": ["Can I have the email address on the account?", "What email did you use for the order?"],
    "ask_phone": ["Can I get a phone number to reach you?", "What's the best phone number for you?"],
    "ask_address": ["What is the new shipping address?", "Please give me the full address."],
    "ask_last4": [
        "Can you give me the last four digits of the card you used?",
        "What are the last 4 digits of the payment card?",
    ],
    "give_name": [
        "{last}, {first}",
        "{first}",
        "full name is {full}",
        "first name {first}, last name {last}",
        "yeah {full}",
        "{full}",
        "it's {full}",
        "sure, {full}",
        "my name is {full}",
        "{full}.",
    ],
    "give_username": [
        "{username}",
        "it's {username}",
        "username: {username}",
        "sure it is {username}",
        "my username is {username}",
        "{username} is my username",
    ],
    "give_account": [
        "{account}",
        "Account ID: {account}",
        "my account id is {account}",
        "it's {account}",
        "{account} is my account id",
    ],
    "give_order": [
        "{order}",
        "Order ID: {order}",
        "order number is {order}",
        "sure, it's {order}",
        "my order id is {order}",
        "the order # is {order}",
    ],
    "give_zip": [
        "zip: {zip}",
        "the zip is {zip}",
        "postcode {zip}",
        "{zip}",
        "{zip} is my zipcode",
        "zip code is {zip}",
        "its {zip}",
        "my zip is {zip}",
    ],
    "give_email": ["{email}", "it's {email}", "my email is {email}", "email: {email}"],
    "give_phone": ["{phone}", "my phone is {phone}", "you can call me at {phone}", "phone number: {phone}"],
    "give_address": ["{address}", "ship it to {address} please", "my address is {address}", "new address: {address}"],
    "give_last4": [
        "ending {last4}",
        "it's the one that ends in {last4}",
        "last digits {last4}",
        "{last4}",
        "the last four digits are {last4}",
        "it ends in {last4}",
        "last 4: {last4}",
    ],
    "dangling_order": ["my order id is", "the order number is"],
    "dangling_username": ["my username is", "username is"],
    "bare_value_order": ["{order}"],
    "bare_value_username": ["{username}"],
    "confirm_name": [
        "Okay, {first}, I've reset it.",
        "Happy to help, {first}!",
        "One moment, {first}, while I check.",
        "Cheers {first}, checking now.",
        "Sounds good {first}.",
        "Alright {first}, one sec.",
        "No problem at all, {first}!",
        "Thank you, {first}. Let me look into it.",
        "Thanks {first}! One moment please.",
        "Thanks, {first}.",
    ],
    "confirm_username": [
        "Great, your username is {username}.",
        "I found the account {username}.",
        "Thanks, I see the username {username} here.",
    ],
    "confirm_account": ["I see account {account}, thank you.", "Account ID {account} is verified."],
    "confirm_order": [
        "I found order {order}. It shipped yesterday.",
        "Order {order} is on its way.",
        "Thanks, order {order} was delivered on {date}.",
    ],
    "confirm_zip": ["Zip code {zip} matches our records.", "Thanks, {zip} is correct."],
    "confirm_email": ["I have sent a reset link to {email}.", "A confirmation will go to {email}."],
    "confirm_phone": ["We'll text {phone} when it ships.", "I've updated your phone to {phone}."],
    "confirm_address": ["I've updated the address to {address}.", "It will ship to {address}."],
    "confirm_last4": ["I see a charge on the card ending {last4}.", "The refund goes to the card ending in {last4}."],
    "ref_agent": [
        "I've logged this as case {ref}.",
        "Your reservation {ref} is confirmed.",
        "Your RMA is {ref}.",
        "Your confirmation number is {ref}.",
        "I've opened ticket number {ref} for this.",
        "The return reference number is {ref}.",
    ],
    "ref_customer": [
        "ticket {ref} was closed without an answer",
        "I'm calling about case #{ref}",
        "I have a case number from last time, it's {ref}",
        "my confirmation number is {ref}",
    ],
    "chitchat_customer": [
        "does {brand} make it in navy?",
        "my friend recommended {brand}",
        "ok thanks",
        "how long will the refund take?",
        "Is the {product} waterproof?",
        "I bought 2 {item}s on {date} for ${price}",
        "does the {brand} {item} run small?",
        "the tracking number {tracking} hasn't updated",
        "can I use promo code {promo}?",
        "I love my {product}!",
        "I need it before March 3",
        "size {size} please",
    ],
    "chitchat_agent": [
        "{brand} is one of our best sellers.",
        "Refunds take 5-7 business days.",
        "The {product} is water resistant up to 10 meters.",
        "Yes, the {brand} {item} runs a size small.",
        "Promo code {promo} gives 20% off.",
        "Our {item}s are on sale for ${price} this week.",
        "The {product} comes with a 2 year warranty.",
    ],
    "close_customer": [
        "ty {first}, thats all",
        "bye {first}!",
        "cheers {first}",
        "thanks {first}!",
        "Thank you so much, {first}.",
        "ok great thanks",
        "thats all, bye",
    ],
    "close_agent": [
        "You're all set, {first}.",
        "Glad I could help, {first}. Bye!",
        "Thank you for contacting {company}, {first}. Have a great day!",
        "Is there anything else I can help with, {first}?",
        "Have a nice day!",
    ],
}

HOLDOUT_BANK: dict[str, list[str]] = {
    "agent_greet": [
        "Welcome to {company} support, I'm {agent}. What brings you here today?",
        "Hey there, {agent} from the {company} team. What's going on?",
        "Thanks for reaching out! {agent} speaking, how can I assist?",
    ],
    "open_name": [
        "good evening, {full} here, my refund never showed up",
        "This is {full}, order question",
        "{first} {last}. i need to cancel something",
        "hello! i am {full} and the zipper broke",
        "yo its {first}, the {item} came in the wrong color",
        "Name: {full}. Need help ASAP.",
    ],
    "open_plain": [
        "my jacket arrived ripped",
        "where is my stuff?? its been two weeks",
        "how do I reset my password",
        "the {brand} {item} i ordered is too big",
        "I was charged twice for one order",
        "can you help me update my account info",
    ],
    "ask_name": [
        "I'm sorry about that! Can you tell me your first and last name?",
        "To get started, what name is the account under?",
        "May I know your name, please?",
    ],
    "ask_username": [
        "What username do you log in with?",
        "Please tell me your user name.",
        "I'll need the username for the account, please.",
    ],
    "ask_account": [
        "Do you have your account number handy?",
        "Could you read me the member ID on your card?",
        "What's your customer ID?",
    ],
    "ask_order": [
        "Which order is this about? The order number is on your receipt.",
        "Please send the order ID you're asking about.",
        "Do you have the order number?",
    ],
    "ask_zip": [
        "For verification, what postal code is on the account?",
        "Please confirm your zip.",
        "Which zipcode should I use?",
    ],
    "ask_email": ["What's the e-mail address tied to the account?", "Which email should I send it to?"],
    "ask_phone": ["What mobile number can we text updates to?", "Could you share a contact phone number?"],
    "ask_address": ["Where should we send the replacement?", "What's the street address for delivery?"],
    "ask_last4": [
        "Which card did you pay with? Just the last 4 digits.",
        "Please share the final four digits of the card.",
    ],
    "give_name": ["{first} {last}", "{full} is my name", "ok it's {full}", "{full} (that's me)", "name's {full}"],
    "give_username": [
        "{username}",
        "I think its {username}",
        "login is {username}",
        "{username} i believe",
        "user name {username}",
    ],
    "give_account": [
        "{account}",
        "acct #{account}",
        "member id {account}",
        "{account} is the account number",
        "here: {account}",
    ],
    "give_order": [
        "{order}",
        "order {order}",
        "#{order}",
        "It's order {order} from last week",
        "the receipt says order no. {order}",
        "{order} is the order number",
    ],
    "give_zip": ["{zip}", "postal code {zip}", "{zip} thats my zip", "zip {zip}"],
    "give_email": ["{email}", "send it to {email}", "{email} is my email"],
    "give_phone": ["{phone}", "cell is {phone}", "text me on {phone}", "{phone} thats my number"],
    "give_address": ["{address}", "deliver to {address}", "{address} is where i live now"],
    "give_last4": ["{last4}", "card ending with {last4}", "final four digits: {last4}", "{last4} are the last four"],
    "dangling_order": ["order number is", "here's the order id"],
    "dangling_username": ["my user name is", "login name:"],
    "bare_value_order": ["{order}"],
    "bare_value_username": ["{username}"],
    "confirm_name": ["Got it, {first}, give me a second.", "Thank you {first}!", "Perfect, thanks {first}."],
    "confirm_username": [
        "I've located {username} in our system.",
        "Okay, the user {username} is locked, I'll unlock it.",
        "{username} is now reset.",
    ],
    "confirm_account": ["Account {account} is showing a credit.", "I've pulled up account number {account}."],
    "confirm_order": [
        "Order {order} is delayed at the warehouse.",
        "I've cancelled order {order} for you.",
        "The label for {order} was created on {date}.",
    ],
    "confirm_zip": ["Great, {zip} matches.", "I have {zip} on file, that's right."],
    "confirm_email": ["Done, check {email} for the label.", "The receipt was emailed to {email}."],
    "confirm_phone": ["We'll call {phone} if anything changes.", "Your number {phone} is saved."],
    "confirm_address": ["The replacement ships to {address}.", "Updated: {address}."],
    "confirm_last4": [
        "The card ending in {last4} will be credited.",
        "I see the payment from the card ending {last4}.",
    ],
    "ref_agent": [
        "Please keep this reference number: {ref}.",
        "Your booking number is {ref}.",
        "Ticket {ref} has been created.",
    ],
    "ref_customer": ["i already have a ticket number {ref}", "reference number {ref} from my last chat"],
    "chitchat_customer": [
        "cool",
        "when will it get here",
        "is the {product} machine washable?",
        "i paid ${price} on {date}",
        "does {brand} make this in petite?",
        "tracking says {tracking} but nothing moved",
        "the code {promo} didnt work",
        "my {product} is great otherwise",
        "I'm away until June 12",
        "do you have XL?",
    ],
    "chitchat_agent": [
        "It should arrive within 3 to 5 days.",
        "Yes, the {product} is machine washable at 30 degrees.",
        "{brand} runs true to size.",
        "I've applied {promo} to your cart.",
        "That item is ${price} now.",
        "Returns are free within 30 days.",
    ],
    "close_customer": ["appreciate it {first}", "thx {first}, bye", "that's everything, thanks", "perfect!"],
    "close_agent": ["Take care, {first}!", "Anything else today, {first}?", "Thanks for shopping with {company}!"],
}


def _upper_alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(rng.choice(string.digits) for _ in range(n - 1))


def _luhn_complete(prefix: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(prefix + "0")):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return prefix + str((10 - total % 10) % 10)


def _typo(rng: random.Random, word: str) -> str:
    """One random slip: a letter dropped, doubled or swapped with the next."""
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(["drop", "double", "swap"])
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


_SAYS_WHAT = re.compile(r"user|login|acc|member|order|zip|postal|card|digits|four|ending|last|number", re.I)

LABEL_WORDS = [
    "order",
    "account",
    "username",
    "number",
    "zipcode",
    "confirmation",
    "reference",
    "ticket",
    "member",
    "customer",
    "postal",
    "phone",
    "digits",
    "address",
    "email",
    "name",
]


class Conversation:
    def __init__(self) -> None:
        self.turns: list[dict] = []

    def add(self, role: str, segments: list[tuple[str, str | None]]) -> None:
        text, pii, cursor = "", [], 0
        for piece, pii_type in segments:
            if pii_type:
                pii.append({"type": pii_type, "start": cursor, "end": cursor + len(piece), "value": piece})
            text += piece
            cursor += len(piece)
        self.turns.append({"role": role, "text": text, "pii": pii})


class Generator:
    def __init__(self, part: Part) -> None:
        self.part = part
        self.rng = random.Random(part.seed)

    def profile(self) -> dict[str, str]:
        rng, part = self.rng, self.part
        first = rng.choice(part.common_first if rng.random() < 0.5 else part.rare_first)
        last = rng.choice(part.last)
        number = str(rng.randint(1, 999))
        username = rng.choice(part.username_formats).format(
            f=first.lower(), l=last.lower(), fi=first[0].lower(), li=last[0].lower(), n=number
        )
        email = rng.choice(
            [
                f"{username}@{rng.choice(part.email_domains)}",
                f"{first.lower()}.{last.lower()}@{rng.choice(part.email_domains)}",
            ]
        )
        digits = f"{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        phone = rng.choice(part.phone_formats).format(a=digits[:3], b=digits[3:6], c=digits[6:])
        zip_code = f"{rng.randint(1000, 99950):05d}"
        if part.name == "holdout" and rng.random() < 0.2:
            zip_code += f"-{rng.randint(0, 9999):04d}"
        city, state = rng.choice(part.cities)
        street = f"{rng.randint(10, 9999)} {rng.choice(part.streets)}"
        address = rng.choice(
            [
                f"{street}, {city}, {state} {zip_code}",
                f"{street}",
                f"{street}, {city}",
                f"{street} {city} {state} {zip_code}",
            ]
        )
        order = self._format_id(rng.choice(part.order_formats))
        account = self._format_id(rng.choice(part.account_formats))
        ref = self._format_id(rng.choice(["{A3}{D6}", "{D8}", "{A2}-{D5}", "{D6}{A2}"]))
        return {
            "first": first,
            "last": last,
            "full": f"{first} {last}",
            "username": username,
            "email": email,
            "phone": phone,
            "zip": zip_code,
            "address": address,
            "order": order,
            "account": account,
            "ref": ref,
            "last4": f"{rng.randint(0, 9999):04d}",
            "agent": rng.choice(part.agents),
            "card": " ".join(re.findall(".{4}", _luhn_complete("4" + _digits(rng, 14)))),
        }

    def _format_id(self, pattern: str) -> str:
        def fill(match: re.Match[str]) -> str:
            kind, n = match.group(1), int(match.group(2))
            if kind == "D":
                return _digits(self.rng, n)
            if kind == "A":
                return "".join(self.rng.choice(string.ascii_uppercase) for _ in range(n))
            return _upper_alnum(self.rng, n)

        return re.sub(r"\{([DAX])(\d+)\}", fill, pattern)

    def fill(self, template: str, values: dict[str, str], lower: bool) -> list[tuple[str, str | None]]:
        rng, part = self.rng, self.part
        filler = {
            "company": COMPANY,
            "product": rng.choice(PRODUCTS),
            "item": rng.choice(ITEMS),
            "brand": rng.choice(part.brands),
            "size": rng.choice(["S", "M", "L", "XL", "8", "10", "32x30"]),
            "price": f"{rng.randint(9, 199)}.{rng.choice(['99', '00', '50'])}",
            "date": rng.choice(["May 2", "June 14th", "11/03", "last Tuesday", "2024-03-15"]),
            "tracking": "1Z" + _upper_alnum(rng, 16),
            "promo": rng.choice(["SAVE20", "WELCOME10", "FALL25"]),
        }
        segments: list[tuple[str, str | None]] = []
        cursor = 0
        for match in re.finditer(r"\{(\w+)\}", template):
            segments.append((template[cursor : match.start()], None))
            slot = match.group(1)
            if slot in SLOT_TYPES:
                segments.append((values[slot], SLOT_TYPES[slot]))
            else:
                segments.append((filler[slot], None))
            cursor = match.end()
        segments.append((template[cursor:], None))
        if lower:
            segments = [(text.lower(), pii_type) for text, pii_type in segments]
        return [(self._slip(text) if pii_type is None else text, pii_type) for text, pii_type in segments if text]

    def _slip(self, text: str) -> str:
        """Customers mistype label words now and then."""

        def maybe(match: re.Match[str]) -> str:
            word = match.group()
            return _typo(self.rng, word) if word.lower() in LABEL_WORDS and self.rng.random() < self.typo_rate else word

        return re.sub(r"[A-Za-z]+", maybe, text)

    typo_rate = 0.0

    def say(
        self,
        conversation: Conversation,
        role: str,
        key: str,
        values: dict[str, str],
        lower: bool,
        *,
        unprompted: bool = False,
    ) -> None:
        templates = self.part.bank[key]
        if unprompted:  # nobody asked: only a message that says what the value is can be understood
            templates = [t for t in templates if _SAYS_WHAT.search(re.sub(r"\{\w+\}", "", t))] or templates
        template = self.rng.choice(templates)
        self.typo_rate = 0.25 if role == "user" else 0.0
        conversation.add(role, self.fill(template, values, lower and role == "user"))

    def conversation(self) -> Conversation:
        rng = self.rng
        values = self.profile()
        lower = rng.random() < 0.45
        conversation = Conversation()
        say = lambda role, key: self.say(conversation, role, key, values, lower)  # noqa: E731
        if rng.random() < 0.7:
            say("assistant", "agent_greet")
        named = rng.random() < 0.5
        say("user", "open_name" if named else "open_plain")
        if not named:
            say("assistant", "ask_name")
            say("user", "give_name")
        say("assistant", "confirm_name")
        needs = rng.sample(
            ["username", "account", "order", "zip", "email", "phone", "address", "last4"], k=rng.randint(2, 4)
        )
        for need in needs:
            style = rng.random()
            if need in ("order", "username") and style < 0.2:
                say("user", f"dangling_{need}")
                say("user", f"bare_value_{need}")
            elif style < 0.75:
                say("assistant", f"ask_{need}")
                say("user", f"give_{need}")
            else:
                self.say(
                    conversation,
                    "user",
                    f"give_{need}",
                    values,
                    lower,
                    unprompted=need not in ("email", "phone", "address"),
                )
            if rng.random() < 0.8:
                say("assistant", f"confirm_{need}")
            if rng.random() < 0.35:
                say("user", "chitchat_customer")
                say("assistant", "chitchat_agent")
        if rng.random() < 0.3:
            say("assistant" if rng.random() < 0.6 else "user", "ref_agent" if rng.random() < 0.6 else "ref_customer")
        if rng.random() < 0.06:
            conversation.add("user", [("my card number is ", None), (values["card"], "CARD")])
        say("user", "close_customer")
        say("assistant", "close_agent")
        return conversation


def parts() -> list[Part]:
    return [
        Part(
            name="dev",
            seed=1301,
            conversations=170,
            common_first=_names(["en_US"], FIRST),
            rare_first=_names(["en_KE", "es_CL", "fi_FI", "nl_BE", "az_AZ", "sl_SI", "et_EE"], FIRST),
            last=_names(["en_US", "es_CL", "fi_FI", "nl_BE", "en_KE"], LAST) + ["Minh", "Nguyen", "Tran", "Pham"],
            agents=["Sarah", "Mike", "Priya", "Jordan", "Alex"],
            bank=DEV_BANK,
            order_formats=["{D10}", "{D10}", "{D8}", "GC-{D6}"],
            account_formats=["{X10}", "{X10}", "{A3}{D6}"],
            username_formats=["{fi}{l}{n}", "{f}{n}", "{l}{fi}{n}", "{f}_{l}"],
            phone_formats=["({a}) {b}-{c}", "{a}) {b}-{c}", "{a}-{b}-{c}", "{a}{b}{c}"],
            email_domains=["email.com", "gmail.com", "yahoo.com"],
            brands=["Calvin Klein", "Tommy Hilfiger", "Ralph Lauren", "Guess"],
            streets=["Spring Street", "lincoln ave", "Oak St", "Maple Drive", "elm road", "Sunset Blvd", "Main Street"],
            cities=[("Brighton", "CA"), ("Raleigh", "NC"), ("Springfield", "IL"), ("austin", "tx"), ("Denver", "CO")],
        ),
        Part(
            name="holdout",
            seed=7919,
            conversations=110,
            common_first=_names(["en_US"], FIRST),
            rare_first=_names(["en_PK", "tw_GH", "uz_UZ", "ig_NG", "hr_HR", "sk_SK", "lv_LV", "fr_CA"], FIRST),
            last=_names(["en_IE", "en_PK", "uz_UZ", "sk_SK", "fr_CA", "de_AT", "tw_GH"], LAST),
            agents=["Nina", "Omar", "Grace", "Tyler", "Ming"],
            bank=HOLDOUT_BANK,
            order_formats=["{D10}", "{D9}", "{D12}", "W{D8}"],
            account_formats=["{X8}", "{X12}", "CU{D7}"],
            username_formats=["{f}.{l}", "{f}{l}{n}", "{l}_{f}", "{fi}{li}{n}", "{f}{li}{n}"],
            phone_formats=["{a}.{b}.{c}", "+1 {a} {b} {c}", "({a}){b}-{c}", "{a} {b} {c}", "1-{a}-{b}-{c}"],
            email_domains=["outlook.com", "hotmail.com", "icloud.com", "proton.me"],
            brands=["Michael Kors", "Kate Spade", "Vera Wang", "Levi's"],
            streets=["Birch Lane", "harbor way", "Pine Court", "Cedar Ave", "willow st", "Park Place", "river road"],
            cities=[("Portland", "OR"), ("Madison", "WI"), ("tulsa", "ok"), ("Boise", "ID"), ("Fresno", "CA")],
        ),
    ]


def main() -> None:
    lines = []
    messages = {"dev": 0, "holdout": 0}
    for part in parts():
        generator = Generator(part)
        for index in range(part.conversations):
            conversation = generator.conversation()
            messages[part.name] += len(conversation.turns)
            lines.append(
                json.dumps(
                    {"id": f"{part.name}-{index:03d}", "split": part.name, "turns": conversation.turns},
                    ensure_ascii=False,
                )
            )
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(lines)} conversations, {messages} messages")


if __name__ == "__main__":
    main()
