"""The bundled GadgetCorp sample data set (see README.md in this folder for how it was made)."""

from pathlib import Path

SAMPLE_PATH = Path(__file__).parent / "gadgetcorp.jsonl"
