"""The knowledge base: a support lead adds the product sheet, replies get its facts, and removing it takes them away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collector import recorder
from collector.knowledge import (
    FAQ_PATH,
    PRODUCT_SHEET_PATH,
    SAMPLE_DOCUMENTS,
    Grounding,
    Passage,
    add_document,
    conversation_query,
    current_revision,
    ground,
    ground_from_memory,
    grounded_system_prompt,
    groundings_for,
    list_documents,
    passages_by_id,
    record_grounding,
    remove_document,
    render_knowledge,
    retrieve,
    training_grounding,
)
from collector.knowledge.loaders import chunk_document, load_document
from collector.knowledge.retrieval import KNOWLEDGE_HEADER, fit_passages
from core import db
from core.errors import InputError, NotFoundError
from core.models import ReplyMode, Role
from core.prompts import build_messages
from core.settings import Settings, get_settings

REPO = Path(__file__).parent.parent
MEGAGADGET_QUESTION = "How long is the battery on my MegaGadget covered?"
MEGAGADGET_FACT = "Its battery is covered for 12 months"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def add_sample(store_url: str) -> None:
    with db.session_scope(store_url) as session:
        for path in SAMPLE_DOCUMENTS:
            add_document(session, path, settings=get_settings())


# --- the schema ------------------------------------------------------------------------------------------------------


def test_migration_0005_builds_exactly_the_knowledge_tables_the_models_describe(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    db.upgrade(store_url)
    assert db.current_revision(store_url) == db.head_revision()
    with db.get_engine(store_url).connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
    with db.session_scope(store_url) as session:
        assert current_revision(session) == 0


# --- grounding: the product sheet's facts reach the prompt only while the knowledge base has them -----------------------


def test_a_megagadget_question_gets_the_sheets_warranty_fact_only_while_the_knowledge_base_has_it(
    store_url: str,
) -> None:
    settings = Settings()
    turns = [(Role.USER.value, MEGAGADGET_QUESTION)]
    empty = ground(store_url, turns, settings=settings)
    assert empty.passages == []
    assert build_messages(grounded_system_prompt(settings.system_prompt, empty.passages), turns)[0]["content"] == (
        settings.system_prompt
    )

    add_sample(store_url)
    grounded = ground(store_url, turns, settings=settings)
    assert grounded.passages[0].title == "MegaGadget › MegaGadget warranty"
    assert MEGAGADGET_FACT in grounded.passages[0].text
    system = build_messages(grounded_system_prompt(settings.system_prompt, grounded.passages), turns)[0]["content"]
    assert system.startswith(settings.system_prompt + "\n\n" + KNOWLEDGE_HEADER) and MEGAGADGET_FACT in system

    with db.session_scope(store_url) as session:
        remove_document(session, PRODUCT_SHEET_PATH.name)
    after = ground(store_url, turns, settings=settings)
    assert all(MEGAGADGET_FACT not in passage.text for passage in after.passages)
    assert after.revision == grounded.revision + 1


def test_grounding_can_be_switched_off_and_a_message_that_matches_nothing_gets_no_passages(store_url: str) -> None:
    add_sample(store_url)
    off = Settings(knowledge_grounding=False)
    assert ground(store_url, [("user", MEGAGADGET_QUESTION)], settings=off).passages == []
    assert ground(store_url, [("user", "hello")], settings=Settings()).passages == []


def test_the_query_keeps_the_product_from_earlier_customer_turns() -> None:
    turns = [
        ("user", "My MegaGadget won't turn on."),
        ("assistant", "Have you tried holding the power button?"),
        ("user", "Tried that, no luck."),
    ]
    assert conversation_query(turns, customer_turns=3) == "My MegaGadget won't turn on.\nTried that, no luck."
    assert conversation_query(turns, customer_turns=1) == "Tried that, no luck."


def test_customers_spelling_of_a_product_still_finds_its_passages(store_url: str) -> None:
    add_sample(store_url)
    passages = retrieve(store_url, "how long is the battery on my mega gadget covered", k=1, settings=get_settings())
    assert passages[0].title == "MegaGadget › MegaGadget warranty"


def test_brand_limits_retrieval_to_that_brands_and_the_shared_documents(store_url: str, tmp_path: Path) -> None:
    other = write(
        tmp_path / "acme.md",
        """
        # Acme returns
        Acme takes returns within 90 days, MegaGadget battery covered for 36 months.
        """,
    )
    add_sample(store_url)
    with db.session_scope(store_url) as session:
        add_document(session, other, brand="acme", settings=get_settings())
    acme = {p.document for p in retrieve(store_url, MEGAGADGET_QUESTION, k=5, brand="acme", settings=get_settings())}
    gadgetcorp = {p.document for p in retrieve(store_url, MEGAGADGET_QUESTION, k=5, brand="gadgetcorp", settings=get_settings())}
    every = {p.document for p in retrieve(store_url, MEGAGADGET_QUESTION, k=40, min_score=0.0, settings=get_settings())}
    assert "acme.md" in acme and "acme.md" not in gadgetcorp and "acme.md" in every
    assert PRODUCT_SHEET_PATH.name in gadgetcorp


def test_an_index_notices_a_document_removed_by_another_process(store_url: str, housestyle_home: Path) -> None:
    add_sample(store_url)
    assert retrieve(store_url, MEGAGADGET_QUESTION, k=1, settings=get_settings())[0].document == PRODUCT_SHEET_PATH.name  # index now cached
    removed = housestyle("knowledge", "remove", PRODUCT_SHEET_PATH.name, home=housestyle_home, database_url=store_url)
    assert removed.returncode == 0, removed.stderr
    assert all(p.document != PRODUCT_SHEET_PATH.name for p in retrieve(store_url, MEGAGADGET_QUESTION, k=3, settings=get_settings()))


def test_the_api_grounds_from_memory_only_after_a_recent_read_and_sees_this_process_changes_at_once(
    store_url: str, housestyle_home: Path
) -> None:
    settings, turns = get_settings(), [("user", MEGAGADGET_QUESTION)]
    add_sample(store_url)
    assert ground_from_memory(store_url, turns, settings=settings, max_age_s=60) is None  # a change made here: read
    read = ground(store_url, turns, settings=settings)  # reads the revision, so memory may answer for a while
    assert MEGAGADGET_FACT in read.passages[0].text
    assert ground_from_memory(store_url, turns, settings=settings, max_age_s=60) == read
    assert ground_from_memory(store_url, turns, settings=settings, max_age_s=0) is None  # too old a read
    with db.session_scope(store_url) as session:
        remove_document(session, PRODUCT_SHEET_PATH.name)
    assert ground_from_memory(store_url, turns, settings=settings, max_age_s=60) is None
    refund = [("user", "How many days do I have to return an order for a refund?")]
    assert ground(store_url, refund, settings=settings).passages  # the FAQ answers it
    # another process's change is seen once the read is older than max_age_s: the memory answers until then
    removed = housestyle("knowledge", "remove", FAQ_PATH.name, home=housestyle_home, database_url=store_url)
    assert removed.returncode == 0, removed.stderr
    assert ground_from_memory(store_url, refund, settings=settings, max_age_s=60).passages
    assert ground_from_memory(store_url, refund, settings=settings, max_age_s=0) is None
    assert ground(store_url, refund, settings=settings).passages == []  # read again: the FAQ is gone


def test_retrieval_runs_with_no_network(tmp_path: Path) -> None:
    """Import, add, index and retrieve in a process where opening any socket fails."""
    script = textwrap.dedent(f"""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network used")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from core import db
        from collector.knowledge import SAMPLE_DOCUMENTS, add_document, retrieve
        from core.settings import get_settings
        url = db.open_store("sqlite:///{tmp_path / "offline.db"}")
        with db.session_scope(url) as session:
            for path in SAMPLE_DOCUMENTS:
                add_document(session, path, settings=get_settings())
        print(retrieve(url, {MEGAGADGET_QUESTION!r}, k=1, settings=get_settings())[0].title)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MegaGadget › MegaGadget warranty"


