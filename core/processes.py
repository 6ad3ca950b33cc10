"""Whether a process of this machine still runs: the one answer lock holders and the serve control file rely on."""

from __future__ import annotations

import os


def stat_state(stat: bytes) -> bytes | None:
    """The state letter of a `/proc/<pid>/stat` line (b"R", b"S", b"Z"...), or None if the line is not one.

    The command name in parentheses may itself hold spaces and ')', so the state is read after the last ')'."""
    fields = stat.rsplit(b")", 1)[1].split() if b")" in stat else []
    return fields[0] if fields else None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat_state(stat.read())
    except OSError:
        return True  # no /proc here: trust kill(0)
    return state != b"Z"
