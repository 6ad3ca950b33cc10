"""Counts over the store for the admin stats route and the metrics: conversations, drafts by decision and version."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import Session

from collector.models import Conversation, Draft, DraftStatus, Review
from plugin.schemas import StatsOut, VersionStats

DECISIONS = ("pending", "approved", "edited", "rejected")


def decision_counts(session: Session) -> dict[tuple[str | None, str], int]:
    """(adapter version, decision or "pending") -> number of drafts; reviewed drafts count under their decision."""
    rows = session.execute(
        select(Draft.adapter_version, Draft.status, Review.decision, func.count(Draft.id))
        .select_from(Draft)
        .join(Review, Review.draft_id == Draft.id, isouter=True)
        .group_by(Draft.adapter_version, Draft.status, Review.decision)
    ).all()
    counts: dict[tuple[str | None, str], int] = {}
    for version, status, decision, count in rows:
        key = (version, "pending" if status == DraftStatus.PENDING or decision is None else str(decision))
        counts[key] = counts.get(key, 0) + count
    return counts


def store_stats(session: Session) -> StatsOut:
    by_channel = dict(
        session.execute(select(Conversation.channel, func.count(Conversation.id)).group_by(Conversation.channel)).all()
    )
    per_version: dict[str | None, dict[str, int]] = {}
    totals = dict.fromkeys(DECISIONS, 0)
    for (version, decision), count in decision_counts(session).items():
        per_version.setdefault(version, dict.fromkeys(DECISIONS, 0))[decision] += count
        totals[decision] += count
    return StatsOut(
        conversations=sum(by_channel.values()),
        conversations_by_channel=by_channel,
        drafts=sum(totals.values()),
        drafts_by_decision=totals,
        per_adapter_version=[
            VersionStats(adapter_version=version, drafts=sum(counts.values()), **counts)
            for version, counts in sorted(per_version.items(), key=lambda item: item[0] or "")
        ],
    )
