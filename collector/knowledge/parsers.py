"""Markdown, HTML, plain text and JSONL FAQ parsed into titled sections (markdown-it-py, lxml, PyYAML, pydantic).

Each parser keeps the document's own structure: a heading opens a section whose title is the heading path, so a
passage cut from it later never crosses a heading.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from collector.knowledge.documents import Section, clean
from core.errors import InputError

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)


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
        except RecursionError:
            raise InputError(f"{path} line {number}: nested too deeply; each line must be one flat JSON object") from None
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
