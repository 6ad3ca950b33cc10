"""Answer memory: reviewed exchanges (redacted) offered as examples in the one prompt, per brand, forgotten with
their customer, switched off when outdated or corrected."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from collector import recorder
from collector.brands import brand_fields, create_brand
from collector.memory import forget_indexes, mark_outdated, memory_index, recall, recalled_for
from collector.memory.exchanges import StoredExchange
from collector.memory.index import MemoryIndex
from collector.pii.erasure import forget
from core.db import session_scope
from core.models import DEFAULT_BRAND_ID, Role
from core.prompts import KNOWLEDGE_HEADER, MEMORY_HEADER, build_messages
from core.settings import Settings, get_settings
from plugin import assistant
from tests.fixtures.stores import redact_store

WARRANTY_Q = "Is my SuperWidget still under warranty? I bought it in March. My email is jane.doe@example.com"
WARRANTY_A = "Hi Jane, the SuperWidget warranty lasts two years from purchase, so you are covered."
RETURN_Q = "How do I return my MegaGadget? It arrived scratched."
RETURN_A = "Sorry about that! Print the prepaid label from your order page and drop the MegaGadget at any post office."


@pytest.fixture(autouse=True)
def _fresh_indexes():
    forget_indexes()
    yield
    forget_indexes()


def memory_on(**extra) -> Settings:
    return get_settings().model_copy(update={"memory_examples": 3, "memory_min_score": 0.0, **extra})


def reviewed(url: str, question: str, draft: str, *, decision: str = "approved", final: str | None = None,
             brand_id: int = DEFAULT_BRAND_ID, customer_ref: str | None = None) -> tuple[int, int]:
    """A conversation whose one question got a draft an agent reviewed: (conversation id, review id)."""
    with session_scope(url) as session:
        conversation = recorder.start_conversation(session, brand_id=brand_id, customer_ref=customer_ref)
        recorder.add_message(session, conversation.id, Role.USER, question)
        drafted = recorder.record_draft(session, conversation.id, draft)
        review = recorder.record_review(session, drafted.id, decision, agent_id="alice", final_text=final)
        return conversation.id, review.id


def recalled(url: str, question: str, *, brand_id: int = DEFAULT_BRAND_ID, settings: Settings | None = None):
    return recall(url, [("user", question)], brand_id=brand_id, settings=settings or memory_on()).examples


def test_the_one_builder_puts_past_exchanges_after_the_passages_and_nothing_when_there_are_none() -> None:
    class Passage:
        title, text = "SuperWidget › Warranty", "Two years."

    class Example:
        customer, reply = "Is <PERSON_1>'s SuperWidget covered?", "Yes <PERSON_1>, two years."

    plain = build_messages("Be kind.", [("user", "hi")])
    assert build_messages("Be kind.", [("user", "hi")], (), ()) == plain
    system = build_messages("Be kind.", [("user", "hi")], [Passage()], [Example()])[0]["content"]
    assert system.index("Be kind.") < system.index(KNOWLEDGE_HEADER) < system.index(MEMORY_HEADER)
    assert "[1] Customer: Is <PERSON_1>'s SuperWidget covered?\nAgent: Yes <PERSON_1>, two years." in system


def test_a_reviewed_exchange_is_recalled_once_redacted_and_only_as_redacted_text(store_url: str) -> None:
    reviewed(store_url, WARRANTY_Q, WARRANTY_A)
    reviewed(store_url, RETURN_Q, "Please send it back.", decision="edited", final=RETURN_A)
    assert recalled(store_url, "Is the SuperWidget warranty still valid?") == []  # raw text never enters memory
    redact_store(store_url)
    found = recalled(store_url, "Is the SuperWidget warranty still valid?")
    assert found[0].reply.startswith("Hi <PERSON_1>, the SuperWidget warranty lasts two years")
    assert "jane.doe@example.com" not in found[0].customer and "<EMAIL" in found[0].customer
    returned = recalled(store_url, "I want to return the MegaGadget I got")
    assert returned[0].reply == RETURN_A  # the edited text the agent sent, not the draft


def test_the_reply_path_carries_the_brands_past_answers_in_its_prompt_and_records_them(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, review_id = reviewed(store_url, WARRANTY_Q, WARRANTY_A)
    redact_store(store_url)
    monkeypatch.setenv("HOUSESTYLE_MEMORY_EXAMPLES", "2")
    monkeypatch.setenv("HOUSESTYLE_MEMORY_MIN_SCORE", "0")
    get_settings.cache_clear()
    settings = get_settings()
    with session_scope(store_url) as session:
        conversation = recorder.start_conversation(session)
    turn = assistant.receive_customer_message(settings, conversation.id, "Does the SuperWidget warranty cover me?")
    system = turn.prompt[0]["content"]
    assert MEMORY_HEADER in system and "Agent: Hi <PERSON_1>, the SuperWidget warranty lasts two years" in system
    assert turn.recall is not None and turn.recall.review_ids == [review_id]
    draft = assistant.record_reply(settings, turn, "It does.", None, 5.0)
    with session_scope(store_url) as session:
        assert [e.review_id for e in recalled_for(session, [draft.id])[draft.id]] == [review_id]


def test_brand_a_never_recalls_brand_bs_exchanges(store_url: str) -> None:
    """Catches: the brand filter dropped from the index's build, or from the read of new reviews."""
    with session_scope(store_url) as session:
        other = create_brand(session, "business", brand_fields(company_name="GadgetCorp Business"), settings=get_settings()).id
    reviewed(store_url, WARRANTY_Q, WARRANTY_A, brand_id=other)
    redact_store(store_url)
    assert recalled(store_url, "SuperWidget warranty?", brand_id=DEFAULT_BRAND_ID) == []
    assert [e.reply[:8] for e in recalled(store_url, "SuperWidget warranty?", brand_id=other)] == ["Hi <PERS"]
    # a review after both indexes were built reaches them as an extension, read by its key, not by brand
    reviewed(store_url, RETURN_Q, RETURN_A, brand_id=other)
    redact_store(store_url)
    assert recalled(store_url, "return my MegaGadget", brand_id=DEFAULT_BRAND_ID) == []
    assert [e.reply for e in recalled(store_url, "return my MegaGadget", brand_id=other)] == [RETURN_A]


