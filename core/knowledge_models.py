"""The knowledge base's tables: documents, their chunks, the revision that invalidates indexes, drafts' passages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.models import utcnow


class KnowledgeDocument(SQLModel, table=True):
    """One file added with `housestyle knowledge add`: a product sheet, an FAQ, a help page."""

    # AUTOINCREMENT on SQLite too: ids are never reused, so a draft's recorded passage ids never point at new text
    __table_args__ = (UniqueConstraint("brand", "name"), {"sqlite_autoincrement": True})

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=300)  # what `knowledge list` shows and `remove` takes: the file name by default
    title: str = Field(sa_column=Column(Text, nullable=False))  # the document's own title (front matter, <title>, # h1)
    kind: str = Field(max_length=20)  # markdown, html, text, faq
    brand: str = Field(default="", max_length=100)  # "": shared by every brand
    products: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # names it declares
    source_path: str | None = Field(default=None, sa_column=Column(Text))
    content_sha256: str = Field(max_length=64)
    chars: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class KnowledgeChunk(SQLModel, table=True):
    """A passage retrieval can return: one section of a document (or a part of a long one), or one FAQ entry."""

    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="knowledgedocument.id", index=True, ondelete="CASCADE")
    position: int  # order within the document
    title: str = Field(sa_column=Column(Text, nullable=False))  # heading path, e.g. "MegaGadget › MegaGadget warranty"
    text: str = Field(sa_column=Column(Text, nullable=False))


class KnowledgeRevision(SQLModel, table=True):
    """One row whose counter goes up with every add or remove, so each process knows when its index is stale."""

    id: int = Field(default=1, primary_key=True)
    revision: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class DraftGrounding(SQLModel, table=True):
    """Which passages a draft's prompt carried (the `Grounding` JSON), for the console and for training later."""

    draft_id: int = Field(foreign_key="draft.id", primary_key=True, ondelete="CASCADE")
    grounding: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
