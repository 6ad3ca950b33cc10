"""A retrieved passage, and a draft's Grounding: which passages its prompt carried, with what score, from which
revision (stored as JSON without the texts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Passage(BaseModel):
    """A retrieved passage: a knowledge chunk with its document and its score for the query (BM25; with an
    embedding model, the reciprocal-rank-fusion score of BM25 and cosine)."""

    model_config = {"frozen": True}

    id: int  # KnowledgeChunk.id
    document_id: int
    document: str  # the document's name (its file name unless given another)
    title: str  # heading path within the document
    text: str
    score: float


class Grounding(BaseModel):
    """What one draft's prompt was grounded on. Stored as JSON without passage texts:

    {"revision": 7, "query": "How long is the MegaGadget battery covered?",
     "passages": [{"id": 12, "document_id": 1, "document": "gadgetcorp_products.md",
                   "title": "MegaGadget › MegaGadget warranty", "score": 7.91}]}
    """

    revision: int  # the knowledge revision retrieval ran against
    query: str
    passages: list[Passage] = Field(default_factory=list)

    @property
    def passage_ids(self) -> list[int]:
        return [passage.id for passage in self.passages]

    def to_record(self) -> dict[str, Any]:
        """The JSON a draft keeps (texts left out: the draft's prompt already holds them, the store has the rest)."""
        return self.model_dump(mode="json", exclude={"passages": {"__all__": {"text"}}})

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Grounding:
        passages = [Passage(text="", **passage) for passage in record.get("passages", [])]
        return cls(revision=record.get("revision", 0), query=record.get("query", ""), passages=passages)