def test_a_forgotten_customers_exchange_is_never_recalled_again(store_url: str) -> None:
    reviewed(store_url, WARRANTY_Q, WARRANTY_A)
    reviewed(store_url, "Is the SuperWidget warranty transferable?", "Yes, it follows the SuperWidget.")
    redact_store(store_url)
    assert len(recalled(store_url, "SuperWidget warranty")) == 2  # the index is built and cached
    forget(store_url, actor="dpo", email="jane.doe@example.com")
    found = recalled(store_url, "SuperWidget warranty")
    assert [e.reply for e in found] == ["Yes, it follows the SuperWidget."]


def test_retention_leaves_memory_as_it_was_since_memory_never_held_raw_text(store_url: str) -> None:
    from collector.pii.erasure import purge_expired_raw

    reviewed(store_url, WARRANTY_Q, WARRANTY_A)
    redact_store(store_url)
    before = recalled(store_url, "SuperWidget warranty")
    assert purge_expired_raw(store_url, get_settings().model_copy(update={"raw_retention_days": -1})) == 1
    assert recalled(store_url, "SuperWidget warranty") == before


def test_an_exchange_marked_outdated_is_never_recalled_again(store_url: str) -> None:
    _, old = reviewed(store_url, "How long does SuperWidget shipping take?", "Shipping takes 5 days.")
    reviewed(store_url, "SuperWidget shipping time to Canada?", "Shipping to Canada takes 8 days.")
    redact_store(store_url)
    assert len(recalled(store_url, "SuperWidget shipping")) == 2
    with session_scope(store_url) as session:
        assert mark_outdated(session, old, actor="alice") is True
        assert mark_outdated(session, old, actor="alice") is False
    assert [e.review_id for e in recalled(store_url, "SuperWidget shipping")] != [old]
    assert old not in [e.review_id for e in recalled(store_url, "How long does SuperWidget shipping take?")]


