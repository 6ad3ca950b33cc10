"""Coverage before training: which products and intents the data covers, the gaps, and what auto mode hands over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector import recorder
from collector.coverage import (
    CoverageReport,
    CoverageThresholds,
    TopicCoverage,
    coverage_report,
    route_by_coverage,
    topic_gaps,
)
from collector.export import ExportOptions, export_dataset
from collector.importer import import_file
from collector.knowledge import PRODUCT_SHEET_PATH, SAMPLE_DOCUMENTS, add_document
from collector.knowledge.topics import DEFAULT_INTENTS, ProductMatcher, intent_classifier
from collector.sample import SAMPLE_PATH, make_sample
from collector.split import SplitRatios, assign_split
from collector.stats import VersionStats
from core import db
from core.models import ReplyMode, Role
from core.settings import Settings, get_settings
from tests.fixtures.stores import redact_store
from tests.test_knowledge import housestyle

THRESHOLDS = CoverageThresholds(min_training_conversations=5, max_correction_rate=0.5, min_reviews=5)
SETTINGS = Settings(coverage_min_training_conversations=5, coverage_max_correction_rate=0.5, coverage_min_reviews=5)


def external_ids(in_train: bool, count: int) -> list[str]:
    """Conversation ids on channel web whose export split is (or is not) train, by the export's own rule."""
    found = []
    for number in range(10_000):
        external_id = f"conv-{number}"
        if (assign_split(f"web/{external_id}", 0, SplitRatios()) == "train") == in_train:
            found.append(external_id)
        if len(found) == count:
            return found
    raise AssertionError("not enough ids")


def reviewed_conversation(
    session, external_id: str, exchanges: list[tuple[str, str]], version: str = "v0001-aaaa"
) -> None:
    """A live conversation: each (customer text, agent decision) is a draft by `version` reviewed by alice."""
    conversation = recorder.start_conversation(session, external_id=external_id, channel="web", mode=ReplyMode.ASSIST)
    for text, decision in exchanges:
        recorder.add_message(session, conversation.id, Role.USER, text)
        draft = recorder.record_draft(session, conversation.id, "A draft reply.", adapter_version=version)
        final = "The agent's own reply." if decision in ("edited", "rejected") else None
        recorder.record_review(session, draft.id, decision, agent_id="alice", final_text=final)


def test_the_report_flags_a_product_with_no_training_conversations_and_a_high_correction_rate(store_url: str) -> None:
    with db.session_scope(store_url) as session:
        for path in SAMPLE_DOCUMENTS:
            add_document(session, path, settings=get_settings())
        for external_id in external_ids(True, 6):
            reviewed_conversation(session, external_id, [("My SuperWidget won't turn on.", "approved")])
        mega = external_ids(False, 3)
        reviewed_conversation(
            session, mega[0], [("My MegaGadget won't turn on.", "edited"), ("Still dead.", "rejected")]
        )
        reviewed_conversation(
            session, mega[1], [("Is my MegaGadget under warranty?", "edited"), ("Thanks!", "approved")]
        )
        reviewed_conversation(session, mega[2], [("My MegaGadget keeps disconnecting.", "edited")])
        report = coverage_report(session, settings=SETTINGS)

    mega_gadget, super_widget, pico = (
        report.product("MegaGadget"),
        report.product("SuperWidget"),
        report.product("PicoSpeaker"),
    )
    assert (mega_gadget.conversations, mega_gadget.training_conversations, mega_gadget.reviews.reviews) == (3, 0, 5)
    assert mega_gadget.correction_rate == pytest.approx(0.8)
    assert mega_gadget.gap_line() == (
        "MegaGadget: 3 conversations, 0 in training (need 5); correction rate 80% over 5 reviews (limit 50%)"
    )
    assert super_widget.learned and super_widget.training_conversations == 6 and super_widget.passages == 4
    assert pico.gap_line() == "PicoSpeaker: 0 conversations, 0 in training (need 5)"
    assert report.gaps[:2] == [mega_gadget.gap_line(), report.product("HyperDongle").gap_line()]
    assert report.intent("power").conversations == 7 and report.intent("power").training_conversations == 6
    assert report.splits["train"] == 6 and report.conversations == 9
    assert "MegaGadget: 3 conversations, 0 in training (need 5); correction rate 80%" in report.summary()
    assert CoverageReport.model_validate_json(report.model_dump_json()).gaps == report.gaps  # the dashboard's JSON


