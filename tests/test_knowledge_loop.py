"""Knowledge and coverage in the running service: grounded drafts an agent can check, training examples with the
passages their agent saw, the coverage report on the dashboard, and auto mode handing over what it has not learned.

Without a model server attached, each test makes the draft the way the service does once a model has answered
(`assistant.turn_of` builds the prompt, `assistant.record_reply` keeps the draft); the vLLM test at the end sends
the message through the widget to the real model.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from sqlmodel import select

from collector import recorder
from collector.export import ExportOptions, export_dataset
from collector.importer import import_file
from collector.knowledge import PRODUCT_SHEET_PATH, SAMPLE_DOCUMENTS, add_document, groundings_for, remove_document
from collector.sample import SAMPLE_PATH
from core.db import session_scope
from core.models import Conversation, Draft, DraftStatus, Role
from core.prompts import KNOWLEDGE_HEADER
from core.settings import Settings, get_settings
from plugin import assistant
from tests.fixtures.service import RunningService, start_widget_conversation

MEGAGADGET_QUESTION = "How long is the battery on my MegaGadget covered?"
MEGAGADGET_FACT = "Its battery is covered for 12 months"
WARRANTY_PASSAGE = "MegaGadget › MegaGadget warranty"


def add_knowledge(url: str, paths=SAMPLE_DOCUMENTS) -> None:
    with session_scope(url) as session:
        for path in paths:
            add_document(session, path, settings=get_settings())


def customer_writes(service: RunningService, mode: str, *messages: str) -> str:
    """A widget conversation whose customer sent `messages` (no model server: each is stored, the widget told to
    retry); returns its public id."""
    conversation = start_widget_conversation(service.client("widget"), channel="web", mode=mode)
    for message in messages:
        assert conversation.send(message).status_code == 503
    return conversation.id


def conversation_of(service: RunningService, conversation_id: str) -> list[dict]:
    """The conversation's messages as the customer sees them."""
    with session_scope(service.app.state.settings.resolved_database_url) as session:
        conversation = recorder.find_conversation(session, "web", conversation_id)
        return [{"role": str(m.role), "content": m.content} for m in recorder.transcript(session, conversation.id)]


def model_answers(settings: Settings, conversation_id: str, text: str) -> tuple[assistant.Turn, int]:
    """What the service does with the model's answer to the conversation's latest message: (turn, draft id)."""
    with session_scope(settings.resolved_database_url) as session:
        turn = assistant.turn_of(settings, session, recorder.find_conversation(session, "web", conversation_id))
    return turn, assistant.record_reply(settings, turn, text, "v0001-aaaa", 20.0).id


def test_the_agent_sees_the_passages_a_megagadget_draft_was_given_and_training_gets_the_same_prompt(
    plugin_service: RunningService, store_url: str, tmp_path: Path
) -> None:
    settings = plugin_service.app.state.settings
    add_knowledge(store_url)
    conversation = customer_writes(plugin_service, "assist", MEGAGADGET_QUESTION)
    turn, draft_id = model_answers(settings, conversation, "Your MegaGadget's battery is covered for 12 months.")
    system = turn.prompt[0]["content"]
    assert system.startswith(settings.system_prompt + "\n\n" + KNOWLEDGE_HEADER)
    assert f"[1] {WARRANTY_PASSAGE}\n" in system and MEGAGADGET_FACT in system
    assert turn.prompt[1:] == [{"role": "user", "content": MEGAGADGET_QUESTION}]

    agent = plugin_service.client("agent")
    shown = agent.get(f"/reviews/{draft_id}").json()
    assert shown["passages"][0]["title"] == WARRANTY_PASSAGE
    assert shown["passages"][0]["document"] == PRODUCT_SHEET_PATH.name and shown["passages"][0]["score"] > 0
    assert MEGAGADGET_FACT in shown["passages"][0]["text"]
    assert [item["passages"] for item in agent.get("/reviews/queue").json()] == [shown["passages"]]
    final = "Good news: your MegaGadget's battery is covered for 12 months from purchase."
    assert agent.post(f"/reviews/{draft_id}/edit", json={"final_text": final}).status_code == 200

    # the training example's prompt is the prompt the draft was served with, knowledge block and all
    export = export_dataset(ExportOptions(out=tmp_path / "export", redact=False, dedup=False), settings=settings,
                            progress=False)
    records = [json.loads(line) for name in export.files.values()
               for line in (tmp_path / "export" / name).read_text().splitlines()]
    ours = [r for r in records if r["messages"][-1]["content"] == final]
    with session_scope(store_url) as session:
        served = session.get(Draft, draft_id).prompt
    assert len(ours) == 1 and ours[0]["messages"][:-1] == served