# --- the prompt block: pure and deterministic --------------------------------------------------------------------------


def passage(number: int, text: str, title: str = "T") -> Passage:
    return Passage(id=number, document_id=1, document="sheet.md", title=title, text=text, score=1.0)


@pytest.mark.parametrize(
    ("passages", "expected"),
    [
        ([], "SYSTEM"),
        (
            [passage(1, "Warranty: 2 years.", "SuperWidget › Warranty")],
            f"SYSTEM\n\n{KNOWLEDGE_HEADER}\n\n[1] SuperWidget › Warranty\nWarranty: 2 years.",
        ),
        ([passage(1, "A.", "X"), passage(2, "  B.\n", "Y")], f"SYSTEM\n\n{KNOWLEDGE_HEADER}\n\n[1] X\nA.\n\n[2] Y\nB."),
    ],
    ids=["no-passages-no-block", "one-passage", "two-passages-numbered-in-order"],
)
def test_the_system_prompt_carries_the_passages_numbered_in_retrieval_order(
    passages: list[Passage], expected: str
) -> None:
    assert grounded_system_prompt("SYSTEM", passages) == expected
    assert grounded_system_prompt("SYSTEM", passages) == grounded_system_prompt("SYSTEM", list(passages))


def test_the_block_stays_within_its_size_and_the_first_passage_is_cut_rather_than_dropped() -> None:
    long = passage(1, "word " * 400)
    kept = fit_passages([long, passage(2, "short")], 300)
    assert len(kept) == 1 and kept[0].text.endswith("…") and len(render_knowledge(kept)) <= 300
    both = fit_passages([passage(1, "a"), passage(2, "b")], 1000)
    assert [p.id for p in both] == [1, 2]