def test_outdated_from_the_cli_and_another_brands_review_is_not_found(store_url: str) -> None:
    from plugin.cli import app

    _, review_id = reviewed(store_url, "How long does SuperWidget shipping take?", "Shipping takes 5 days.")
    redact_store(store_url)
    result = CliRunner().invoke(app, ["memory", "outdated", str(review_id)])
    assert result.exit_code == 0, result.output
    assert recalled(store_url, "SuperWidget shipping") == []
    result = CliRunner().invoke(app, ["memory", "outdated", "999"])
    assert result.exit_code != 0 and "does not exist" in str(result.exception)  # the CLI's main says it plainly


def test_a_correction_of_a_draft_memory_suggested_replaces_what_it_suggested(store_url: str) -> None:
    _, old = reviewed(store_url, "How long does SuperWidget shipping take?", "Shipping takes 5 days.")
    redact_store(store_url)
    settings = memory_on()
    with session_scope(store_url) as session:
        conversation = recorder.start_conversation(session)
    turn = assistant.receive_customer_message(settings, conversation.id, "SuperWidget shipping, how many days?")
    assert turn.recall.review_ids == [old]
    draft = assistant.record_reply(settings, turn, "Shipping takes 5 days.", None, 5.0)
    with session_scope(store_url) as session:
        new = recorder.record_review(session, draft.id, "edited", agent_id="bob",
                                     final_text="Shipping now takes 2 days with our new carrier.").id
    redact_store(store_url)
    assert [e.review_id for e in recalled(store_url, "How long is SuperWidget shipping?")] == [new]


def test_the_index_grows_without_a_rebuild_and_ranks_as_one_built_at_once() -> None:
    texts = ["SuperWidget warranty two years", "MegaGadget return label", "SuperWidget wifi setup fails",
             "order shipping time", "warranty for the MegaGadget battery", "refund after a return"]
    rows = [StoredExchange(i + 1, i + 1, text, f"reply {i}") for i, text in enumerate(texts)]
    whole = MemoryIndex.build(rows)
    grown = MemoryIndex.build(rows[:2]).extended(rows[2:], set(), stamp=None, settled=6)
    for query in ("warranty on my MegaGadget", "return", "SuperWidget setup", "shipping"):
        a = [(h.exchange.review_id, h.score) for h in whole.search(query, k=6)]
        b = [(h.exchange.review_id, h.score) for h in grown.search(query, k=6)]
        assert [i for i, _ in a] == [i for i, _ in b]
        assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-3)
    gone = grown.extended([], {1}, stamp=None, settled=6)
    assert 1 not in [h.exchange.review_id for h in gone.search("SuperWidget warranty", k=6)]


@pytest.mark.parametrize("erased", [{1}, {2, 5}, {6}, {3, 4, 5, 6}, {1, 2, 3, 4, 5, 6}, set()],
                         ids=["first-base-row", "base-and-tail", "last-tail-row", "whole-tail", "everything", "none"])