def test_a_megagadget_draft_carries_the_warranty_fact_only_while_the_knowledge_base_has_it(
    plugin_service: RunningService, store_url: str
) -> None:
    settings = plugin_service.app.state.settings
    add_knowledge(store_url)
    conversation = customer_writes(plugin_service, "assist", MEGAGADGET_QUESTION)
    grounded, _ = model_answers(settings, conversation, "A reply.")
    assert MEGAGADGET_FACT in grounded.prompt[0]["content"]

    with session_scope(store_url) as session:
        remove_document(session, PRODUCT_SHEET_PATH.name)  # the FAQ stays; it says nothing of the battery
    plain, draft_id = model_answers(settings, conversation, "A reply.")
    assert MEGAGADGET_FACT not in plain.prompt[0]["content"]
    assert all(p["title"] != WARRANTY_PASSAGE for p in plugin_service.client("agent").get(
        f"/reviews/{draft_id}").json()["passages"])

    switched_off = settings.model_copy(update={"knowledge_grounding": False})
    add_knowledge(store_url, [PRODUCT_SHEET_PATH])
    off, draft_id = model_answers(switched_off, conversation, "A reply.")
    assert off.prompt[0]["content"] == settings.system_prompt
    assert plugin_service.client("agent").get(f"/reviews/{draft_id}").json()["passages"] == []


def test_the_dashboard_report_flags_products_with_no_training_conversations(
    plugin_service: RunningService, store_url: str
) -> None:
    import_file(SAMPLE_PATH, source="sample", url=store_url)
    add_knowledge(store_url)
    assert plugin_service.client("agent").get("/admin/coverage").status_code == 403
    answer = plugin_service.client("admin").get("/admin/coverage")
    assert answer.status_code == 200, answer.text
    coverage = answer.json()
    assert coverage["live_version"] == "base" and coverage["run_id"] is None and coverage["routing"] is True
    report = coverage["report"]
    assert "PicoSpeaker: 0 conversations, 0 in training (need 5)" in report["gaps"]
    assert "ZenBand: 0 conversations, 0 in training (need 5)" in report["gaps"]
    mega = next(topic for topic in report["products"] if topic["name"] == "MegaGadget")
    assert mega["training_conversations"] == 41 and mega["gaps"] == []


