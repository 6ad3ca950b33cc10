"""Reading one knowledge file (Markdown, HTML, plain text, JSONL FAQ) into a LoadedDocument: its kind, its products.

Products are declared by the document itself: Markdown front matter `products: [SuperWidget, MegaGadget]`, an HTML
`<meta name="products" content="SuperWidget, MegaGadget">`, an FAQ line's `"product"`, or `knowledge add --product`.
The parsing is in `parsers`, the model in `documents`, the cutting into passages in `chunking` (re-exported here).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from collector.knowledge.chunking import TITLE_JOINER, ChunkText, chunk_document
from collector.knowledge.documents import DocumentKind, LoadedDocument, Section, clean, unique
from collector.knowledge.parsers import FaqEntry, load_faq, load_html, load_markdown, load_text
from core.errors import InputError

KINDS: dict[str, DocumentKind] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
    ".text": "text",
    ".jsonl": "faq",
}


def _names(value: Any, where: str) -> list[str]:
    """Product names from a list or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InputError(f"{where}: products must be a list of names or a comma-separated string")
    return [clean(item) for item in value if clean(item)]


def kind_of(path: Path, kind: str | None = None) -> DocumentKind:
    if kind is not None:
        if kind not in KINDS.values():
            raise InputError(f"unknown kind '{kind}'; use one of: markdown, html, text, faq")
        return kind  # type: ignore[return-value]
    found = KINDS.get(path.suffix.lower())
    if found is None:
        raise InputError(
            f"{path}: cannot tell what kind of document this is from '{path.suffix or 'no extension'}'; use .md, "
            ".html, .txt or .jsonl (FAQ), or say --kind markdown|html|text|faq"
        )
    return found


def unstorable(text: str) -> str | None:
    """What keeps `text` out of every store (a NUL, a lone surrogate), or None when it can be kept."""
    if "\x00" in text:
        return "a NUL character (is it a binary file?)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "an unpaired surrogate (not valid Unicode text)"
    return None


def load_document(path: Path, *, kind: str | None = None, max_bytes: int | None = None) -> LoadedDocument:
    """Parse one file into a LoadedDocument; InputError (one line naming the fix) if it cannot be used.
    `max_bytes`: refuse a bigger file (HOUSESTYLE_KNOWLEDGE_MAX_FILE_MB)."""
    found = kind_of(path, kind)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes and not path.is_dir():
            raise InputError(f"{path} is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:g} MB a knowledge file may "
                             "be (HOUSESTYLE_KNOWLEDGE_MAX_FILE_MB); split it into smaller files")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; give the path of a Markdown, HTML, text or JSONL FAQ file") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder; give a file, or add the folder's files one by one") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if found == "html":
        title, meta, sections = load_html(data, path)
        products = _names(meta.get("products"), str(path))
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text; save it as UTF-8 and add it again") from None
        if found == "markdown":
            title, meta, sections = load_markdown(text, path)
            products = _names(meta.get("products"), str(path))
            title = clean(str(meta["title"])) if meta.get("title") else title
        elif found == "faq":
            title, meta = None, {}
            products, sections = load_faq(text, path)
        else:
            title, meta, sections = None, {}, load_text(text)
            products = []
    sections = [section for section in sections if section.blocks]
    for section in sections:
        if problem := next(filter(None, map(unstorable, [*section.headings, *section.blocks])), None):
            raise InputError(f"{path} contains {problem}; remove it and add the file again")
    if not sections:
        raise InputError(f"{path} has no text to add; check it is the file you meant")
    brand = clean(str(meta["brand"])) if meta.get("brand") else None
    return LoadedDocument(
        title=title or path.stem,
        kind=found,
        products=unique(products),
        brand=brand,
        sections=sections,
        content_sha256=hashlib.sha256(data).hexdigest(),
    )


__all__ = [
    "KINDS",
    "TITLE_JOINER",
    "ChunkText",
    "DocumentKind",
    "FaqEntry",
    "LoadedDocument",
    "Section",
    "chunk_document",
    "clean",
    "kind_of",
    "load_document",
    "load_faq",
    "load_html",
    "load_markdown",
    "load_text",
    "unique",
]
