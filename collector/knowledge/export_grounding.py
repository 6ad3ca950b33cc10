"""Training examples get the passages their agent saw: each exported exchange carries its reply's knowledge passages.

A reply drafted by the service gets the passages its draft was served with (`DraftGrounding`, texts as the store has
them now); an agent's own reply or imported history gets what retrieval finds now for the customer turns before it.
The export's renderer (`collector.export.render`) puts them into the system prompt through the one prompt builder,
so a training example's prompt is the prompt the service builds for the same turns.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlmodel import Session

from collector.knowledge.draft_groundings import groundings_for
from collector.knowledge.retrieval import training_grounding
from core.knowledge_models import KnowledgeChunk
from core.prompts import ASSISTANT, USER
from core.settings import Settings

Attach = Callable[[list[list], list[int | None]], None]


def export_grounder(session: Session, settings: Settings) -> Attach | None:
    """A function that appends to each exchange ([customer, reply]) its passages as [[title, text], ...]; None when
    grounding is off (HOUSESTYLE_KNOWLEDGE_GROUNDING) or the knowledge base is empty, so such exports stay as they
    were. `replied_by`: the draft behind each exchange's reply (None: written by an agent)."""
    if not settings.knowledge_grounding:
        return None
    if not session.execute(select(func.count(KnowledgeChunk.id))).scalar_one():
        return None

    def attach(exchanges: list[list], replied_by: list[int | None]) -> None:
        recorded = groundings_for(session, [draft_id for draft_id in replied_by if draft_id is not None])
        turns: list[tuple[str, str]] = []
        for exchange, draft_id in zip(exchanges, replied_by, strict=True):
            turns.append((USER, exchange[0]))
            grounding = training_grounding(
                session, turns, recorded=recorded.get(draft_id) if draft_id is not None else None,
                brand=settings.brand, settings=settings,  # an export is one brand's: its documents and the shared
            )
            exchange.append([[passage.title, passage.text] for passage in grounding.passages])
            turns.append((ASSISTANT, exchange[1]))

    return attach
