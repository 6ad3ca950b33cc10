"""Routing by coverage: should auto mode hand this customer message to an agent because its topic is not learned?

A pure decision over a `CoverageReport` (computed once, e.g. at each refresh, with the live version's reviews) and
the conversation's customer turns: the message's products and intent are found the way the report found them
(the report's product names and intent keywords), falling back to the earlier turns when the message names none
("that didn't help" in a MegaGadget conversation is still about the MegaGadget). Any of those topics with a gap
sends the message to an agent, as in assist mode, with the gaps as the reason the console shows.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from collector.coverage.gaps import TopicCoverage
from collector.coverage.report import CoverageReport
from collector.knowledge.topics import ProductMatcher, intent_classifier


class RouteDecision(BaseModel):
    """Whether auto mode should let an agent answer first, and why (for the console)."""

    to_agent: bool
    reason: str | None = None  # e.g. "not learned yet: MegaGadget: 3 conversations, 0 in training (need 5)"
    products: list[str] = []
    intent: str | None = None


def route_by_coverage(report: CoverageReport, message: str, *, earlier: Sequence[str] = ()) -> RouteDecision:
    """Decide for `message` (the customer's latest text); `earlier`: their previous turns, oldest first."""
    matcher = ProductMatcher(report.product_names)
    classifier = intent_classifier(report.intents_table)
    history = [message, *reversed(earlier)]  # latest first: the most recent mention wins
    products = next((found for text in history if (found := matcher.find(text))), [])
    intent = next((found for text in history if (found := classifier.classify(text))), None)
    topics: list[TopicCoverage] = [topic for name in products if (topic := report.product(name)) is not None]
    if intent is not None and (topic := report.intent(intent)) is not None:
        topics.append(topic)
    gaps = [line for topic in topics if (line := topic.gap_line())]
    return RouteDecision(
        to_agent=bool(gaps),
        reason="not learned yet: " + " | ".join(gaps) if gaps else None,
        products=products,
        intent=intent,
    )