def test_split_counts_are_the_exports_own_before_and_after_de_duplication(store_url: str, tmp_path: Path) -> None:
    import_file(SAMPLE_PATH, source="sample", url=store_url)
    with db.session_scope(store_url) as session:
        add_document(session, PRODUCT_SHEET_PATH, settings=get_settings())
    redact_store(store_url)
    plain = export_dataset(ExportOptions(out=tmp_path / "plain", dedup=False), settings=get_settings(), progress=False)
    deduplicated = export_dataset(ExportOptions(out=tmp_path / "dedup"), settings=get_settings(), progress=False)
    with db.session_scope(store_url) as session:
        by_rule = coverage_report(session, include_imported=True, settings=get_settings())
        exact = coverage_report(session, include_imported=True, export_dir=tmp_path / "dedup", settings=get_settings())
    assert by_rule.splits == plain.conversations
    assert exact.splits == deduplicated.conversations and exact.export_dir == str(tmp_path / "dedup")
    # every exported conversation lands under some product row (or "(no product)")
    assert sum(topic.training_conversations for topic in exact.products) >= deduplicated.conversations["train"]
    assert by_rule.product("SuperWidget").conversations == 88 and by_rule.product("PicoSpeaker").conversations == 0
    assert exact.product("SuperWidget").training_conversations < by_rule.product("SuperWidget").training_conversations


def test_correction_rates_count_one_version_and_leave_imported_history_out_unless_asked(store_url: str) -> None:
    import_file(SAMPLE_PATH, source="sample", url=store_url)
    with db.session_scope(store_url) as session:
        add_document(session, PRODUCT_SHEET_PATH, settings=get_settings())
        reviewed_conversation(session, "live-1", [("My MegaGadget won't turn on.", "edited")], version="v0002-bbbb")
        reviewed_conversation(session, "live-2", [("My MegaGadget is dead.", "approved")], version="v0003-cccc")
        live = coverage_report(session, settings=get_settings()).product("MegaGadget").reviews
        v2 = coverage_report(session, version="v0002-bbbb", settings=get_settings()).product("MegaGadget").reviews
        history = coverage_report(session, include_imported=True, settings=get_settings()).product("MegaGadget").reviews
    assert (live.reviews, live.edited, live.approved) == (2, 1, 1)
    assert (v2.version, v2.reviews, v2.correction_rate) == ("v0002-bbbb", 1, 1.0)
    assert history.reviews == 86 + 2


@pytest.mark.parametrize(
    ("conversations", "training", "reviews", "corrected", "expected"),
    [
        (3, 0, 5, 4, ["3 conversations, 0 in training (need 5)", "correction rate 80% over 5 reviews (limit 50%)"]),
        (1, 0, 0, 0, ["1 conversation, 0 in training (need 5)"]),
        (10, 5, 0, 0, []),
        (20, 20, 4, 4, []),  # four reviews: too few to judge the rate
        (20, 20, 10, 5, []),  # 50% is not above the 50% limit
        (20, 20, 10, 6, ["correction rate 60% over 10 reviews (limit 50%)"]),
    ],
)
def test_topic_gaps(conversations: int, training: int, reviews: int, corrected: int, expected: list[str]) -> None:
    assert topic_gaps(topic("X", conversations, training, reviews, corrected), THRESHOLDS) == expected


# --- routing by coverage: a pure decision, table-driven -----------------------------------------------------------------


def topic(name: str, conversations: int, training: int, reviews: int = 0, corrected: int = 0) -> TopicCoverage:
    stats = VersionStats(
        version="v0001-aaaa",
        reviews=reviews,
        approved=reviews - corrected,
        edited=corrected,
        rejected=0,
        mean_edit_distance=0.0,
    )
    made = TopicCoverage(
        name=name,
        passages=1,
        conversations=conversations,
        splits={"train": training, "validation": 0, "test": 0},
        reviews=stats,
    )
    made.gaps = topic_gaps(made, THRESHOLDS)
    return made


REPORT = CoverageReport(
    created_at="2026-12-01T00:00:00Z",
    version="v0001-aaaa",
    include_imported=False,
    thresholds=THRESHOLDS,
    export_options={},
    export_dir=None,
    intents_table=DEFAULT_INTENTS,
    documents=1,
    passages=38,
    conversations=120,
    splits={"train": 100, "validation": 10, "test": 10},
    products=[
        topic("SuperWidget", 60, 50, 40, 8),
        topic("MegaGadget", 3, 0, 5, 4),
        topic("NanoCharger", 30, 25, 20, 15),
    ],
    intents=[
        topic("power", 40, 35),
        topic("battery", 20, 15),
        topic("warranty", 20, 15, 10, 7),
        topic("hours", 30, 3),
        topic("shipping", 20, 18),
    ],
)
MEGA = "MegaGadget: 3 conversations, 0 in training (need 5); correction rate 80% over 5 reviews (limit 50%)"


