"""Coverage: which products and intents the knowledge base and the training data cover, and routing on the gaps.

    gaps            one topic's coverage (TopicCoverage), the HOUSESTYLE_COVERAGE_* thresholds, why it is not learned
    report          coverage_report(): products and intents per split, correction rates, gaps before training
    export_counts   the per-split counts read from an export folder (what training saw)
    routing         route_by_coverage(): should auto mode hand this message to an agent, and why
    handoff         the live version's report (cached) for auto mode and the dashboard; what a refresh records
    cli             `housestyle coverage`

Above `collector.knowledge` (products, intent keywords) and `collector.export` (its split rule and reader); neither
imports this package.
"""

from collector.coverage.gaps import CoverageThresholds, TopicCoverage, topic_gaps
from collector.coverage.handoff import LiveCoverage, coverage_handoff, live_coverage, refresh_coverage
from collector.coverage.report import CoverageReport, coverage_report
from collector.coverage.routing import RouteDecision, route_by_coverage

__all__ = [
    "CoverageReport",
    "CoverageThresholds",
    "LiveCoverage",
    "RouteDecision",
    "TopicCoverage",
    "coverage_handoff",
    "coverage_report",
    "live_coverage",
    "refresh_coverage",
    "route_by_coverage",
    "topic_gaps",
]