def test_a_draft_records_which_passages_it_used_and_the_console_can_read_them_back(store_url: str) -> None:
    add_sample(store_url)
    grounding = ground(store_url, [("user", MEGAGADGET_QUESTION)], settings=Settings())
    record = grounding.to_record()
    assert set(record) == {"revision", "query", "passages"}
    assert set(record["passages"][0]) == {"id", "document_id", "document", "title", "score"}
    assert json.loads(json.dumps(record)) == record
    with db.session_scope(store_url) as session:
        conversation = recorder.start_conversation(session, mode=ReplyMode.ASSIST)
        recorder.add_message(session, conversation.id, Role.USER, MEGAGADGET_QUESTION)
        draft = recorder.record_draft(session, conversation.id, "Your MegaGadget's battery is covered for 12 months.")
        record_grounding(session, draft.id, grounding)
        draft_id = draft.id
    with db.session_scope(store_url) as session:
        back = groundings_for(session, [draft_id])[draft_id]
        assert back.passage_ids == grounding.passage_ids and back.passages[0].text == grounding.passages[0].text
        assert [p.id for p in passages_by_id(session, list(reversed(grounding.passage_ids)))] == list(
            reversed(grounding.passage_ids)
        )
        remove_document(session, PRODUCT_SHEET_PATH.name)
    with db.session_scope(store_url) as session:
        after = groundings_for(session, [draft_id])[draft_id]
        assert after.passage_ids == grounding.passage_ids  # the record stays; the removed texts are gone
        assert after.passages[0].text == "" and passages_by_id(session, [grounding.passage_ids[0]]) == []
    assert Grounding.from_record(record).passage_ids == grounding.passage_ids


def test_a_training_example_gets_the_passages_its_draft_was_served_with_else_what_retrieval_finds_now(
    store_url: str,
) -> None:
    add_sample(store_url)
    turns = [("user", MEGAGADGET_QUESTION)]
    with db.session_scope(store_url) as session:
        served = ground(session, turns, settings=Settings())
        recorded = Grounding.from_record(served.to_record())
        # a draft served with the ZenBand strap passage only: training keeps that, not today's retrieval
        strap = next(p for p in retrieve(session, "ZenBand strap warranty", k=1, settings=get_settings()))
        only_strap = Grounding(revision=served.revision, query=served.query, passages=[strap])
        assert training_grounding(session, turns, recorded=recorded, settings=get_settings()).passages == served.passages
        assert [p.id for p in training_grounding(session, turns, recorded=only_strap, settings=get_settings()).passages] == [strap.id]
        assert training_grounding(session, turns, settings=Settings()).passages == served.passages


# --- loading files -----------------------------------------------------------------------------------------------------


