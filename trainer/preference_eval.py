"""Scoring a version on held-out review outcomes: how far its reply is from what the agent finally sent.

The offline twin of the online edit rate: for each held-out pair of a `housestyle export --format dpo` (a draft an
agent changed, and what the agent sent instead), the version answers the same prompt and its reply is compared
with the agent's text by `core.changes.edit_distance` (the distance the recorder stores for every review).
Beside it, the distance of the draft the agent actually saw: a version below that line needs fewer corrections
than the drafts that produced the data. Preference accuracy is the share of pairs whose chosen reply the version
gives a higher log-probability than the rejected one (`trainer.preference.preference_margins`).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.changes import edit_distance
from core.errors import InputError
from core.settings import Settings
from trainer.generate import LoadedModels, ReplyGenerator, TransformersReplies
from trainer.preference import load_preference_export, preference_margins


class PreferenceScores(BaseModel):
    """One version on the held-out preference pairs."""

    version: str
    method: str  # what trained it: base, sft, dpo, kto
    pairs: int
    edit_distance: float  # mean, the version's reply -> the agent's final text (0 unchanged .. 1)
    draft_edit_distance: float  # mean, the draft the agent saw -> the agent's final text
    preference_accuracy: float  # share of pairs with log p(chosen) > log p(rejected)
    mean_margin: float  # mean log p(chosen) - log p(rejected), nats

    def line(self) -> str:
        """One line for people (the demo, the refresh log)."""
        return (f"{self.method} ({self.version}): held-out edit distance {self.edit_distance:.3f} "
                f"(drafts agents saw: {self.draft_edit_distance:.3f}), preference accuracy "
                f"{self.preference_accuracy:.0%} on {self.pairs} pairs")


def held_out_pairs(data: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The held-out rows of a dpo export (test, else validation), the first `limit` of them."""
    splits = load_preference_export(data, "dpo")
    rows = splits.get("test") or splits.get("validation") or []
    if not rows:
        raise InputError(f"the dpo export in {data} has no held-out pairs; export more reviews or a larger test share")
    return rows[:limit] if limit else rows


def summarise(version: str, method: str, replies: list[str], pairs: list[dict[str, Any]],
              margins: list[float]) -> PreferenceScores:
    """The scores of one version from its replies to the pairs' prompts and its margins on them."""
    finals = [row["chosen"][0]["content"] for row in pairs]
    drafts = [row["rejected"][0]["content"] for row in pairs]
    return PreferenceScores(
        version=version, method=method, pairs=len(pairs),
        edit_distance=statistics.fmean(edit_distance(reply, final) for reply, final in zip(replies, finals, strict=True)),
        draft_edit_distance=statistics.fmean(edit_distance(draft, final) for draft, final in zip(drafts, finals)),
        preference_accuracy=sum(margin > 0 for margin in margins) / len(margins),
        mean_margin=statistics.fmean(margins),
    )


def score_preference(
    base: str | Path, adapter: str | Path | None, version: str, method: str, data: str | Path, *,
    settings: Settings, limit: int | None = None, max_new_tokens: int = 96, generator: ReplyGenerator | None = None,
    models: LoadedModels | None = None,
) -> PreferenceScores:
    """`version` (`adapter`, or the base when None) on the held-out pairs of the dpo export `data`.

    Replies come from `generator` (default: transformers in this process); margins from the transformers model.
    """
    pairs = held_out_pairs(data, limit)
    models = models or LoadedModels(base, settings)
    generator = generator or TransformersReplies(models)
    adapter = Path(adapter) if adapter else None
    replies = generator.replies([row["prompt"] for row in pairs], adapter=adapter, max_new_tokens=max_new_tokens)
    loaded = models.get(adapter)
    margins = preference_margins(loaded.model, loaded.tokenizer, pairs)
    return summarise(version, method, replies, pairs, margins)
