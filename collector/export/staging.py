"""Writing an export safely: build it in a temporary folder beside the target, swap it in only when complete."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.files import PRIVATE_FOLDER, make_private


def prepare_target(out: Path) -> Path:
    """Check `out` can take an export; return the temporary folder to build it in (beside `out`)."""
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder path (it will hold train/validation/test + manifest.json)")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise InputError(
            f"--out {out} is a folder with other files in it; give a new or empty folder (an earlier export is replaced)"
        )
    try:
        out.parent.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:8]}"
        staging.mkdir(mode=PRIVATE_FOLDER)
    except OSError as exc:
        raise InputError(f"cannot write an export beside {out}: {exc.strerror}; pick a writable folder") from None
    return staging


def publish(staging: Path, out: Path) -> None:
    """Swap the finished export into place (private: files 0600, folders 0700); an earlier export is removed only
    once the new one is there."""
    make_private(staging)
    previous = None
    if out.exists():
        previous = out.parent / f".{out.name}.previous-{uuid.uuid4().hex[:8]}"
        os.replace(out, previous)
    try:
        os.replace(staging, out)
    except OSError:
        if previous is not None:
            os.replace(previous, out)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def save_hf(staging: Path, jsonl: dict[str, Path], features: Any = None, *, keep_jsonl: bool = False) -> None:
    """The records as a DatasetDict in staging/hf, built from the split files without holding them in memory.

    `features`: the columns (default: chat `messages`); `keep_jsonl`: leave the split files beside it."""
    from datasets import Dataset, DatasetDict, Features, Value, disable_progress_bars

    disable_progress_bars()
    features = features or Features({"messages": [{"role": Value("string"), "content": Value("string")}]})
    cache = staging / ".hf-cache"
    splits = {}
    for name, path in jsonl.items():
        if path.stat().st_size:
            splits[name] = Dataset.from_json(str(path), features=features, cache_dir=str(cache), keep_in_memory=False)
        else:
            splits[name] = Dataset.from_dict({column: [] for column in features}, features=features)
    # an empty split would be saved as zero shards, which load_from_disk cannot read back: ask for one shard
    empty = {name: 1 for name, split in splits.items() if len(split) == 0}
    DatasetDict(splits).save_to_disk(str(staging / "hf"), num_shards=empty or None)
    # save_to_disk copies the data; the cache and the intermediate files are no longer needed
    for split in splits.values():
        split.cleanup_cache_files()
    shutil.rmtree(cache, ignore_errors=True)
    if not keep_jsonl:
        for path in jsonl.values():
            path.unlink()
