"""Writes the second bundled brand, GadgetCorp's business desk (gadgetcorp_business.jsonl), from templates and a seed.

The same products and questions as the consumer sample, answered in another voice: formal, "we" for the desk, an
account manager, invoices and purchase orders, and the sign-off "Kind regards, the GadgetCorp Business Desk." Two
brands trained on the two files answer one question in two recognisably different voices.
Run `python -m collector.sample.make_business` to rewrite it, `--check` to verify the committed file is current.
Every text below was written by the HouseStyle team; no real customer data is involved.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta

from collector.formats import HouseStyleRecord
from collector.sample import BUSINESS_SAMPLE_PATH

SEED = 4242
START = datetime(2026, 2, 1, tzinfo=UTC)
AGENTS = ["maria", "tomas", "yuki"]
GREETING = "Thank you for contacting the GadgetCorp Business Desk."
SIGN_OFF = "Kind regards, the GadgetCorp Business Desk."
HELD_OUT = "SuperWidget is dead"  # the brands test asks "My SuperWidget is dead.": never in the set

PRODUCTS = ["SuperWidget", "MegaGadget", "NanoCharger", "UltraHub"]
ANSWERS = {
    "power": "Please connect the {p} to another outlet and confirm its power switch is fully engaged; should it "
             "still not start, your account manager will arrange a replacement unit the same day.",
    "shipping": "Your {p} order is on its way; the tracking number and the delivery note are in your business "
                "portal under Orders.",
    "invoice": "The invoice for your {p} order is available in your business portal under Billing, with VAT shown "
               "separately.",
    "bulk": "Orders of 25 or more {p} units receive 12% off list price; your account manager will send a quotation "
            "within one business day.",
}
QUESTIONS = {
    "power": ["My {p} won't turn on.", "our {p} does not power up anymore", "The {p} we bought is not switching on",
              "{p} stopped working, no lights at all", "hi, the {p} on my desk won't start", "My {p} is not working."],
    "shipping": ["Where is our {p} order?", "has the {p} shipment left yet", "We are still waiting for the {p} units.",
                 "when will the {p} delivery arrive?", "our {p} order is late"],
    "invoice": ["I need the invoice for the {p} order.", "can you send me a VAT invoice for the {p}s",
                "Where do I find the bill for our {p} purchase?", "accounting needs the {p} invoice"],
    "bulk": ["Do you give a discount on 30 {p} units?", "what is the price for a bulk order of {p}s",
             "We want to order 50 {p} for the office.", "volume pricing for the {p}?"],
}


def reply(issue: str, product: str) -> str:
    return f"{GREETING} {ANSWERS[issue].format(p=product)} {SIGN_OFF}"


def build_records(seed: int = SEED) -> list[dict]:
    """Every (product, issue, phrasing) once, in a seeded order, with drafts the desk edited into its voice."""
    rng = random.Random(seed)
    cases = [(issue, product, question.format(p=product))
             for issue, questions in QUESTIONS.items() for product in PRODUCTS for question in questions]
    rng.shuffle(cases)
    records = []
    for index, (issue, product, question) in enumerate(cases, 1):
        decision = rng.choice(["edited", "edited", "approved"])
        answer = reply(issue, product)
        message = {"role": "assistant", "content": answer, "decision": decision, "agent_id": rng.choice(AGENTS),
                   "draft": answer if decision == "approved" else f"Sorry about the {product}, please try again."}
        record = {"external_id": f"gcb-{index:04d}", "channel": "web", "customer_ref": None,
                  "created_at": (START + timedelta(hours=7 * index)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "messages": [{"role": "user", "content": question}, message]}
        HouseStyleRecord.model_validate(record)
        assert HELD_OUT not in question
        records.append(record)
    return records


def render(records: list[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def main(argv: list[str]) -> int:
    text = render(build_records())
    if "--check" in argv:
        current = BUSINESS_SAMPLE_PATH.read_text() == text
        print(f"{BUSINESS_SAMPLE_PATH.name} is {'current' if current else 'OUT OF DATE: run make_business'}")
        return 0 if current else 1
    BUSINESS_SAMPLE_PATH.write_text(text)
    print(f"wrote {BUSINESS_SAMPLE_PATH} ({text.count(chr(10))} conversations)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
