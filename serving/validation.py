"""Checks an adapter folder before any replica loads it: files, base model, rank, target modules, checksums."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from core.adapter_manifest import MANIFEST_NAME, AdapterFiles
from core.checksums import sha256_file
from serving.errors import AdapterRejectedError

REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
# Linear layers vLLM's LoRA layers can wrap in a Llama-style decoder (vLLM packs q/k/v and gate/up itself).
SUPPORTED_TARGET_MODULES = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj", "up_proj", "down_proj", "gate_up_proj"}
)


class PeftAdapterConfig(BaseModel):
    """The fields of PEFT's `adapter_config.json` that decide whether vLLM can serve the adapter."""

    model_config = {"extra": "ignore"}

    base_model_name_or_path: str | None = None
    peft_type: str = "LORA"
    r: int
    target_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None


class ValidatedAdapter(BaseModel):
    path: str
    rank: int
    target_modules: list[str]


def same_base_model(declared: str, served: str) -> bool:
    """True when an adapter's declared base is the served base: equal resolved paths, or equal hub ids."""
    if declared == served:
        return True
    declared_path, served_path = Path(declared).expanduser(), Path(served).expanduser()
    if declared_path.exists() and served_path.exists():
        return declared_path.resolve() == served_path.resolve()
    # a hub id against a local snapshot of it: "org/name" matches ".../org/name" or ".../models--org--name/..."
    short = declared.strip("/")
    return served.rstrip("/").endswith("/" + short) or f"models--{short.replace('/', '--')}" in served


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterRejectedError(f"{what} {path} is unreadable ({exc}); retrain the adapter") from None


def validate_adapter(path: str | Path, *, served_base_model: str | None, max_lora_rank: int) -> ValidatedAdapter:
    """Refuse (AdapterRejectedError, with the reason and the fix) any adapter vLLM would fail on or serve wrongly."""
    folder = Path(path)
    if not folder.is_dir():
        raise AdapterRejectedError(f"adapter folder {folder} does not exist; was it moved or deleted?")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise AdapterRejectedError(f"adapter {folder} lacks {', '.join(missing)}; save it with peft's save_pretrained")
    try:
        config = PeftAdapterConfig.model_validate(_read_json(folder / "adapter_config.json", "adapter config"))
    except ValidationError as exc:
        raise AdapterRejectedError(f"adapter config in {folder} is not a PEFT LoRA config: {exc.errors()[0]['msg']}") from None
    if config.peft_type.upper() != "LORA":
        raise AdapterRejectedError(f"adapter {folder} is {config.peft_type}, not LoRA; vLLM serves LoRA adapters only")
    if served_base_model and config.base_model_name_or_path and not same_base_model(
        config.base_model_name_or_path, served_base_model
    ):
        raise AdapterRejectedError(
            f"adapter {folder} was trained on {config.base_model_name_or_path} but vLLM serves {served_base_model}; "
            "retrain it on the served base or point HOUSESTYLE_BASE_MODEL at its base"
        )
    if config.r > max_lora_rank:
        raise AdapterRejectedError(
            f"adapter {folder} has rank {config.r} above the served max_lora_rank {max_lora_rank}; "
            "raise HOUSESTYLE_MAX_LORA_RANK and restart serving, or retrain with a lower rank"
        )
    targets = [config.target_modules] if isinstance(config.target_modules, str) else list(config.target_modules or [])
    unsupported = sorted(set(targets) - SUPPORTED_TARGET_MODULES)
    if unsupported:
        raise AdapterRejectedError(
            f"adapter {folder} targets {', '.join(unsupported)}, which vLLM cannot apply LoRA to; "
            f"retrain targeting only {', '.join(sorted(SUPPORTED_TARGET_MODULES))}"
        )
    if config.modules_to_save:
        raise AdapterRejectedError(f"adapter {folder} has modules_to_save, which vLLM cannot serve; retrain without them")
    _check_manifest(folder)
    return ValidatedAdapter(path=str(folder.resolve()), rank=config.r, target_modules=targets)


def _check_manifest(folder: Path) -> None:
    """Adapter folders are immutable: every file the trainer listed must still have the same sha256."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise AdapterRejectedError(f"adapter {folder} has no {MANIFEST_NAME}; register adapters through the trainer")
    try:
        manifest = AdapterFiles.model_validate(_read_json(manifest_path, "manifest"))
    except ValidationError:
        raise AdapterRejectedError(f"{manifest_path} has no 'files' checksums; retrain the adapter") from None
    for name in REQUIRED_FILES:
        if name not in manifest.files:
            raise AdapterRejectedError(f"{manifest_path} does not list {name}; retrain the adapter")
    for name, expected in manifest.files.items():
        file = folder / name
        if not file.is_file():
            raise AdapterRejectedError(f"adapter {folder} lost {name} since training; restore it or retrain")
        if sha256_file(file) != expected:
            raise AdapterRejectedError(
                f"adapter file {file} changed since training (checksum mismatch); adapter folders are immutable, "
                "restore it or retrain to a new version"
            )
