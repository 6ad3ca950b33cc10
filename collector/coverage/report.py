"""The coverage report: which products and intents the knowledge base and the conversations cover, per split, with
agents' correction rate, and the gaps to close before training ("MegaGadget: 3 conversations, 0 in training").

"In training" is either exact or the export's rule before de-duplication:
- given an export folder (`--export DIR`, or the refresh's own export), per-split counts come from its records:
  what training saw, after redaction and de-duplication;
- otherwise the store's conversations are split as the export splits them (the key `channel/external_id` and
  `collector.split.assign_split` with the export's seed, ratios and time hold-out), counting those the export would
  keep (no pending draft, at least one kept reply: `collector.export`'s own reader decides). De-duplication is not
  applied there, so a repetitive store (like the sample) has fewer conversations in a real export.
The correction rate is `collector.stats.VersionStats.correction_rate` over the topic's reviews.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, computed_field
from sqlalchemy import func, select
from sqlmodel import Session

from collector.coverage.export_counts import count_export
from collector.coverage.gaps import CoverageThresholds, TopicCoverage, TopicTally, topic_gaps
from collector.export import ExportOptions
from collector.export.exchanges import build_exchanges
from collector.export.reading import stored_conversations
from collector.knowledge.store import of_brand, product_names
from collector.knowledge.topics import DEFAULT_INTENTS, NO_INTENT, NO_PRODUCT, ProductMatcher, intent_classifier
from collector.split import SPLITS, assign_split
from collector.stats import BASE_LABEL, is_live_review
from core.knowledge_models import KnowledgeChunk, KnowledgeDocument
from core.models import Role
from core.settings import Settings

ALL_VERSIONS = "all versions"


class CoverageReport(BaseModel):
    """Everything `housestyle coverage` prints; also JSON for the dashboard and the refresh's record."""

    created_at: datetime
    version: str | None  # whose drafts' reviews count; None: every version's
    include_imported: bool
    thresholds: CoverageThresholds
    export_options: dict[str, Any]  # seed, ratios, hold-out, filters: the export the split counts stand for
    export_dir: str | None  # split counts read from this export; None: the split rule, before de-duplication
    intents_table: dict[str, list[str]]  # the intent keywords used (routing classifies messages with the same)
    documents: int
    passages: int
    conversations: int
    splits: dict[str, int]  # exportable conversations per split
    products: list[TopicCoverage]  # the knowledge base's products, then "(no product)"
    intents: list[TopicCoverage]  # the intent table's intents, then "other"

    @computed_field
    @property
    def gaps(self) -> list[str]:
        """One line per product or intent not learned, products first."""
        return [line for topic in [*self.products, *self.intents] if (line := topic.gap_line())]

    @property
    def product_names(self) -> list[str]:
        return [topic.name for topic in self.products if topic.name != NO_PRODUCT]

    def product(self, name: str) -> TopicCoverage | None:
        return next((topic for topic in self.products if topic.name.casefold() == name.casefold()), None)

    def intent(self, name: str) -> TopicCoverage | None:
        return next((topic for topic in self.intents if topic.name == name), None)

    def summary(self) -> str:
        """The report as `housestyle coverage` prints it."""
        splits = " / ".join(f"{name} {self.splits.get(name, 0)}" for name in SPLITS)
        whose = f"drafts of {self.version}" if self.version else "drafts of every version"
        whose += ", imported history included" if self.include_imported else ", live reviews only"
        lines = [
            f"knowledge base: {self.documents} documents, {self.passages} passages, {len(self.product_names)} products",
            f"conversations: {self.conversations}",
            (
                f"in export {self.export_dir}: {splits}"
                if self.export_dir
                else f"the export would keep (split rule, before de-duplication): {splits}"
            ),
            f"correction rate: {whose}",
            "",
        ]
        for heading, topics in (("product", self.products), ("intent", self.intents)):
            lines.append(_row(heading, "passages", "conversations", "train", "valid", "test", "reviews", "corrected"))
            for topic in topics:
                rate = f"{topic.correction_rate:.0%}" if topic.reviews.reviews else "-"
                lines.append(
                    _row(
                        topic.name,
                        topic.passages,
                        topic.conversations,
                        *(topic.splits.get(s, 0) for s in SPLITS),
                        topic.reviews.reviews,
                        rate,
                    )
                )
            lines.append("")
        if self.gaps:
            lines.append(f"gaps before training ({self.thresholds.describe()}):")
            lines += [f"  {gap}" for gap in self.gaps]
        else:
            lines.append(f"no gaps: {self.thresholds.describe()}, and every product and intent has that")
        return "\n".join(lines)


def _row(name: Any, *cells: Any) -> str:
    return f"{str(name):<16}" + "".join(f"{str(cell):>14}" for cell in cells)


