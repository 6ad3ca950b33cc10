"""The seal on a backup: `<backup>.seal.json` beside the file `housestyle db backup` wrote, naming its kind, schema
revision, size and sha256, signed with HMAC-SHA256 under this installation's backup key (`HOUSESTYLE_HOME/backup.key`,
32 random bytes, mode 0600, made by the first backup).

A restore verifies the seal before it reads the file (issue 28: a restore trusts nothing): a file somebody else made,
or a backup changed after it was written, does not carry a seal this key verifies. A checksum alone would not do:
whoever doctors the file can recompute it; without the key they cannot sign it. Restoring on another host needs the
key copied along with the backup (keep it apart from the backups, as you would a password).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from core.checksums import sha256_file
from core.errors import InputError

KEY_FILE = "backup.key"
KEY_BYTES = 32
SEAL_FORMAT = "housestyle-backup-seal/1"
UNSEALED = "restore only files `housestyle db backup` wrote, or add --trust-unsealed to go on the file checks alone"


class Seal(BaseModel):
    """What a seal vouches for; `signature` is the HMAC of the other fields as canonical JSON."""

    format: Literal["housestyle-backup-seal/1"] = SEAL_FORMAT
    kind: str  # sqlite | postgres
    revision: str
    bytes: int
    sha256: str
    signature: str = ""

    def signed_text(self) -> bytes:
        return json.dumps(self.model_dump(exclude={"signature"}), sort_keys=True, separators=(",", ":")).encode()


def seal_path(backup: Path) -> Path:
    return backup.with_name(backup.name + ".seal.json")


def backup_key(home: Path, *, create: bool) -> bytes | None:
    """This installation's backup key; made (0600) when `create` and missing, else None when missing."""
    path = Path(home) / KEY_FILE
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            pass  # another backup made it just now
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    if not path.is_file():
        return None
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise InputError(f"{path} is not a backup key ({KEY_BYTES * 2} hex digits); put back the one your backups "
                         "were sealed with")
    return key


def _sign(seal: Seal, key: bytes) -> str:
    return hmac.new(key, seal.signed_text(), hashlib.sha256).hexdigest()


def write_seal(backup: Path, *, kind: str, revision: str, key: bytes) -> Path:
    """Sign what `backup` holds; the seal is written whole (0600, temp file + rename)."""
    seal = Seal(kind=kind, revision=revision, bytes=backup.stat().st_size, sha256=sha256_file(backup))
    seal.signature = _sign(seal, key)
    path = seal_path(backup)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(seal.model_dump_json(indent=2) + "\n")
    os.replace(temporary, path)
    return path


def check_seal(backup: Path, *, kind: str, key: bytes | None) -> Seal:
    """The seal of `backup`, verified against `key` and the file's bytes; InputError naming the fix otherwise."""
    path = seal_path(backup)
    if key is None:
        raise InputError(f"no backup key at HOUSESTYLE_HOME/{KEY_FILE} to verify the seal of {backup.name}: copy there "
                         "the key of the installation that made the backup, or add --trust-unsealed to go on the "
                         "file checks alone")
    if not path.is_file():
        raise InputError(f"{backup} has no seal ({path.name} beside it): {UNSEALED}")
    try:
        seal = Seal.model_validate_json(path.read_text())
    except (ValidationError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a backup seal ({type(exc).__name__}): {UNSEALED}") from None
    if not hmac.compare_digest(seal.signature, _sign(seal, key)):
        raise InputError(f"{path}'s signature does not verify with this installation's backup key (the seal was "
                         f"made elsewhere or changed): {UNSEALED}")
    if seal.kind != kind or seal.bytes != backup.stat().st_size or seal.sha256 != sha256_file(backup):
        raise InputError(f"{backup} is not the file its seal vouches for (changed after the backup): {UNSEALED}")
    return seal
