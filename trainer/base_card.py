"""The card every base HouseStyle builds carries (housestyle_base.json), and writing a base folder whole.

The card says which model the folder holds, which training preset fits it (so `housestyle train` and the refresh
need no --preset), and checksums of where it came from and of the weights written, so a rebuild can tell that the
folder already holds exactly this base.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from core.errors import ConflictError, InputError

CARD_NAME = "housestyle_base.json"


class BaseCard(BaseModel):
    model: str  # what `housestyle base build --model` was given: tiny, smollm2
    preset: str  # the training preset that fits this base
    source: str  # where the weights came from (a package and version, or "pre-trained here")
    source_sha256: str | None = None  # of the packaged file converted, when there is one
    weights_sha256: str  # trainer.model_loading.weights_hash of the folder as written


def read_card(folder: Path) -> BaseCard | None:
    """The folder's card, or None for a base HouseStyle did not build (a hub model, your own checkpoint)."""
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        return None
    try:
        return BaseCard.model_validate_json(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path} is not a base card ({str(exc).splitlines()[0]}); rebuild the base with "
                         "`housestyle base build`") from None


def write_card(folder: Path, card: BaseCard) -> None:
    (Path(folder) / CARD_NAME).write_text(card.model_dump_json(indent=2) + "\n")


def already_built(out: Path, model: str) -> bool:
    """True when `out` holds this very base (its card names `model` and its weights match the card's hash)."""
    from trainer.model_loading import weights_hash

    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return False
    card = read_card(out)
    if card is not None and card.model == model and weights_hash(out) == card.weights_sha256:
        return True
    raise ConflictError(f"{out} already exists and is not a {model} base built by HouseStyle; choose a new --out "
                        "or delete it")


def ensure_free(out: Path) -> None:
    """Refuse to build into a folder that holds anything (checked before the work, and again at the end)."""
    if Path(out).exists() and any(Path(out).iterdir()):
        raise ConflictError(f"{out} already exists and is not empty; choose a new --out or delete it")


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` to write into, renamed to `out` on success and deleted on any failure."""
    out = Path(out)
    ensure_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a base is read by vLLM and other users too
    try:
        yield staging
        ensure_free(out)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