def coverage_report(
    session: Session,
    *,
    options: ExportOptions | None = None,
    export_dir: Path | None = None,
    version: str | None = None,
    include_imported: bool = False,
    settings: Settings,
) -> CoverageReport:
    """Coverage of the store's conversations and knowledge base, for the export `options` would make (default: the
    refresh's: seed 0, 80/10/10, approved+edited replies).

    `export_dir`: read the per-split counts from that export (chat or hf format) instead of the split rule.
    `version`: count only that adapter version's drafts for correction rates (`"base"`: the base model's);
    `include_imported`: also count reviews that came with imported history (left out by default, as in stats).
    """
    options = options or ExportOptions(out=Path("."))
    thresholds = CoverageThresholds.from_settings(settings)
    intents_table = settings.coverage_intents or DEFAULT_INTENTS
    classifier = intent_classifier(intents_table)
    products = product_names(session, settings.brand)  # another brand's private products stay its own
    matcher = ProductMatcher(products)
    kept = {decision.value for decision in options.decisions}

    product_tallies: dict[str, TopicTally] = defaultdict(TopicTally)
    intent_tallies: dict[str, TopicTally] = defaultdict(TopicTally)
    totals: Counter[str] = Counter()
    conversations = 0
    for chunk in stored_conversations(session.connection(), options, redacted=False):
        for stored in chunk:
            conversations += 1
            reviewed = [
                (outcome.decision, float(outcome.edit_distance or 0.0))
                for outcome in stored.drafts.values()
                if outcome.decision is not None
                and (include_imported or is_live_review(outcome.agent_id))
                and (version is None or (outcome.adapter_version or BASE_LABEL) == version)
            ]
            exchanges = build_exchanges(stored.turns, stored.drafts, kept, Counter())
            split = None
            if isinstance(exchanges, list) and exchanges:
                split = assign_split_like_export(stored.key, stored.created_at, options)
                totals[split] += 1
            texts = [turn.content or "" for turn in stored.turns]
            customer = [turn.content or "" for turn in stored.turns if turn.role == Role.USER.value]
            named = matcher.find("\n".join(texts)) or [NO_PRODUCT]
            intents = list(dict.fromkeys(i for text in customer if (i := classifier.classify(text)))) or [NO_INTENT]
            counted = split if export_dir is None else None
            for name in named:
                product_tallies[name].add(counted, reviewed)
            for name in intents:
                intent_tallies[name].add(counted, reviewed)
    if export_dir is not None:
        totals = count_export(Path(export_dir), matcher, classifier, product_tallies, intent_tallies)

    chunk_rows = session.execute(
        select(KnowledgeChunk.title, KnowledgeChunk.text)
        .join(KnowledgeDocument, KnowledgeDocument.id == KnowledgeChunk.document_id)
        .where(of_brand(settings.brand))
    ).all()
    product_passages: Counter[str] = Counter()
    intent_passages: Counter[str] = Counter()
    for title, text in chunk_rows:
        product_passages.update(matcher.find(f"{title}\n{text}"))
        intent_passages.update(classifier.scores(f"{title}\n{text}").keys())
    label = version or ALL_VERSIONS
    return CoverageReport(
        created_at=datetime.now(UTC),
        version=version,
        include_imported=include_imported,
        thresholds=thresholds,
        export_dir=str(export_dir) if export_dir is not None else None,
        export_options=options.model_dump(
            mode="json", include={"seed", "ratios", "holdout_after", "since", "until", "channels", "decisions"}
        ),
        intents_table={name: list(keywords) for name, keywords in intents_table.items()},
        documents=session.execute(
            select(func.count(KnowledgeDocument.id)).where(of_brand(settings.brand))
        ).scalar_one(),
        passages=len(chunk_rows),
        conversations=conversations,
        splits={split: totals.get(split, 0) for split in SPLITS},
        products=[
            product_tallies[name].topic(name, product_passages[name], label, thresholds, True) for name in products
        ]
        + [product_tallies[NO_PRODUCT].topic(NO_PRODUCT, 0, label, thresholds, False)],
        intents=[
            intent_tallies[name].topic(name, intent_passages[name], label, thresholds, True) for name in intents_table
        ]
        + [intent_tallies[NO_INTENT].topic(NO_INTENT, 0, label, thresholds, False)],
    )


def assign_split_like_export(key: str, created_at: datetime | None, options: ExportOptions) -> str:
    """The split the export gives this conversation (collector.split.assign_split, the export's options)."""
    return assign_split(key, options.seed, options.ratios, created_at=created_at, holdout_after=options.holdout_after)


__all__ = [
    "ALL_VERSIONS",
    "CoverageReport",
    "CoverageThresholds",
    "TopicCoverage",
    "assign_split_like_export",
    "coverage_report",
    "topic_gaps",
]
