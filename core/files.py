"""Files HouseStyle writes hold customers' words: readable by their owner only (files 0600, folders 0700)."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077  # new files 0600 and folders 0700, whatever the shell's umask
PRIVATE_FILE, PRIVATE_FOLDER = 0o600, 0o700


def keep_files_private() -> int:
    """Make every file this process (and its children) creates from now on private; returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def make_private(path: Path) -> None:
    """`path` and everything under it: folders 0700, files 0600 (links are left alone)."""
    path = Path(path)
    if path.is_symlink():
        return
    if not path.is_dir():
        path.chmod(PRIVATE_FILE)
        return
    path.chmod(PRIVATE_FOLDER)
    for root, folders, files in os.walk(path):
        for name in folders:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), PRIVATE_FOLDER)
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), PRIVATE_FILE)
