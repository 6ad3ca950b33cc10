"""The bundled GadgetCorp sample data set (see README.md in this folder for how it was made)."""

from pathlib import Path

SAMPLE_PATH = Path(__file__).parent / "gadgetcorp.jsonl"

# A fixed set of customer questions with GadgetCorp's canonical answers, none of them in the sample's training
# conversations (the acceptance question "My SuperWidget is dead." first): a refresh's candidate must not regress
# on it. Made once with make_sample.build_records(seed + 7), keeping one new phrasing per canonical reply.
GOLDEN_PATH = Path(__file__).parent / "golden.jsonl"

# A second brand for multi-brand set-ups: GadgetCorp's business desk, the same products in a formal voice
# (make_business.py writes it).
BUSINESS_SAMPLE_PATH = Path(__file__).parent / "gadgetcorp_business.jsonl"
