"""Word-level diff between an assistant draft and the text an agent sent, for reviewers and the review API."""

from __future__ import annotations

from difflib import SequenceMatcher

from plugin.api.schemas import DiffOp


def word_diff(before: str, after: str) -> list[DiffOp]:
    """Runs of equal, inserted, deleted and replaced words turning `before` into `after`."""
    old, new = before.split(), after.split()
    matcher = SequenceMatcher(a=old, b=new, autojunk=False)
    return [
        DiffOp(op=tag, before=" ".join(old[i1:i2]), after=" ".join(new[j1:j2]))  # type: ignore[arg-type]
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
    ]
