"""The admin's store totals: conversations by channel, drafts by decision, overall and per adapter version."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import Session

from collector.models import Conversation
from collector.stats import BASE_LABEL, version_stats
from plugin.schemas import StatsOut, VersionStats

DECISIONS = ("pending", "approved", "edited", "rejected")


def store_stats(session: Session) -> StatsOut:
    """Every draft counts here, imported history and drafts still waiting for an agent included."""
    by_channel = dict(
        session.execute(select(Conversation.channel, func.count(Conversation.id)).group_by(Conversation.channel)).all()
    )
    per_version = [
        VersionStats(
            adapter_version=None if row.version == BASE_LABEL else row.version,
            drafts=row.reviews + row.pending,
            pending=row.pending,
            approved=row.approved,
            edited=row.edited,
            rejected=row.rejected,
        )
        for row in version_stats(session, include_imported=True, include_pending=True)
    ]
    return StatsOut(
        conversations=sum(by_channel.values()),
        conversations_by_channel=by_channel,
        drafts=sum(row.drafts for row in per_version),
        drafts_by_decision={decision: sum(getattr(row, decision) for row in per_version) for decision in DECISIONS},
        per_adapter_version=sorted(per_version, key=lambda row: row.adapter_version or ""),
    )
