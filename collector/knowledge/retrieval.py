"""Retrieval from the knowledge base: the best passages for a query, and for the next reply of a conversation.

`retrieve` searches the store's index (`index`); `ground` turns a conversation into a query and the passages that fit
the prompt (`prompt_block` renders them the same way for training and serving); `training_grounding` gives a
training example the passages its draft was served with (`draft_groundings`). The passage and grounding models live
in `passages`; all of these are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlmodel import Session

from collector.knowledge.draft_groundings import groundings_for, passages_by_id, record_grounding
from collector.knowledge.index import KnowledgeIndex, knowledge_index, recent_index, tokenize
from collector.knowledge.passages import Grounding, Passage
from collector.knowledge.prompt_block import KNOWLEDGE_HEADER, fit_passages, grounded_system_prompt, render_knowledge
from core import db
from core.settings import Settings

CUSTOMER = "user"


def retrieve(
    store: Session | str,
    query: str,
    *,
    k: int | None = None,
    brand: str | None = None,
    min_score: float | None = None,
    settings: Settings,
) -> list[Passage]:
    """The best passages for `query`, best first. `store`: an open session or a store URL.

    `k` and `min_score` default to HOUSESTYLE_KNOWLEDGE_TOP_K and HOUSESTYLE_KNOWLEDGE_MIN_SCORE; `brand` limits
    the search to that brand's documents and the shared ones (None: every document).
    """
    k = settings.knowledge_top_k if k is None else k
    min_score = settings.knowledge_min_score if min_score is None else min_score
    if isinstance(store, Session):
        return knowledge_index(store, settings).search(query, k=k, brand=brand, min_score=min_score)
    with db.session_scope(store) as session:
        return knowledge_index(session, settings).search(query, k=k, brand=brand, min_score=min_score)


# --- from a conversation to a grounded prompt --------------------------------------------------------------------------


def conversation_query(turns: Iterable[tuple[str, str]], *, customer_turns: int = 3) -> str:
    """The retrieval query for the next reply: the customer's last `customer_turns` turns, oldest first.

    `turns` are (role, text) as the prompt builder takes them; earlier turns keep the product in the query when the
    latest message is "that didn't help".
    """
    said = [text.strip() for role, text in turns if str(role) == CUSTOMER and text and text.strip()]
    return "\n".join(said[-customer_turns:])


def ground(
    store: Session | str,
    turns: Iterable[tuple[str, str]],
    *,
    brand: str | None = None,
    settings: Settings,
) -> Grounding:
    """Retrieve for the next reply of a conversation, within the settings' k, score floor and prompt size.

    Empty (no passages) when HOUSESTYLE_KNOWLEDGE_GROUNDING is off, the knowledge base is empty, or nothing matches.
    """
    query = conversation_query(turns, customer_turns=settings.knowledge_query_turns)
    if not settings.knowledge_grounding or not query:
        return Grounding(revision=0, query=query)
    if isinstance(store, Session):
        return _grounding(knowledge_index(store, settings), query, brand, settings)
    with db.session_scope(store) as session:
        return _grounding(knowledge_index(session, settings), query, brand, settings)


def ground_from_memory(
    url: str, turns: Iterable[tuple[str, str]], *, brand: str | None = None, settings: Settings, max_age_s: float
) -> Grounding | None:
    """`ground` without a store read, when this process read the store's knowledge revision less than `max_age_s`
    ago (a change made in this process is seen at once, one made by another within `max_age_s`); None when it did
    not: then call `ground`. Cheap enough for the event loop (BM25 over the bundled 38 passages: ~0.1 ms)."""
    query = conversation_query(turns, customer_turns=settings.knowledge_query_turns)
    if not settings.knowledge_grounding or not query:
        return Grounding(revision=0, query=query)
    index = recent_index(url, settings, max_age_s)
    return None if index is None else _grounding(index, query, brand, settings)


def _grounding(index: KnowledgeIndex, query: str, brand: str | None, settings: Settings) -> Grounding:
    found = index.search(query, k=settings.knowledge_top_k, brand=brand, min_score=settings.knowledge_min_score)
    return Grounding(revision=index.revision, query=query,
                     passages=fit_passages(found, settings.knowledge_max_prompt_chars))


def training_grounding(
    session: Session,
    turns: Sequence[tuple[str, str]],
    *,
    recorded: Grounding | None = None,
    brand: str | None = None,
    settings: Settings,
) -> Grounding:
    """The passages a training example's reply gets: those its draft was served with (`recorded`, texts as the
    store has them now, removed ones left out), else what retrieval finds now (imported history, agents' own
    replies). `turns` end with the customer turn(s) the reply answered.
    """
    if recorded is not None and recorded.passages:
        scores = {passage.id: passage.score for passage in recorded.passages}
        current = passages_by_id(session, recorded.passage_ids)
        return recorded.model_copy(update={"passages": [p.model_copy(update={"score": scores[p.id]}) for p in current]})
    return ground(session, turns, brand=brand, settings=settings)


__all__ = [
    "CUSTOMER",
    "KNOWLEDGE_HEADER",
    "Grounding",
    "KnowledgeIndex",
    "Passage",
    "conversation_query",
    "fit_passages",
    "ground",
    "ground_from_memory",
    "grounded_system_prompt",
    "groundings_for",
    "knowledge_index",
    "passages_by_id",
    "record_grounding",
    "render_knowledge",
    "retrieve",
    "tokenize",
    "training_grounding",
]
