"""Product knowledge for grounded replies: documents, retrieval, and what drafts and training data are grounded on.

    store             add_document / list_documents / remove_document, the knowledge revision, the GadgetCorp files
    retrieval         retrieve(), ground() for a conversation, grounded_system_prompt(), a draft's Grounding
    export_grounding  the passages each exported exchange carries (`collector.export` reads them)
    topics            the product names and support intents a message is about
    cli               `housestyle knowledge add|list|remove|search`

Tables live in `core.knowledge_models`; importing this package registers them on SQLModel.metadata. The coverage
report and routing on it are `collector.coverage`, above this package and `collector.export`: nothing here imports
either.
"""

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
    "Grounding",
    "Passage",
    "add_document",
    "conversation_query",
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
    "training_grounding",
]
