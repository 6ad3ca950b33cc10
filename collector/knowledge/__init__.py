"""Product knowledge for grounded replies, the coverage report, and routing what the live version has not learned.

    store       add_document / list_documents / remove_document, the knowledge revision, the bundled GadgetCorp files
    retrieval   retrieve(), ground() for a conversation, grounded_system_prompt(), what a draft records (Grounding)
    coverage    coverage_report(): products and intents per split, correction rates, gaps before training
    routing     route_by_coverage(): should auto mode hand this message to an agent, and why
    cli         `housestyle knowledge add|list|remove|search` and `housestyle coverage`

Tables live in `core.knowledge_models`; importing this package registers them on SQLModel.metadata.
"""

from collector.knowledge.coverage import CoverageReport, CoverageThresholds, TopicCoverage, coverage_report
from collector.knowledge.retrieval import (
    Grounding,
    Passage,
    conversation_query,
    ground,
    ground_from_memory,
    grounded_system_prompt,
    groundings_for,
    passages_by_id,
    record_grounding,
    render_knowledge,
    retrieve,
    training_grounding,
)
from collector.knowledge.routing import RouteDecision, route_by_coverage
from collector.knowledge.store import (
    FAQ_PATH,
    PRODUCT_SHEET_PATH,
    QUESTIONS_PATH,
    SAMPLE_DOCUMENTS,
    add_document,
    current_revision,
    list_documents,
    remove_document,
)
from core import knowledge_models as models  # noqa: F401  (registers the tables)

__all__ = [
    "FAQ_PATH",
    "PRODUCT_SHEET_PATH",
    "QUESTIONS_PATH",
    "SAMPLE_DOCUMENTS",
    "CoverageReport",
    "CoverageThresholds",
    "Grounding",
    "Passage",
    "RouteDecision",
    "TopicCoverage",
    "add_document",
    "conversation_query",
    "coverage_report",
    "current_revision",
    "ground",
    "ground_from_memory",
    "grounded_system_prompt",
    "groundings_for",
    "list_documents",
    "passages_by_id",
    "record_grounding",
    "remove_document",
    "render_knowledge",
    "retrieve",
    "route_by_coverage",
    "training_grounding",
]
