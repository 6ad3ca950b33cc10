"""One topic's coverage (a product or an intent): its running tally, its counts per split and reviews, and the
gaps (against HOUSESTYLE_COVERAGE_* thresholds) that mean it is not learned."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field, computed_field

from collector.split import SPLITS
from collector.stats import VersionStats
from core.settings import Settings


class CoverageThresholds(BaseModel):
    """When a product or intent counts as not learned (HOUSESTYLE_COVERAGE_*)."""

    min_training_conversations: int = 5
    max_correction_rate: float = 0.5
    min_reviews: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> CoverageThresholds:
        return cls(
            min_training_conversations=settings.coverage_min_training_conversations,
            max_correction_rate=settings.coverage_max_correction_rate,
            min_reviews=settings.coverage_min_reviews,
        )

    def describe(self) -> str:
        return (
            f"a topic needs {self.min_training_conversations} training conversations, and once it has "
            f"{self.min_reviews} reviews a correction rate of at most {self.max_correction_rate:.0%}"
        )


class TopicCoverage(BaseModel):
    """One product or intent: in the knowledge base, in the conversations, per split, and how agents treated drafts."""

    name: str
    passages: int  # knowledge-base passages on it
    conversations: int  # every conversation on it, exportable or not
    splits: dict[str, int]  # exportable conversations per split (train / validation / test)
    reviews: VersionStats  # its drafts' reviews (label: the version asked for, or "all versions")
    gaps: list[str] = Field(default_factory=list)  # why it counts as not learned; empty: learned

    @computed_field
    @property
    def training_conversations(self) -> int:
        return self.splits.get("train", 0)

    @computed_field
    @property
    def correction_rate(self) -> float:
        return self.reviews.correction_rate

    @property
    def learned(self) -> bool:
        return not self.gaps

    def gap_line(self) -> str | None:
        return f"{self.name}: " + "; ".join(self.gaps) if self.gaps else None


def topic_gaps(topic: TopicCoverage, thresholds: CoverageThresholds) -> list[str]:
    """Why a topic counts as not learned: too few training conversations, or agents correct its drafts too often."""
    gaps = []
    if topic.training_conversations < thresholds.min_training_conversations:
        gaps.append(
            f"{topic.conversations} conversation{'s' * (topic.conversations != 1)}, {topic.training_conversations} in "
            f"training (need {thresholds.min_training_conversations})"
        )
    if topic.reviews.reviews >= thresholds.min_reviews and topic.correction_rate > thresholds.max_correction_rate:
        gaps.append(
            f"correction rate {topic.correction_rate:.0%} over {topic.reviews.reviews} reviews "
            f"(limit {thresholds.max_correction_rate:.0%})"
        )
    return gaps


class TopicTally:
    """Running counts for one topic."""

    def __init__(self) -> None:
        self.conversations = 0
        self.splits: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()
        self.distance = 0.0

    def add(self, split: str | None, decisions: list[tuple[str, float]]) -> None:
        self.conversations += 1
        if split is not None:
            self.splits[split] += 1
        self.review(decisions)

    def review(self, decisions: list[tuple[str, float]]) -> None:
        for decision, distance in decisions:
            self.decisions[decision] += 1
            self.distance += distance

    def topic(
        self, name: str, passages: int, label: str, thresholds: CoverageThresholds, judged: bool
    ) -> TopicCoverage:
        reviews = sum(self.decisions.values())
        topic = TopicCoverage(
            name=name,
            passages=passages,
            conversations=self.conversations,
            splits={split: self.splits.get(split, 0) for split in SPLITS},
            reviews=VersionStats(
                version=label,
                reviews=reviews,
                approved=self.decisions["approved"],
                edited=self.decisions["edited"],
                rejected=self.decisions["rejected"],
                mean_edit_distance=self.distance / reviews if reviews else 0.0,
            ),
        )
        if judged:  # "(no product)" and "other" are not topics a message can be routed on
            topic.gaps = topic_gaps(topic, thresholds)
        return topic
