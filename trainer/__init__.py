"""Trainer: builds base models, fine-tunes LoRA adapters on collected conversations, evaluates them."""

import os
import sys

# torch's OpenMP threads spin while they wait for work. On a busy machine a spinning thread takes the core from the
# one doing the work: on 2 shared cores, 2 spinning threads trained SmolLM2 at 24 tokens/s against 59 for one
# thread, and 82 once idle threads sleep (OMP_WAIT_POLICY=PASSIVE; bench/train_memory.py). libgomp reads the
# variable once, when torch loads, so it is set here, before any trainer module imports torch, unless you set it.
_CHOSEN_BY_USER = "OMP_WAIT_POLICY" in os.environ
if not _CHOSEN_BY_USER and "torch" not in sys.modules:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
IDLE_THREADS_SLEEP = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" and (
    _CHOSEN_BY_USER or "torch" not in sys.modules
)
