"""The knowledge base's commands: `knowledge add|list|remove|search`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from collector.brands import entry_settings
from core import db
from core.errors import InputError

knowledge_app = typer.Typer(
    help="Product knowledge the assistant's replies are grounded on: product sheets, FAQs, help pages.",
    no_args_is_help=True,
)


def folder_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """The regular files under `folder` with one of `suffixes`; a symbolic link anywhere in it is refused (it could
    point out of the folder: /etc/passwd would become a searchable passage)."""
    wanted = {suffix.lower() for suffix in suffixes}
    found: list[Path] = []
    for root, folders, files in os.walk(folder, followlinks=False):
        for name in [*folders, *files]:
            if os.path.islink(os.path.join(root, name)):
                raise InputError(f"{Path(root) / name} is a symbolic link; knowledge add takes only the folder's own "
                                 "files: copy the file in, or add it by its own path")
        found += [Path(root) / name for name in files if Path(name).suffix.lower() in wanted]
    return sorted(path for path in found if path.is_file())


def _files(paths: list[Path]) -> list[tuple[Path, str | None]]:
    """(file, name) for each PATH; a folder gives its Markdown, HTML, text and JSONL files, named by relative path."""
    from collector.knowledge.loaders import KINDS

    files: list[tuple[Path, str | None]] = []
    for path in paths:
        path = path.expanduser()
        if path.is_dir():
            found = folder_files(path, KINDS)
            if not found:
                raise InputError(f"{path} has no .md, .html, .txt or .jsonl files to add")
            files += [(p, str(p.relative_to(path))) for p in found]
        else:
            files.append((path, None))
    return files


@knowledge_app.command("add")
def add_command(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files or folders: .md, .html, .txt, .jsonl (FAQ).")
    ] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Add the bundled GadgetCorp product sheet and FAQ.")] = False,
    name: Annotated[
        str | None, typer.Option(help="Name to list it under (default: the file name); one file only.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="markdown | html | text | faq (default: from the extension).")
    ] = None,
    brand: Annotated[str | None, typer.Option(help="Brand the document is for (default: every brand).")] = None,
    product: Annotated[
        list[str] | None, typer.Option(help="A product the document is about (repeat); adds to what it declares.")
    ] = None,
) -> None:
    """Add documents to the knowledge base: parsed, cut into passages and indexed for retrieval.

    Products come from the document (Markdown front matter `products: [A, B]`, HTML `<meta name="products">`, an
    FAQ line's "product") and --product. Adding a file under a name already there replaces it. All files are added
    together or, on any error, none.
    """
    from collector.knowledge.store import SAMPLE_DOCUMENTS, add_document

    if sample == bool(paths):
        raise InputError("give PATH(s) to add or --sample, not both and not neither")
    files = [(path, None) for path in SAMPLE_DOCUMENTS] if sample else _files(list(paths or []))
    if name is not None and len(files) != 1:
        raise InputError("--name names one document; give one file, or leave --name out")
    settings = entry_settings()
    with db.session_scope(settings.resolved_database_url) as session:
        results = [
            add_document(session, path, name=name or default_name, kind=kind, brand=brand, products=product or [],
                         settings=settings)
            for path, default_name in files
        ]
    for result in results:
        document = result.document
        products = ", ".join(document.products) or "no products declared"
        typer.echo(
            f"{result.status} {document.name} (id {document.id}, {document.kind}): {document.passages} passages; {products}"
        )


@knowledge_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per document.")] = False,
) -> None:
    """Show the knowledge base's documents: id, name, kind, brand, passages and products."""
    from collector.knowledge.store import list_documents

    with db.session_scope(entry_settings().resolved_database_url) as session:
        documents = list_documents(session)
    if as_json:
        for document in documents:
            typer.echo(document.model_dump_json())
        return
    if not documents:
        typer.echo("the knowledge base is empty; add files with `housestyle knowledge add PATH` (or --sample)")
        return
    for document in documents:
        brand = f" [{document.brand}]" if document.brand else ""
        typer.echo(
            f"{document.id:>4}  {document.name}{brand}  {document.kind}  {document.passages} passages  "
            f"{', '.join(document.products) or '-'}"
        )


@knowledge_app.command("remove")
def remove_command(
    ref: Annotated[str, typer.Argument(help="The document's name or id (see `knowledge list`).")],
    brand: Annotated[
        str | None, typer.Option(help="The brand, when several brands have a document of that name.")
    ] = None,
) -> None:
    """Remove a document and its passages; replies stop using them with the next message."""
    from collector.knowledge.store import remove_document

    with db.session_scope(entry_settings().resolved_database_url) as session:
        removed = remove_document(session, ref, brand=brand)
    typer.echo(f"removed {removed.name} (id {removed.id}, {removed.passages} passages)")


@knowledge_app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help='A customer message, e.g. "How long is the MegaGadget warranty?"')],
    k: Annotated[int, typer.Option("-k", help="Passages to show.")] = 3,
    brand: Annotated[str | None, typer.Option(help="Only this brand's and the shared documents.")] = None,
) -> None:
    """Show the passages a reply to QUERY would be grounded on, with their scores."""
    from collector.knowledge.retrieval import retrieve

    if k < 1:
        raise InputError("-k must be at least 1")
    settings = entry_settings()
    with db.session_scope(settings.resolved_database_url) as session:
        passages = retrieve(session, query, k=k, brand=brand, settings=settings)
    if not passages:
        typer.echo("no passage scores above HOUSESTYLE_KNOWLEDGE_MIN_SCORE for this query")
    for passage in passages:
        text = passage.text.replace("\n", "\n         ")
        typer.echo(f"{passage.score:7.3f}  #{passage.id} {passage.document} › {passage.title}\n         {text}")


def register(app: typer.Typer) -> None:
    """Attach `knowledge …` to the root CLI."""
    app.add_typer(knowledge_app, name="knowledge")