@pytest.mark.parametrize(
    ("message", "earlier", "to_agent", "reason", "products", "intent"),
    [
        ("My SuperWidget won't turn on.", [], False, None, ["SuperWidget"], "power"),
        (
            "How long is the battery on my MegaGadget covered?",
            [],
            True,
            f"not learned yet: {MEGA}",
            ["MegaGadget"],
            "battery",
        ),
        ("my mega gadget is dead", [], True, f"not learned yet: {MEGA}", ["MegaGadget"], "power"),
        (
            "Tried that, no luck.",
            ["My MegaGadget won't turn on."],
            True,
            f"not learned yet: {MEGA}",
            ["MegaGadget"],
            "power",
        ),
        ("Thanks, that worked!", ["My SuperWidget won't turn on."], False, None, ["SuperWidget"], "power"),
        ("Thanks, that worked!", [], False, None, [], None),
        (
            "What are your opening hours?",
            [],
            True,
            "not learned yet: hours: 30 conversations, 3 in training (need 5)",
            [],
            "hours",
        ),
        (
            "Is my SuperWidget still under warranty?",
            [],
            True,
            "not learned yet: warranty: correction rate 70% over 10 reviews (limit 50%)",
            ["SuperWidget"],
            "warranty",
        ),
        (
            "My NanoCharger battery drains fast",
            [],
            True,
            "not learned yet: NanoCharger: correction rate 75% over 20 reviews (limit 50%)",
            ["NanoCharger"],
            "battery",
        ),
        (
            "Is my MegaGadget under warranty?",
            [],
            True,
            f"not learned yet: {MEGA} | warranty: correction rate 70% over 10 reviews (limit 50%)",
            ["MegaGadget"],
            "warranty",
        ),
        ("My FooPhone won't turn on.", [], False, None, [], "power"),
        ("Has my SuperWidget shipped?", [], False, None, ["SuperWidget"], "shipping"),
    ],
    ids=[
        "learned-product",
        "no-training-data",
        "spelled-apart",
        "follow-up-keeps-product",
        "thanks-after-learned",
        "small-talk",
        "intent-not-learned",
        "intent-corrected-too-often",
        "product-corrected-too-often",
        "both-gaps-in-one-reason",
        "product-not-in-knowledge-base",
        "learned-product-and-intent",
    ],
)
def test_auto_mode_hands_a_message_to_an_agent_only_on_a_topic_not_learned(
    message: str, earlier: list[str], to_agent: bool, reason: str | None, products: list[str], intent: str | None
) -> None:
    decision = route_by_coverage(REPORT, message, earlier=earlier)
    assert (decision.to_agent, decision.reason, decision.products, decision.intent) == (
        to_agent,
        reason,
        products,
        intent,
    )


# --- finding topics -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("My SuperWidget and my MegaGadget", ["SuperWidget", "MegaGadget"]),
        ("my super widget, two super-widgets, SUPERWIDGET", ["SuperWidget"]),
        ("a megagadgetry store", []),
        ("NanoCharger", ["NanoCharger"]),
        ("my SuperWidget's battery", ["SuperWidget"]),
        ("the megagadget mini and the MegaGadget", ["MegaGadget Mini", "MegaGadget"]),
        ("super, widget", []),
        ("", []),
    ],
)
def test_product_names_are_found_however_customers_write_them(text: str, found: list[str]) -> None:
    matcher = ProductMatcher(["SuperWidget", "MegaGadget", "NanoCharger", "MegaGadget Mini"])
    assert matcher.find(text) == found


def test_spellings_are_written_back_as_the_knowledge_base_names_them() -> None:
    matcher = ProductMatcher(["SuperWidget", "MegaGadget"])
    assert (
        matcher.canonicalise("is my mega gadget or super-widgets covered?")
        == "is my MegaGadget or SuperWidget covered?"
    )


def test_the_keyword_intents_agree_with_every_complaint_the_sample_was_generated_from() -> None:
    classifier = intent_classifier()
    wrong = [
        (issue, template.format(p=product), classifier.classify(template.format(p=product)))
        for product, issues in make_sample.SUGGESTIONS.items()
        for issue in issues
        for template in make_sample.COMPLAINTS[issue]
        if classifier.classify(template.format(p=product)) != issue
    ]
    assert wrong == []
    assert [classifier.classify(text) for text in make_sample.THANKS + make_sample.NO_LUCK] == [None] * 8


# --- the CLI ------------------------------------------------------------------------------------------------------------


def test_cli_prints_the_report_with_its_gaps_and_json_for_the_dashboard(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOUSESTYLE_BASE_MODEL", str(tiny_base))  # what a prompt-completion export renders with
    assert housestyle("import", "--sample", home=tmp_path).returncode == 0
    assert housestyle("knowledge", "add", "--sample", home=tmp_path).returncode == 0
    printed = housestyle("coverage", "--include-imported", home=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "  PicoSpeaker: 0 conversations, 0 in training (need 5)" in printed.stdout.splitlines()
    assert printed.stdout.startswith("knowledge base: 2 documents, 38 passages, 7 products\nconversations: 384\n")
    report = json.loads(housestyle("coverage", "--json", home=tmp_path).stdout)
    assert report["gaps"][0] == "PicoSpeaker: 0 conversations, 0 in training (need 5)"
    assert [p["name"] for p in report["products"]][:2] == ["SuperWidget", "MegaGadget"]
    assert (
        housestyle("export", "--format", "prompt-completion", "--out", str(tmp_path / "pc"), home=tmp_path).returncode
        == 0
    )
    refused = housestyle("coverage", "--export", str(tmp_path / "pc"), home=tmp_path)
    assert (
        refused.returncode == 1
        and refused.stderr.startswith("error: ")
        and "coverage reads chat or hf" in refused.stderr
    )