def test_markdown_front_matter_declares_products_and_headings_title_the_passages(tmp_path: Path) -> None:
    sheet = write(
        tmp_path / "sheet.md",
        """
        ---
        products: [SuperWidget, MegaGadget]
        brand: gadgetcorp
        ---
        # Product sheet

        Intro paragraph.

        ## SuperWidget
        ### Specs
        - Battery: **12 hours**
        - Weight: 180 g

        | spec | value |
        |---|---|
        | Bluetooth | 5.3 |

        ## MegaGadget
        A smart display.
        """,
    )
    loaded = load_document(sheet)
    assert (loaded.title, loaded.kind, loaded.products, loaded.brand) == (
        "Product sheet",
        "markdown",
        ["SuperWidget", "MegaGadget"],
        "gadgetcorp",
    )
    assert chunk_document(loaded, 120) == [
        ("Product sheet", "Intro paragraph."),
        ("SuperWidget › Specs", "- Battery: 12 hours\n- Weight: 180 g\nspec | value\nBluetooth | 5.3"),
        ("MegaGadget", "A smart display."),
    ]


def test_html_pages_give_their_text_by_heading_without_scripts_and_declare_products_in_a_meta_tag(
    tmp_path: Path,
) -> None:
    page = write(
        tmp_path / "help.html",
        """
        <html><head><title>Help centre</title><meta name="products" content="NanoCharger, UltraHub">
        <style>p {color: red}</style></head>
        <body><script>var tracking = 1;</script>
        <h1>Help centre</h1><p>Welcome <b>back</b>.</p>
        <h2>NanoCharger</h2><ul><li>100 W in total</li><li>Two USB-C ports</li></ul>
        <table><tr><th>Light</th><th>Meaning</th></tr><tr><td>amber</td><td>cooling down</td></tr></table>
        <h2>UltraHub</h2><div>Connects up to 64 devices.</div>
        </body></html>
        """,
    )
    loaded = load_document(page)
    assert (loaded.title, loaded.kind, loaded.products) == ("Help centre", "html", ["NanoCharger", "UltraHub"])
    assert chunk_document(loaded, 120) == [
        ("Help centre", "Welcome back."),
        ("NanoCharger", "- 100 W in total\n- Two USB-C ports\nLight | Meaning\namber | cooling down"),
        ("UltraHub", "Connects up to 64 devices."),
    ]


def test_text_files_split_into_paragraphs_and_faq_lines_become_one_passage_each(tmp_path: Path) -> None:
    notes = write(tmp_path / "returns.txt", "Returns take 30 days.\n\nRefunds take 5 business days.\n")
    assert chunk_document(load_document(notes), 120) == [
        ("returns", "Returns take 30 days.\nRefunds take 5 business days.")
    ]
    assert chunk_document(load_document(notes), 5) == [
        ("returns", "Returns take 30 days."),
        ("returns", "Refunds take 5 business days."),
    ]
    faq = write(
        tmp_path / "faq.jsonl",
        """
        {"question": "Is the ZenBand waterproof?", "answer": "Yes, 5 ATM.", "product": "ZenBand"}

        {"question": "Opening hours?", "answer": "Mon-Fri 8am-8pm."}
        """,
    )
    loaded = load_document(faq)
    assert loaded.products == ["ZenBand"]
    assert chunk_document(loaded, 120) == [
        ("Is the ZenBand waterproof?", "Yes, 5 ATM."),
        ("Opening hours?", "Mon-Fri 8am-8pm."),
    ]


