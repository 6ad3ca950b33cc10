"""Exposure of a canary (Carlini et al., "The Secret Sharer", 2019): how high a model ranks it among its alternatives.

A canary is a sentence with a random secret; its alternatives are the same sentence with other secrets drawn the
same way. The model scores each by its loss (negative log-likelihood); a model that memorised the canary gives it
a lower loss than nearly all alternatives. With R the canary and its alternatives,

    exposure = log2 |R| - log2 rank(canary)        (rank 1: the lowest loss of all)

so a canary the model knows nothing about sits at rank ~|R|/2 (expected exposure ~log2 e = 1.44 bits over many
canaries) and one it has memorised at rank 1 (exposure log2 |R|, the most this sample can show). Carlini's
extrapolation fits a skew-normal to the alternatives' losses and reads the canary's tail probability from it, which
estimates exposures beyond log2 |R| without scoring the whole secret space.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

ROUND = 4  # bits: enough for a report, stable across platforms' last float digits


def canary_rank(canary_loss: float, alternative_losses: Sequence[float]) -> int:
    """1 + the alternatives scored at least as likely as the canary; ties go against the canary, so a model that
    scores everything alike shows no exposure."""
    return 1 + sum(loss <= canary_loss for loss in alternative_losses)


def rank_exposure(canary_loss: float, alternative_losses: Sequence[float]) -> float:
    """log2 |R| - log2 rank, with R the canary and its alternatives; 0 (last) .. log2 |R| (first)."""
    if not alternative_losses:
        raise ValueError("exposure needs at least one alternative to rank the canary against")
    candidates = len(alternative_losses) + 1
    return round(math.log2(candidates) - math.log2(canary_rank(canary_loss, alternative_losses)), ROUND)


def extrapolated_exposure(canary_loss: float, alternative_losses: Sequence[float], cap_bits: float) -> float:
    """-log2 P(an alternative's loss <= the canary's) under a skew-normal fitted to the alternatives' losses,
    at most `cap_bits` (the size of the secret space: no canary can be rarer than one of all its secrets)."""
    from scipy.stats import skewnorm

    if len(alternative_losses) < 3 or statistics.pstdev(alternative_losses) == 0:
        return 0.0  # nothing to fit: the alternatives are all alike, so the model tells nothing apart
    shape, location, scale = skewnorm.fit(list(alternative_losses))
    tail = float(skewnorm.cdf(canary_loss, shape, location, scale))
    return round(min(cap_bits, -math.log2(max(tail, 2.0 ** -cap_bits))), ROUND)


def mean_by_repetitions(exposures: Sequence[tuple[int, float]]) -> dict[int, float]:
    """(repetitions, exposure) pairs -> the mean exposure per repetition count (0: canaries never planted)."""
    grouped: dict[int, list[float]] = {}
    for repetitions, exposure in exposures:
        grouped.setdefault(repetitions, []).append(exposure)
    return {count: round(statistics.fmean(values), ROUND) for count, values in sorted(grouped.items())}
