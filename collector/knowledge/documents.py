"""What a knowledge file becomes once read: its kind, title, products and titled sections of plain-text blocks."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

DocumentKind = Literal["markdown", "html", "text", "faq"]
_SPACE = re.compile(r"\s+")


class Section(BaseModel):
    """A heading path and the text blocks (paragraphs, list items, table rows) under it, in order."""

    headings: list[str] = Field(default_factory=list)
    blocks: list[str] = Field(default_factory=list)


class LoadedDocument(BaseModel):
    """A parsed file, ready to be chunked and stored."""

    title: str
    kind: DocumentKind
    products: list[str] = Field(default_factory=list)
    brand: str | None = None
    sections: list[Section]
    content_sha256: str  # of the file's bytes: adding the same file again changes nothing

    @property
    def chars(self) -> int:
        return sum(len(block) for section in self.sections for block in section.blocks)


def clean(text: str) -> str:
    """One line of plain text: whitespace runs become one space."""
    return _SPACE.sub(" ", text).strip()


def unique(names: list[str]) -> list[str]:
    """Names in first-seen order, each once (case-insensitively)."""
    seen: set[str] = set()
    kept = []
    for name in names:
        if name.casefold() not in seen:
            seen.add(name.casefold())
            kept.append(name)
    return kept