def test_an_auto_mode_message_on_a_product_not_learned_waits_in_the_review_queue_with_the_reason(
    start_service, store_url: str
) -> None:
    import_file(SAMPLE_PATH, source="sample", url=store_url)
    add_knowledge(store_url)
    service = start_service()
    settings = service.app.state.settings
    agent = service.client("agent")

    learned = customer_writes(service, "auto", "My SuperWidget won't turn on.")
    turn, draft_id = model_answers(settings, learned, "Please hold the power button for ten seconds.")
    assert turn.handoff is None  # sent at once; agents review it afterwards, as every auto-mode draft
    assert [m["role"] for m in conversation_of(service, learned)] == ["user", "assistant"]
    assert {i["draft_id"]: i for i in agent.get("/reviews/queue").json()}[draft_id]["handoff_reason"] is None

    unknown = customer_writes(service, "auto", "My PicoSpeaker crackles at high volume.")
    turn, draft_id = model_answers(settings, unknown, "Try turning it down.")
    reason = "not learned yet: PicoSpeaker: 0 conversations, 0 in training (need 5)"
    assert turn.handoff is not None and turn.handoff.startswith(reason)
    queued = {item["draft_id"]: item for item in agent.get("/reviews/queue").json()}
    assert queued[draft_id]["handoff_reason"] == turn.handoff and queued[draft_id]["mode"] == "auto"
    assert [m["role"] for m in conversation_of(service, unknown)] == ["user"]  # the customer waits for an agent
    with session_scope(store_url) as session:
        assert session.get(Draft, draft_id).status == DraftStatus.PENDING

    # a follow-up that names no product is still about the PicoSpeaker
    with session_scope(store_url) as session:
        recorder.add_message(session, recorder.find_conversation(session, "web", unknown).id, Role.USER,
                             "Tried that, no luck.")
    follow_up, _ = model_answers(settings, unknown, "Sorry to hear that.")
    assert follow_up.handoff is not None and "PicoSpeaker" in follow_up.handoff

    # routing off, or a lower bar: the same message goes out
    for changed in ({"coverage_routing": False}, {"coverage_min_training_conversations": 0}):
        turn, _ = model_answers(settings.model_copy(update=changed), unknown, "Try turning it down.")
        assert turn.handoff is None, changed


def test_a_fresh_store_in_auto_mode_answers_as_configured(plugin_service: RunningService, store_url: str) -> None:
    add_knowledge(store_url)  # products known, but no conversation to have learned anything from
    conversation = customer_writes(plugin_service, "auto", "My PicoSpeaker crackles at high volume.")
    turn, _ = model_answers(plugin_service.app.state.settings, conversation, "Try turning it down.")
    assert turn.handoff is None


@pytest.mark.vllm
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_through_the_widget_an_unlearned_product_is_handed_over_with_its_passages(
    store_url: str, serving_settings: Settings, start_service
) -> None:
    from serving.gateway import ServingGateway

    import_file(SAMPLE_PATH, source="sample", url=store_url)
    add_knowledge(store_url)
    service = start_service(gateway=ServingGateway(serving_settings, database_url=store_url), reply_max_tokens=16)
    widget = service.client("widget")
    learned = start_widget_conversation(widget, channel="web", mode="auto").send("My SuperWidget won't turn on.")
    assert learned.status_code == 200, learned.text
    if learned.json()["awaiting_agent"]:  # the tiny base may say nothing usable: then it is handed over for that
        assert "not learned" not in json.dumps(service.client("agent").get("/reviews/queue").json())

    conversation = start_widget_conversation(widget, channel="web", mode="auto")
    answer = conversation.send("My PicoSpeaker crackles at high volume. Is it still under warranty?")
    assert answer.status_code == 200, answer.text
    assert answer.json()["awaiting_agent"] is True and answer.json()["reply"] is None
    assert [m["role"] for m in conversation.history()["messages"]] == ["user"]
    queue = service.client("agent").get("/reviews/queue").json()
    item = next(i for i in queue if i["context"][-1]["content"].startswith("My PicoSpeaker crackles"))
    assert item["handoff_reason"].startswith("not learned yet: PicoSpeaker: ")
    assert "0 in training (need 5)" in item["handoff_reason"]
    assert "PicoSpeaker › PicoSpeaker warranty" in [passage["title"] for passage in item["passages"]]
    with session_scope(store_url) as session:
        prompt = session.get(Draft, item["draft_id"]).prompt
    assert "] PicoSpeaker › PicoSpeaker warranty\n" in prompt[0]["content"]

    # an API client asking about a product is grounded the same way, and its recorded draft keeps the passages
    api = service.client("agent")
    model = api.get("/v1/models").json()["data"][0]["id"]
    asked = api.post("/v1/chat/completions", json={
        "model": model, "max_tokens": 8, "messages": [{"role": "user", "content": MEGAGADGET_QUESTION}]})
    assert asked.status_code == 200, asked.text
    draft = api_draft_once_recorded(store_url, MEGAGADGET_QUESTION)
    assert f"] {WARRANTY_PASSAGE}\n" in draft.prompt[0]["content"] and MEGAGADGET_FACT in draft.prompt[0]["content"]
    with session_scope(store_url) as session:
        kept = groundings_for(session, [draft.id])[draft.id]
    assert WARRANTY_PASSAGE in [passage.title for passage in kept.passages]


