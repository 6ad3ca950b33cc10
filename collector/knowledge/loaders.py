"""Reading knowledge files (Markdown, HTML, plain text, JSONL FAQ) into titled sections, and cutting them into passages.

Each loader keeps a document's own structure: a passage never crosses a heading, and its title is the heading path
("MegaGadget › MegaGadget warranty"), so a short passage still says what it is about. Products are declared by the
document itself: Markdown front matter `products: [SuperWidget, MegaGadget]`, an HTML
`<meta name="products" content="SuperWidget, MegaGadget">`, an FAQ line's `"product"`, or `knowledge add --product`.
The chunker is our own (a few lines: pack a section's blocks up to N words) because the kept splitters come inside
whole RAG frameworks; the parsing is markdown-it-py, lxml and PyYAML.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from collector.errors import InputError

DocumentKind = Literal["markdown", "html", "text", "faq"]
KINDS: dict[str, DocumentKind] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
    ".text": "text",
    ".jsonl": "faq",
}
TITLE_JOINER = " › "
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)


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


class ChunkText(NamedTuple):
    title: str
    text: str


def clean(text: str) -> str:
    """One line of plain text: whitespace runs become one space."""
    return _SPACE.sub(" ", text).strip()


def _names(value: Any, where: str) -> list[str]:
    """Product names from a list or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InputError(f"{where}: products must be a list of names or a comma-separated string")
    return [clean(item) for item in value if clean(item)]


def unique(names: list[str]) -> list[str]:
    """Names in first-seen order, each once (case-insensitively)."""
    seen: set[str] = set()
    kept = []
    for name in names:
        if name.casefold() not in seen:
            seen.add(name.casefold())
            kept.append(name)
    return kept


# --- Markdown ------------------------------------------------------------------------------------------------------


def _front_matter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    import yaml

    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: the front matter between the --- lines is not valid YAML ({exc.problem})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: the front matter must be 'key: value' lines, e.g. 'products: [SuperWidget]'")
    return meta, text[match.end() :]


def _inline_text(token: Any) -> str:
    parts = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return clean("".join(parts))


def load_markdown(text: str, path: Path) -> tuple[str | None, dict[str, Any], list[Section]]:
    """(h1 title, front matter, sections) of a Markdown text (CommonMark with tables)."""
    from markdown_it import MarkdownIt

    meta, body = _front_matter(text, path)
    tokens = MarkdownIt("commonmark").enable("table").parse(body)
    sections = [Section()]
    stack: list[tuple[int, str]] = []  # (heading level, heading text) of the open headings
    h1: str | None = None
    row: list[str] | None = None
    in_item = 0
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type == "heading_open":
            level, heading = int(token.tag[1]), _inline_text(tokens[index + 1])
            if level == 1 and h1 is None:
                h1 = heading
            stack = [(lvl, name) for lvl, name in stack if lvl < level] + [(level, heading)]
            sections.append(Section(headings=[name for _, name in stack]))
            index += 3
            continue
        if token.type == "list_item_open":
            in_item += 1
        elif token.type == "list_item_close":
            in_item -= 1
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            if any(row):
                sections[-1].blocks.append(" | ".join(row))
            row = None
        elif token.type == "inline":
            content = _inline_text(token)
            if row is not None:
                row.append(content)
            elif content:
                sections[-1].blocks.append(f"- {content}" if in_item else content)
        elif token.type in ("fence", "code_block") and clean(token.content):
            sections[-1].blocks.append(token.content.strip())
        index += 1
    return h1, meta, sections


# --- HTML ----------------------------------------------------------------------------------------------------------

_HEADINGS = {f"h{level}" for level in range(1, 7)}
_BLOCKS = {
    "body",
    "p",
    "li",
    "dt",
    "dd",
    "pre",
    "blockquote",
    "div",
    "section",
    "article",
    "main",
    "aside",
    "header",
    "footer",
    "td",
    "th",
    "tr",
    "caption",
    "figcaption",
    "address",
    "ul",
    "ol",
    "dl",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "form",
    "fieldset",
    "details",
    "summary",
    "figure",
    "nav",
}
_DROPPED = "//script|//style|//noscript|//template|//svg|//head"