def test_a_long_section_is_cut_into_passages_of_at_most_the_word_limit_never_across_a_heading() -> None:
    chunks = chunk_document(load_document(PRODUCT_SHEET_PATH), 30)
    assert max(len(chunk.text.split()) for chunk in chunks) <= 30
    assert {chunk.title for chunk in chunks} >= {
        "MegaGadget › MegaGadget warranty",
        "SuperWidget › SuperWidget troubleshooting",
    }
    assert all("MegaGadget" not in chunk.text for chunk in chunks if chunk.title.startswith("SuperWidget"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.md", None, "does not exist"),
        ("sheet.pdf", "x", "cannot tell what kind of document"),
        ("faq.jsonl", '{"question": "a", "answer": "b"}\n{"question": "c"}\n', "line 2: answer: Field required"),
        (
            "faq.jsonl",
            '{"question": "a", "anwser": "b"}\n',
            "line 1: answer: Field required, anwser: Extra inputs are not permitted",
        ),
        ("faq.jsonl", "{oops\n", "line 1: not JSON"),
        ("bad.md", b"\xff\xfe\x00caf\xe9", "is not UTF-8"),
        ("empty.md", "---\nproducts: [A]\n---\n\n", "has no text to add"),
        ("front.md", "---\nproducts: [A\n---\ntext\n", "front matter"),
    ],
    ids=["missing", "unknown-kind", "faq-missing-answer", "faq-typo", "faq-not-json", "not-utf8", "empty", "bad-yaml"],
)
def test_an_unusable_file_is_one_clear_error_and_nothing_is_stored(
    store_url: str, tmp_path: Path, name: str, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as error:
        with db.session_scope(store_url) as session:
            add_document(session, FAQ_PATH, settings=get_settings())  # a good file first: the bad one must take it down too
            add_document(session, path, settings=get_settings())
    assert "\n" not in str(error.value)
    with db.session_scope(store_url) as session:
        assert list_documents(session) == [] and current_revision(session) == 0


def test_adding_the_same_file_again_changes_nothing_and_an_edited_file_replaces_its_passages(
    store_url: str, tmp_path: Path
) -> None:
    sheet = write(tmp_path / "sheet.md", "# Sheet\n\nThe MegaGadget warranty is 2 years.\n")
    with db.session_scope(store_url) as session:
        first = add_document(session, sheet, settings=get_settings())
        again = add_document(session, sheet, settings=get_settings())
        assert (first.status, again.status, current_revision(session)) == ("added", "unchanged", 1)
    # one passage in the whole store: every BM25 score is small (IDF grows with the corpus), so no floor here
    old_ids = [p.id for p in retrieve(store_url, "MegaGadget warranty", k=3, min_score=0.0, settings=get_settings())]
    write(sheet, "# Sheet\n\nThe MegaGadget battery is covered for 12 months.\n")
    with db.session_scope(store_url) as session:
        replaced = add_document(session, sheet, settings=get_settings())
        assert (replaced.status, replaced.document.id, current_revision(session)) == ("replaced", first.document.id, 2)
        assert [d.passages for d in list_documents(session)] == [1]
    passages = retrieve(store_url, "MegaGadget warranty battery", k=3, min_score=0.0, settings=get_settings())
    assert [p.text for p in passages] == ["The MegaGadget battery is covered for 12 months."]
    assert len(old_ids) == 1 and not set(old_ids) & {p.id for p in passages}


def test_removing_an_unknown_document_names_the_fix(store_url: str) -> None:
    with pytest.raises(NotFoundError, match="knowledge list"):
        with db.session_scope(store_url) as session:
            remove_document(session, "nope.md")


# --- the CLI -----------------------------------------------------------------------------------------------------------


def housestyle(*args: str, home: Path, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real `housestyle` entry point."""
    launcher = "import plugin.cli as cli\ncli.main()\n"
    env = {**os.environ, "HOUSESTYLE_HOME": str(home)}
    env.pop("HOUSESTYLE_DATABASE_URL", None)
    if database_url:
        env["HOUSESTYLE_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-c", launcher, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_adds_lists_searches_and_removes_documents(tmp_path: Path) -> None:
    added = housestyle("knowledge", "add", "--sample", home=tmp_path)
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[0].startswith(
        "added gadgetcorp_products.md (id 1, markdown): 29 passages; SuperWidget"
    )
    listed = housestyle("knowledge", "list", "--json", home=tmp_path)
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == [
        "gadgetcorp_products.md",
        "gadgetcorp_faq.jsonl",
    ]
    found = housestyle("knowledge", "search", MEGAGADGET_QUESTION, "-k", "1", home=tmp_path)
    assert "MegaGadget › MegaGadget warranty" in found.stdout and MEGAGADGET_FACT in found.stdout
    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder / "a.md", "# A\n\ntext\n")
    write(folder / "b.txt", "more text\n")
    assert housestyle("knowledge", "add", str(folder), home=tmp_path).stdout.count("added ") == 2
    removed = housestyle("knowledge", "remove", "1", home=tmp_path)
    assert removed.stdout.strip() == "removed gadgetcorp_products.md (id 1, 29 passages)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["knowledge", "add"], "error: give PATH(s) to add or --sample"),
        (["knowledge", "add", "nowhere.md"], "error: nowhere.md does not exist"),
        (["knowledge", "remove", "nope.md"], "error: no knowledge document 'nope.md'"),
        (["knowledge", "add", "--sample", "--name", "x"], "error: --name names one document"),
    ],
    ids=["nothing-to-add", "missing-file", "unknown-document", "name-for-two-files"],
)
def test_cli_mistakes_are_one_error_line_and_exit_1(tmp_path: Path, args: list[str], message: str) -> None:
    result = housestyle(*args, home=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


# --- optional dense retrieval ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rankings", "k", "expected"),
    [
        # 1 and 3 tie at 1/61 + 1/63, just above 2's 2/62; the tie goes to the first ranking's order
        ([[1, 2, 3], [3, 2, 1]], 3, [1, 3, 2]),
        ([[1, 2], [2, 5]], 2, [2, 1]),  # in both lists beats first in one
        ([[], [4, 7]], 5, [4, 7]),  # BM25 found nothing: the dense ranking alone
        ([[9], []], 1, [9]),
    ],
)
def test_reciprocal_rank_fusion(rankings: list[list[int]], k: int, expected: list[int]) -> None:
    from collector.knowledge.dense import fuse_rankings

    assert [row for row, _ in fuse_rankings(rankings, k)] == expected


def tiny_embedding_model(folder: Path) -> Path:
    """A 1-layer BERT with random weights and a WordPiece vocabulary of the product sheet: offline, seconds to build."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        [PRODUCT_SHEET_PATH.read_text()],
        trainers.WordPieceTrainer(vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]),
    )
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def test_an_embedding_model_joins_bm25_when_its_setting_names_one(tmp_path: Path) -> None:
    url = db.open_store(f"sqlite:///{tmp_path / 'dense.db'}")
    hybrid = Settings(knowledge_embedding_model=str(tiny_embedding_model(tmp_path / "encoder")))
    with db.session_scope(url) as session:
        add_document(session, PRODUCT_SHEET_PATH, settings=get_settings())
    target = retrieve(url, MEGAGADGET_QUESTION, k=1, settings=Settings())[0]
    # a query equal to a passage's indexed text is BM25's best and has cosine 1: it must stay first after fusion
    fused = retrieve(url, f"{target.title}\n{target.text}", k=3, settings=hybrid)
    assert fused[0].id == target.id and fused[0].score == pytest.approx(2 / 61, abs=1e-6)  # first in both rankings
    assert retrieve(url, f"{target.title}\n{target.text}", k=3, settings=hybrid) == fused  # deterministic
    assert (
        retrieve(url, MEGAGADGET_QUESTION, k=1, settings=Settings())[0].score == target.score
    )  # BM25 index kept apart
    with pytest.raises(InputError, match="not a model folder"):
        retrieve(url, MEGAGADGET_QUESTION, settings=Settings(knowledge_embedding_model=str(tmp_path / "nowhere")))


def test_an_index_built_inside_a_rolled_back_add_is_not_reused_for_the_next_change(store_url: str, tmp_path: Path) -> None:
    first = write(tmp_path / "first.md", "# First\n\nThe NanoCharger gives 100 W in total.\n")
    second = write(tmp_path / "second.md", "# Second\n\nThe UltraHub connects up to 64 devices.\n")
    with pytest.raises(RuntimeError):
        with db.session_scope(store_url) as session:
            add_document(session, first, settings=get_settings())
            assert retrieve(session, "NanoCharger watts", k=1, min_score=0.0, settings=get_settings())  # builds an index at revision 1
            raise RuntimeError("the add is rolled back")
    with db.session_scope(store_url) as session:
        add_document(session, second, settings=get_settings())  # revision 1 again, other content
    assert [p.text for p in retrieve(store_url, "NanoCharger UltraHub", k=3, min_score=0.0, settings=get_settings())] == [
        "The UltraHub connects up to 64 devices."
    ]
