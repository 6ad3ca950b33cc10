"""Deterministic train/validation/test assignment by conversation, never by turn, with an optional hold-out by time."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")


class SplitRatios(BaseModel):
    """Shares of conversations per split; they must add up to 1."""

    train: float = Field(0.8, ge=0, le=1)
    validation: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _add_up_to_one(self) -> SplitRatios:
        if abs(self.train + self.validation + self.test - 1) > 1e-6:
            raise ValueError(
                f"split ratios must add up to 1, got {self.train} + {self.validation} + {self.test}; adjust one of them"
            )
        return self


def conversation_bucket(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by the conversation's key and the seed: the same on every run and machine."""
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_split(
    key: str,
    seed: int,
    ratios: SplitRatios,
    *,
    created_at: datetime | None = None,
    holdout_after: datetime | None = None,
) -> SplitName:
    """The split of one conversation. Conversations at or after `holdout_after` all go to test (a time hold-out)."""
    if holdout_after is not None and created_at is not None and created_at >= holdout_after:
        return "test"
    bucket = conversation_bucket(key, seed)
    if bucket < ratios.train:
        return "train"
    if bucket < ratios.train + ratios.validation:
        return "validation"
    return "test"
