"""What an export includes and how it is written: `ExportOptions`, built from what a user typed."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from collector.export.preference import PREFERENCE_FORMATS
from collector.formats import first_problem
from collector.split import SplitRatios
from core.errors import InputError
from core.models import ReviewDecision, as_utc

ExportFormat = Literal["chat", "prompt-completion", "hf", "dpo", "kto"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)  # the one list, for checks and messages
PREFERENCE_DECISIONS = [ReviewDecision.APPROVED, ReviewDecision.EDITED, ReviewDecision.REJECTED]


class ExportOptions(BaseModel):
    """What to export and how; the CLI, the admin API and the refresh build one of these."""

    format: ExportFormat = "chat"
    out: Path
    since: datetime | None = None  # conversations created at or after
    until: datetime | None = None  # conversations created before
    channels: list[str] = Field(default_factory=list)  # empty: every channel
    decisions: list[ReviewDecision] = Field(default_factory=lambda: [ReviewDecision.APPROVED, ReviewDecision.EDITED])
    redact: bool = True
    dedup: bool = True
    holdout_after: datetime | None = None  # conversations created at or after all go to test
    seed: int = 0
    ratios: SplitRatios = Field(default_factory=SplitRatios)
    near_duplicate_threshold: float | None = Field(None, gt=0, le=1)  # None: the settings' value
    max_macro_copies: int | None = Field(None, ge=1)  # None: the settings' value
    brand_id: int | None = None  # whose conversations; export_dataset sets it from settings.brand (never mixed)

    @field_validator("format", mode="before")
    @classmethod
    def _known_format(cls, value: Any) -> Any:
        if value not in EXPORT_FORMATS:
            raise ValueError(f"unknown format '{value}'; use one of: {', '.join(EXPORT_FORMATS)}")
        return value

    @field_validator("decisions", mode="before")
    @classmethod
    def _known_decisions(cls, value: Any) -> Any:
        known = {decision.value for decision in ReviewDecision}
        for decision in value or []:
            if str(decision) not in known:
                raise ValueError(f"unknown decision '{decision}'; use some of: {', '.join(sorted(known))}")
        if not value:
            raise ValueError("keep at least one decision, e.g. approved,edited")
        return value

    @field_validator("since", "until", "holdout_after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    @model_validator(mode="after")
    def _preference_formats_keep_every_decision(self) -> ExportOptions:
        # dpo / kto learn from edits and rejections too (collector.export.preference); say otherwise to filter
        if self.format in PREFERENCE_FORMATS and "decisions" not in self.model_fields_set:
            self.decisions = list(PREFERENCE_DECISIONS)
        return self

    @model_validator(mode="after")
    def _range_is_sane(self) -> ExportOptions:
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"--since {self.since:%Y-%m-%d %H:%M} is not before --until {self.until:%Y-%m-%d %H:%M}")
        return self


def export_options(**fields: Any) -> ExportOptions:
    """ExportOptions from what a user typed (CLI flags, an API body); a bad value is an InputError saying which."""
    try:
        return ExportOptions(**fields)
    except ValidationError as exc:
        raise InputError(first_problem(exc)) from None
