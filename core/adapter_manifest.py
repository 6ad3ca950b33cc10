"""`housestyle_manifest.json`, the trainer-to-serving contract: an adapter's origin, metrics and file checksums."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.checksums import sha256_file

MANIFEST_NAME = "housestyle_manifest.json"


class AdapterFiles(BaseModel):
    """The part serving relies on: the sha256 of every file in the folder (adapter folders are immutable)."""

    model_config = {"extra": "ignore"}

    files: dict[str, str]  # adapter file name -> sha256


class AdapterManifest(AdapterFiles):
    """Everything the trainer records about an adapter it registers."""

    version: str  # the registry's version id, e.g. v0003-1a2b3c4d
    base_model: str  # the path or hub id given as --base
    base_model_path: str  # where the base's files were
    base_model_hash: str  # sha256 over the base's weight files
    dataset: str
    dataset_hash: str  # the export manifest's content hash
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    adapter_hash: str  # sha256 over `files`; the version id's suffix
    code_version: str
    world_size: int
    training_run_id: int | None
    created_at: datetime


def hash_adapter_files(folder: Path) -> dict[str, str]:
    """sha256 of every file of an adapter folder except the manifest itself."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_NAME}


def combined_hash(files: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{name}:{digest}\n" for name, digest in sorted(files.items())).encode()).hexdigest()


def write_manifest(folder: Path, manifest: AdapterFiles) -> None:
    (folder / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The raw manifest of an adapter folder, {} when it has none (an adapter from elsewhere)."""
    path = Path(folder) / MANIFEST_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    version = importlib.metadata.version("housestyle")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+{commit}" if commit else version