def test_an_index_without_erased_exchanges_holds_and_ranks_as_one_built_without_them(erased: set[int]) -> None:
    """An erasure drops its exchanges from the index (texts, postings and statistics) rather than rebuilding it from
    the store: the result must search exactly as an index built from what is left (catches: a row left in the
    postings, rows renumbered wrongly, the tail or the statistics not trimmed)."""
    texts = ["SuperWidget warranty two years", "MegaGadget return label", "SuperWidget wifi setup fails",
             "order shipping time", "warranty for the MegaGadget battery", "refund after a return"]
    rows = [StoredExchange(i + 1, i + 1, text, f"reply {i}") for i, text in enumerate(texts)]
    held = MemoryIndex.build(rows[:3]).extended(rows[3:], set(), stamp=None, settled=6)  # 3 base rows, 3 tail rows
    trimmed = held.without(erased, stamp=None)
    left = [row for row in rows if row.review_id not in erased]
    rebuilt = MemoryIndex.build(left)
    assert [e.review_id for e in trimmed.exchanges] == [e.review_id for e in left] and len(trimmed) == len(left)
    for query in ("warranty on my MegaGadget", "return", "SuperWidget setup", "shipping", "refund label"):
        a = [(h.exchange.review_id, h.score) for h in rebuilt.search(query, k=6)]
        b = [(h.exchange.review_id, h.score) for h in trimmed.search(query, k=6)]
        assert [i for i, _ in a] == [i for i, _ in b], query
        assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-3), query


def test_an_erasure_trims_the_brands_cached_index_and_leaves_other_brands_indexes_as_they_were(
        store_url: str) -> None:
    """`housestyle forget` moves the store's stamp for every brand: the brand that held the customer's exchange
    drops it without a rebuild from the store, another brand keeps its index (catches: a full rebuild on every
    erasure, 10-13 s under the lock at 100k exchanges, or an erased exchange kept)."""
    with session_scope(store_url) as session:
        other = int(create_brand(session, "business", brand_fields(company_name="Business"),
                                 settings=get_settings()).id)
    reviewed(store_url, WARRANTY_Q, WARRANTY_A)
    reviewed(store_url, "Is the SuperWidget warranty transferable?", "Yes, it follows the SuperWidget.")
    reviewed(store_url, RETURN_Q, RETURN_A, brand_id=other)
    redact_store(store_url)
    with session_scope(store_url) as session:
        ours, theirs = (memory_index(session, brand, newest=100) for brand in (DEFAULT_BRAND_ID, other))
    forget(store_url, actor="dpo", email="jane.doe@example.com")
    with session_scope(store_url) as session:
        ours_after, theirs_after = (memory_index(session, brand, newest=100) for brand in (DEFAULT_BRAND_ID, other))
    assert [e.reply for e in ours_after.exchanges] == ["Yes, it follows the SuperWidget."]
    assert ours_after.base is not ours.base and ours_after.base.vocab is ours.base.vocab  # trimmed, not rebuilt
    assert theirs_after.base is theirs.base and theirs_after.exchanges == theirs.exchanges
    assert [e.reply for e in recalled(store_url, "SuperWidget warranty")] == ["Yes, it follows the SuperWidget."]


PAST = ["My UltraHub is dead.", "My HyperDongle is dead.",
        "My SuperWidget is completely dead, nothing happens when I press the button",
        "How do I return my SuperWidget?", "SuperWidget shipping takes how long?", "Is the SuperWidget waterproof?"]


@pytest.mark.parametrize(("question", "best"), [
    ("My SuperWidget is dead.", 2),  # same product and symptom beats a shorter exchange about another product
    ("my superwidget is dead", 2),  # lower case, no full stop
    ("The UltraHub is dead", 0),
    ("return superwidget", 3),
    ("is it waterproof", 5),  # one known word: plain BM25
])
def test_the_past_exchange_sharing_most_of_the_question_ranks_first(question: str, best: int) -> None:
    """Catches: dropping the coordination factor (plain BM25 puts "My UltraHub is dead." first for a dead
    SuperWidget: the common product name weighs little and the short exchange wins on length)."""
    index = MemoryIndex.build([StoredExchange(i + 1, i + 1, text, f"reply {i}") for i, text in enumerate(PAST)])
    assert index.search(question, k=1, min_score=0.5)[0].exchange.customer == PAST[best]