def _own_text(element: Any) -> str:
    """The element's text without that of its block-level children (they are visited on their own)."""
    parts = [element.text or ""]
    for child in element:
        if isinstance(child.tag, str) and child.tag not in _BLOCKS and child.tag not in _HEADINGS:
            parts.append(child.text_content())
        parts.append(child.tail or "")
    return clean("".join(parts))


def load_html(data: bytes, path: Path) -> tuple[str | None, dict[str, Any], list[Section]]:
    """(title, meta, sections) of an HTML page: headings open sections, block elements give text blocks."""
    import lxml.html
    from lxml.etree import ParserError

    try:
        root = lxml.html.document_fromstring(data)
    except (ParserError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it as HTML ({exc}); check the file is an HTML page") from None
    title = clean(root.findtext(".//title") or "") or None
    meta: dict[str, Any] = {}
    for element in root.iter("meta"):
        name, content = (element.get("name") or "").lower(), element.get("content")
        if name in ("products", "brand") and content:
            meta[name] = content
    for element in root.xpath(_DROPPED):
        element.drop_tree()
    sections = [Section()]
    stack: list[tuple[int, str]] = []
    body = root.find("body")
    for element in (body if body is not None else root).iter():
        if not isinstance(element.tag, str):
            continue  # comments and processing instructions
        if element.tag in _HEADINGS:
            level, heading = int(element.tag[1]), clean(element.text_content())
            if not heading:
                continue
            if level == 1 and title is None:
                title = heading
            stack = [(lvl, name) for lvl, name in stack if lvl < level] + [(level, heading)]
            sections.append(Section(headings=[name for _, name in stack]))
        elif element.tag == "tr":
            cells = [clean(cell.text_content()) for cell in element if cell.tag in ("td", "th")]
            if any(cells):
                sections[-1].blocks.append(" | ".join(cells))
        elif element.tag in _BLOCKS and element.tag not in ("td", "th") and not _inside(element, "tr"):
            text = _own_text(element)
            if text:
                sections[-1].blocks.append(f"- {text}" if element.tag == "li" else text)
    return title, meta, sections


def _inside(element: Any, tag: str) -> bool:
    return any(ancestor.tag == tag for ancestor in element.iterancestors())


# --- plain text and FAQ ----------------------------------------------------------------------------------------------


def load_text(text: str) -> list[Section]:
    """One section; paragraphs are separated by blank lines."""
    return [Section(blocks=[clean(p) for p in re.split(r"\n\s*\n", text) if clean(p)])]


class FaqEntry(BaseModel):
    """One line of a JSONL FAQ: a question, its answer, and optionally the product(s) it is about."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    product: str | None = None
    products: list[str] = Field(default_factory=list)

    @field_validator("question", "answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def load_faq(text: str, path: Path) -> tuple[list[str], list[Section]]:
    """(products, one section per question) of a JSONL FAQ; any bad line refuses the whole file."""
    sections, products = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = FaqEntry.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {number}: not JSON ({exc.msg}); each line must be one JSON object") from None
        except ValidationError as exc:
            problems = ", ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'line'}: {error['msg']}"
                for error in exc.errors()[:3]
            )
            raise InputError(
                f"{path} line {number}: {problems}; "
                'FAQ lines look like {"question": "...", "answer": "...", "product": "optional"}'
            ) from None
        products += ([entry.product] if entry.product else []) + entry.products
        sections.append(Section(headings=[clean(entry.question)], blocks=[clean(entry.answer)]))
    return products, sections


# --- one entry point -------------------------------------------------------------------------------------------------


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


def load_document(path: Path, *, kind: str | None = None) -> LoadedDocument:
    """Parse one file into a LoadedDocument; InputError (one line naming the fix) if it cannot be used."""
    found = kind_of(path, kind)
    try:
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
