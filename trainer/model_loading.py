"""Finding and loading base models and adapters: local folders or hub ids, hashed so lineage is checkable."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from core.adapter_manifest import MANIFEST_NAME, read_manifest
from core.errors import InputError

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def resolve_base(base: str | Path) -> Path:
    """The local folder of a base model: the path itself, or the hub snapshot of a model id (downloaded if needed)."""
    text = str(base)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{path} is not a model folder (no config.json); build one with `housestyle base build`")
        return path.resolve()
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") != 1:
        raise InputError(f"base model {text} does not exist; build one with `housestyle base build --out {text}`")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]))
    except Exception as exc:  # the hub client raises many kinds; all mean "this id cannot be used"
        raise InputError(f"base model {text} is neither a folder nor downloadable from the hub ({type(exc).__name__}); "
                         "pass a local model folder") from None


def weights_hash(folder: Path) -> str:
    """sha256 over the model's weight files (name and content), so an adapter names exactly the base it needs."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{folder} holds no weight files (*.safetensors); is it a complete model folder?")
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_tokenizer(base: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(base: Path, device: torch.device) -> torch.nn.Module:
    """The base model in bf16 on GPUs, fp32 on CPU, with SDPA attention."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    # SDPA: fused attention kernels (flash / memory-efficient) on CPU and GPU, no T x T weights kept per head
    return AutoModelForCausalLM.from_pretrained(base, dtype=dtype, attn_implementation="sdpa").to(device)


def load_with_adapter(base: Path, adapter: Path | None, device: torch.device) -> torch.nn.Module:
    """The base model, with the adapter applied when one is given; refuses an adapter trained on another base."""
    model = load_model(base, device)
    if adapter is None:
        return model
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise InputError(f"{adapter} is not an adapter folder (no adapter_config.json); train one with `housestyle train`")
    expected = read_manifest(adapter).get("base_model_hash")
    if expected and expected != weights_hash(base):
        raise InputError(f"adapter {adapter} was trained on another base model than {base}; pass the --base it was "
                         f"trained on (see base_model in its {MANIFEST_NAME})")
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter).to(device).eval()
    except RuntimeError as exc:  # shape mismatches when the base differs
        raise InputError(f"adapter {adapter} does not fit base model {base}: {str(exc).splitlines()[0]}") from None