def test_the_cached_index_is_extended_when_a_new_review_is_redacted(store_url: str) -> None:
    reviewed(store_url, WARRANTY_Q, WARRANTY_A)
    redact_store(store_url)
    with session_scope(store_url) as session:
        first = memory_index(session, DEFAULT_BRAND_ID, newest=100)
        assert memory_index(session, DEFAULT_BRAND_ID, newest=100) is first  # same stamp: no work
    reviewed(store_url, RETURN_Q, RETURN_A)
    redact_store(store_url)
    with session_scope(store_url) as session:
        grown = memory_index(session, DEFAULT_BRAND_ID, newest=100)
    assert grown.base is first.base and grown.tail_rows == 1 and len(grown) == 2


@pytest.mark.parametrize(("held", "recalled_products"), [
    (5, {"SuperWidget", "MegaGadget", "UltraPhone", "NanoHub", "PowerDock"}),
    (3, {"UltraPhone", "NanoHub", "PowerDock"}),  # the two oldest left out
    (1, {"PowerDock"}),
])
def test_memory_holds_the_brands_newest_exchanges_up_to_its_limit(store_url: str, held: int,
                                                                  recalled_products: set[str]) -> None:
    """HOUSESTYLE_MEMORY_MAX_EXCHANGES bounds the index to the newest reviews (catches: the limit not applied, or
    the oldest kept instead of the newest)."""
    products = ["SuperWidget", "MegaGadget", "UltraPhone", "NanoHub", "PowerDock"]  # reviewed in this order
    for product in products:
        reviewed(store_url, f"Is my {product} waterproof?", f"Yes, the {product} is waterproof.")
    redact_store(store_url)
    settings = memory_on(memory_max_exchanges=held, memory_examples=5)
    with session_scope(store_url) as session:
        assert len(memory_index(session, DEFAULT_BRAND_ID, newest=held)) == held
    found = {example.reply.split()[2] for example in recalled(store_url, "waterproof?", settings=settings)}
    assert found == recalled_products


def test_an_api_call_gets_the_same_past_answers_in_its_prompt_as_the_widget(store_url: str) -> None:
    import asyncio

    from plugin.openai.protocol import ChatCompletionRequest
    from plugin.openai.serving import ApiCall

    _, review_id = reviewed(store_url, WARRANTY_Q, WARRANTY_A)
    redact_store(store_url)
    settings = memory_on()
    body = ChatCompletionRequest(model="gadgetcorp-assistant",
                                 messages=[{"role": "user", "content": "Does the SuperWidget warranty cover me?"}])
    found = asyncio.run(assistant.recall_turns(settings, DEFAULT_BRAND_ID, [("user", body.messages[0].text())]))
    call = ApiCall.from_request(body, settings.system_prompt, DEFAULT_BRAND_ID, None, found)
    assert call.turn.recall.review_ids == [review_id]
    assert "Agent: Hi <PERSON_1>, the SuperWidget warranty lasts two years" in call.prompt[0]["content"]
    off = asyncio.run(assistant.recall_turns(get_settings(), DEFAULT_BRAND_ID, [("user", "warranty")]))
    assert off is None  # HOUSESTYLE_MEMORY_EXAMPLES=0: memory off, prompts as before


def test_a_training_example_is_shown_train_split_exchanges_only_never_its_own_or_held_out_ones(store_url: str) -> None:
    from collector.memory import training_keep

    train, _ = reviewed(store_url, "How long does SuperWidget shipping take?", "Shipping takes 5 days.")
    held_out, _ = reviewed(store_url, "SuperWidget shipping time?", "Five days (held out).")
    own, _ = reviewed(store_url, "SuperWidget shipping, how long?", "Five days (its own reply).")
    redact_store(store_url)
    splits = {train: "train", held_out: "test", own: "train"}
    with session_scope(store_url) as session:
        found = recall(session, [("user", "SuperWidget shipping, how long?")], brand_id=DEFAULT_BRAND_ID,
                       settings=memory_on(), keep=training_keep(splits, own)).examples
    assert [e.conversation_id for e in found] == [train]
