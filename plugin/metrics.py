"""Prometheus metrics of the service: requests, latency, tokens, drafts by decision per adapter version, and
replicas caught serving other weights than a version's fingerprint."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from collector.stats import BASE_LABEL, DRAFT_OUTCOMES, version_stats
from core.db import session_scope
from core.models import ReviewDecision


class DraftDecisionCollector(Collector):
    """Drafts per adapter version and decision, read from the store at scrape time so restarts lose nothing."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "housestyle_drafts",
            "Assistant drafts by review decision and adapter version",
            labels=["adapter_version", "decision"],
        )
        rate = GaugeMetricFamily(
            "housestyle_correction_rate",
            "Share of live-reviewed drafts agents edited or rejected, per adapter version (what rollback acts on)",
            labels=["adapter_version"],
        )
        with session_scope(self.database_url) as session:
            for row in version_stats(session, include_imported=True, include_pending=True):
                for outcome in DRAFT_OUTCOMES:
                    if count := getattr(row, outcome):
                        family.add_metric([row.version, outcome], count)
            for row in version_stats(session):
                rate.add_metric([row.version], row.correction_rate)
        yield family
        yield rate


class FingerprintCollector(Collector):
    """Fingerprint mismatches per version and replica, read from the gateway's count (`serving.fingerprint`)."""

    def __init__(self, mismatches: Mapping[tuple[str, str], int]) -> None:
        self.mismatches = mismatches

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "housestyle_fingerprint_mismatches",
            "Times a vLLM replica began answering the probe set unlike an adapter version's recorded fingerprint "
            "(other weights under its name): the swap was refused or the replica taken out of the pool",
            labels=["adapter_version", "replica"],
        )
        for (version, replica), count in sorted(dict(self.mismatches).items()):
            family.add_metric([version, replica], count)
        yield family


class ServiceMetrics:
    """The metrics one app instance exports, on its own registry (several apps can live in one test process)."""

    def __init__(self, database_url: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "housestyle_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "housestyle_http_request_seconds",
            "Time to answer a request (streams: until the last byte)",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.tokens = Counter(
            "housestyle_tokens", "Tokens through the model", ["kind", "adapter_version"], registry=self.registry
        )
        self.generations = Counter(
            "housestyle_generations", "Replies generated", ["channel", "adapter_version"], registry=self.registry
        )
        self.reviews = Counter(
            "housestyle_reviews",
            "Agent reviews recorded by this process",
            ["decision", "adapter_version"],
            registry=self.registry,
        )
        self.redraft_backlog = Gauge(
            "housestyle_redraft_backlog",
            "Conversations whose customer message still waits for a reply after the redrafter's last pass",
            registry=self.registry,
        )
        self.registry.register(DraftDecisionCollector(database_url))

    def watch_fingerprints(self, mismatches: Mapping[tuple[str, str], int]) -> None:
        """Export the gateway's fingerprint mismatch counts (`ServingGateway.fingerprints.mismatches`)."""
        self.registry.register(FingerprintCollector(mismatches))

    def count_tokens(self, version: str | None, prompt: int, completion: int) -> None:
        label = version or BASE_LABEL
        self.tokens.labels("prompt", label).inc(prompt)
        self.tokens.labels("completion", label).inc(completion)

    def count_reply(self, channel: str, version: str | None, usage: Mapping[str, int] | None) -> None:
        """One generated reply on a channel, and its tokens when the model reported them."""
        self.generations.labels(channel, version or BASE_LABEL).inc()
        if usage is not None:
            self.count_tokens(version, usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)

    def count_review(self, decision: ReviewDecision | str, adapter_version: str | None) -> None:
        """One agent review of a draft, whoever recorded it (the review queue, a platform connector)."""
        self.reviews.labels(ReviewDecision(decision).value, adapter_version or BASE_LABEL).inc()