def api_draft_once_recorded(url: str, question: str, timeout_s: float = 30.0) -> Draft:
    """The draft of the API call that asked `question` (calls are recorded just after the answer goes out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with session_scope(url) as session:
            drafts = session.execute(
                select(Draft).join(Conversation, Conversation.id == Draft.conversation_id)
                .where(Conversation.channel == "api")
            ).scalars().all()
            mine = [d for d in drafts if d.prompt[-1]["content"] == question]
            if mine:
                session.expunge(mine[0])
                return mine[0]
        assert time.monotonic() < deadline, f"no API call asking {question!r} was recorded"
        time.sleep(0.2)


def test_an_api_client_asking_what_a_widget_customer_asked_gets_the_same_grounded_prompt(
    plugin_service: RunningService, store_url: str
) -> None:
    from plugin.openai.protocol import ChatCompletionRequest
    from plugin.openai.serving import ApiCall, ground_call

    add_knowledge(store_url)
    conversation = customer_writes(plugin_service, "assist", MEGAGADGET_QUESTION)
    turn, _ = model_answers(plugin_service.app.state.settings, conversation, "Covered for 12 months.")
    brand = asyncio.run(plugin_service.app.state.brands.entries())[turn.brand_id]
    body = ChatCompletionRequest(model=brand.public_model_name,
                                 messages=[{"role": "user", "content": MEGAGADGET_QUESTION}])
    call = ApiCall.from_request(body, brand.settings.system_prompt, brand.id, asyncio.run(ground_call(body, brand)))
    assert call.prompt == turn.prompt and MEGAGADGET_FACT in call.prompt[0]["content"]


@pytest.mark.browser
def test_the_console_shows_why_a_draft_waits_and_what_it_was_given_and_the_dashboard_lists_the_gaps(
    housestyle_home: Path, start_service, open_page
) -> None:
    from playwright.sync_api import expect

    from tests.test_web_ui import log_in

    service = start_service(rate_limit_per_second=1000, rate_limit_burst=1000)
    url = service.app.state.settings.resolved_database_url
    import_file(SAMPLE_PATH, source="sample", url=url)
    add_knowledge(url)
    conversation = customer_writes(service, "auto", "Is my PicoSpeaker still under warranty?")
    _, draft_id = model_answers(service.app.state.settings, conversation, "Yes, for one year.")

    page = open_page()
    log_in(page, service, "agent")
    page.get_by_role("list", name="Drafts waiting for review").locator(f'[data-draft-id="{draft_id}"]').click()
    # the customer's own conversation counts: the PicoSpeaker has 1, none of them in training
    expect(page.locator("#handoff")).to_contain_text("not learned yet: PicoSpeaker: 1 conversation, 0 in training")
    passages = page.locator("#passages")
    expect(passages).to_be_visible()
    passages.locator("summary").click()
    expect(passages.locator("li").first).to_contain_text("PicoSpeaker › PicoSpeaker warranty")

    page.get_by_role("button", name="Log out").click()
    log_in(page, service, "admin")
    gaps = page.get_by_role("list", name="Topics not learned")
    expect(gaps).to_contain_text("PicoSpeaker: 1 conversation, 0 in training (need 5)")
    expect(gaps).to_contain_text("ZenBand: 0 conversations, 0 in training (need 5)")
    expect(page.locator("#coverage-source")).to_contain_text("computed from the store")


def test_routing_judges_by_the_coverage_the_live_versions_refresh_recorded(
    plugin_service: RunningService, store_url: str
) -> None:
    from collector.coverage import coverage_report
    from core.models import AdapterStatus, RunStatus, TrainingRun
    from core.registry import register_adapter, set_status

    settings = plugin_service.app.state.settings
    add_knowledge(store_url)
    with session_scope(store_url) as session:  # v0001 was trained before any MegaGadget conversation arrived
        recorded = coverage_report(session, settings=settings).model_dump(mode="json")
        recorded["splits"]["train"] = 50  # what its export had (SuperWidget and others, no MegaGadget)
        register_adapter(session, version="v0001-aaaaaaaa", path="/a/1", base_model="tiny", rank=8)
        set_status(session, "v0001-aaaaaaaa", AdapterStatus.LIVE, action="promote", actor="ana")
        run = TrainingRun(kind="refresh", status=RunStatus.SUCCEEDED, adapter_version="v0001-aaaaaaaa",
                          metrics={"gate": {}, "coverage": recorded})
        session.add(run)
        session.flush()
        run_id = run.id
    import_file(SAMPLE_PATH, source="sample", url=store_url)  # plenty of MegaGadget conversations since

    coverage = plugin_service.client("admin").get("/admin/coverage").json()
    assert (coverage["live_version"], coverage["run_id"]) == ("v0001-aaaaaaaa", run_id)
    conversation = customer_writes(plugin_service, "auto", MEGAGADGET_QUESTION)
    turn, _ = model_answers(settings, conversation, "A reply.")
    assert turn.handoff is not None and "MegaGadget: 0 conversations, 0 in training (need 5)" in turn.handoff


WARRANTY = ["MegaGadget › MegaGadget warranty", "Its battery is covered for 12 months."]
RETURNS = ["Returns", "Return it within 30 days."]


@pytest.mark.parametrize(
    ("fmt", "exchanges", "expected"),
    [
        ("chat", [["Hi", "Hello!"], ["Thanks", "Bye"]], [("", 4)]),
        ("chat", [["Battery?", "12 months.", [WARRANTY]], ["And after?", "$39.", [WARRANTY]]], [("12 months", 4)]),
        ("chat", [["Hi", "Hello!", []], ["Battery?", "12 months.", [WARRANTY]]], [("", 2), ("12 months", 4)]),
        ("chat", [["Battery?", "12 months.", [WARRANTY]], ["Return?", "30 days.", [RETURNS]]],
         [("12 months", 2), ("30 days", 4)]),
        ("prompt-completion", [["Battery?", "12 months.", [WARRANTY]], ["Return?", "30 days.", [RETURNS]]],
         [("12 months", 0), ("30 days", 0)]),
    ],
    ids=["no-knowledge-one-record", "same-passages-one-record", "passages-from-the-second-reply-on",
         "different-passages-one-record-per-reply", "prompt-completion-each-reply-its-own"],
)
def test_each_training_reply_is_rendered_with_the_passages_its_prompt_carried(
    fmt: str, exchanges: list, expected: list[tuple[str, int]], request: pytest.FixtureRequest
) -> None:
    from collector.export.render import records
    from core.chat_template import chat_tokenizer

    # prompt-completion renders the served prompt with the base's chat template (the tiny base's `<|system|>`...)
    tokenizer = chat_tokenizer(str(request.getfixturevalue("tiny_base"))) if fmt == "prompt-completion" else None
    rendered = records(fmt, "SYSTEM", exchanges, tokenizer=tokenizer)
    if fmt == "chat":
        shown = [(m[0]["content"], len(m) - 1) for m in (r["messages"] for r in rendered)]
    else:
        shown = [(r["prompt"].split("<|system|>\n")[1].split("<|end|>")[0], 0) for r in rendered]
    assert len(shown) == len(expected)
    for (system, turns), (fact, expected_turns) in zip(shown, expected, strict=True):
        assert system.startswith("SYSTEM")
        assert (fact in system) if fact else system == "SYSTEM"
        assert turns == expected_turns
