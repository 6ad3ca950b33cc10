"""Cutting a loaded document into passages of at most N words that never cross a heading, titled by heading path.

The chunker is our own (a few lines: pack a section's blocks up to N words) because the kept splitters come inside
whole RAG frameworks.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from collector.knowledge.documents import LoadedDocument

TITLE_JOINER = " › "
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class ChunkText(NamedTuple):
    title: str
    text: str


def _split_long(block: str, max_words: int) -> list[str]:
    """A block over `max_words`: cut at sentence ends, and a sentence still too long at word boundaries."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(block):
        words = sentence.split()
        pieces += [" ".join(words[start : start + max_words]) for start in range(0, len(words), max_words)]
    return pieces


def chunk_document(document: LoadedDocument, max_words: int) -> list[ChunkText]:
    """Passages of at most `max_words` words (a single longer sentence is cut), never across a heading."""
    chunks: list[ChunkText] = []
    for section in document.sections:
        headings = section.headings
        if document.kind != "faq" and headings and headings[0] == document.title and len(headings) > 1:
            headings = headings[1:]  # the document's own title says nothing about one section
        title = TITLE_JOINER.join(headings) or document.title
        blocks: list[str] = []
        for block in section.blocks:
            blocks += _split_long(block, max_words) if len(block.split()) > max_words else [block]
        current: list[str] = []
        words = 0
        for block in blocks:
            size = len(block.split())
            if current and words + size > max_words:
                chunks.append(ChunkText(title, "\n".join(current)))
                current, words = [], 0
            current.append(block)
            words += size
        if current:
            chunks.append(ChunkText(title, "\n".join(current)))
    return chunks
