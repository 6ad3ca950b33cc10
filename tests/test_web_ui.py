"""The web UI in a real headless Chromium: the chat widget on a shop page, the agent console, the admin dashboard.

The last tests run the whole story on the real vLLM: a customer asks about a SuperWidget in the widget, an agent
edits the draft in the console, the customer sees the edited text, and the admin promotes a version live.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from collector import recorder
from core.db import session_scope
from core.models import (
    AdapterStatus,
    AdapterVersion,
    Review,
    ReviewDecision,
    Role,
    RunStatus,
    TrainingRun,
    utcnow,
)
from core.registry import record_held_out, register_adapter, set_status
from tests.fixtures.browser import PHONE, screenshot
from tests.fixtures.service import EndToEndService, RunningService, WidgetConversation
from tests.fixtures.vllm import make_lora_adapter, register_adapter_folder

pytestmark = pytest.mark.browser


def seed_draft(url: str, question: str, draft: str, *, version: str | None = None, channel: str = "web") -> int:
    """A customer question with the assistant's pending draft, as the widget would have stored it."""
    with session_scope(url) as session:
        conversation = recorder.start_conversation(session, channel=channel)
        recorder.add_message(session, conversation.id, Role.USER, question)
        return recorder.record_draft(session, conversation.id, draft, adapter_version=version).id


def seed_review(url: str, version: str, decision: ReviewDecision, *, agent: str = "alice") -> None:
    draft_id = seed_draft(url, "Is the SuperWidget waterproof?", "Yes it is.", version=version)
    final = "Yes, it is splash-proof (IPX4)." if decision == ReviewDecision.EDITED else None
    with session_scope(url) as session:
        recorder.record_review(session, draft_id, decision, agent_id=agent, final_text=final)


def log_in(page: Any, service: RunningService, role: str, *, key: str | None = None) -> None:
    page.goto(f"{service.url}/ui/login")
    page.get_by_label("API key").fill(key or service.keys[role])
    page.get_by_role("button", name="Log in").click()


# --- the JSON the dashboard reads (both stores) -------------------------------------------------------------
def test_dashboard_api_reports_runs_correction_rate_history_and_the_callers_role(plugin_service: RunningService) -> None:
    url = plugin_service.app.state.settings.resolved_database_url
    for decision in (ReviewDecision.EDITED, ReviewDecision.APPROVED, ReviewDecision.APPROVED, ReviewDecision.REJECTED):
        seed_review(url, "v0001-aaaaaaaa", decision)
    seed_review(url, "v0002-bbbbbbbb", ReviewDecision.EDITED)
    seed_review(url, "v0002-bbbbbbbb", ReviewDecision.EDITED, agent="import")  # imported history: not live feedback
    with session_scope(url) as session:
        session.add(TrainingRun(kind="refresh", status=RunStatus.RUNNING, step="train", progress=0.5,
                                log="line\n" * 1000, adapter_version="v0003-cccccccc"))
        register_adapter(session, version="v0003-cccccccc", path="/adapters/v3", base_model="tiny", rank=8,
                         metrics={"chrf": 41.5}, actor="ana")

    admin = plugin_service.client("admin")
    assert {role: plugin_service.client(role).get("/me").json()["role"] for role in ("widget", "agent", "admin")} == {
        "widget": "widget", "agent": "agent", "admin": "admin"}

    runs = admin.get("/admin/runs").json()
    assert [(r["status"], r["step"], r["progress"]) for r in runs] == [("running", "train", 0.5)]
    assert len(runs[0]["log_tail"]) == 2000

    rates = admin.get("/admin/correction-rate", params={"bucket_minutes": 60}).json()
    series = {s["version"]: s["points"] for s in rates["series"]}
    assert set(series) == {"v0001-aaaaaaaa", "v0002-bbbbbbbb"}
    [v1] = series["v0001-aaaaaaaa"]
    assert (v1["reviews"], v1["approved"], v1["edited"], v1["rejected"], v1["correction_rate"]) == (4, 2, 1, 1, 0.5)
    assert [p["correction_rate"] for p in series["v0002-bbbbbbbb"]] == [1.0]
    old_name = admin.get("/admin/edit-rate", params={"bucket_minutes": 60}).json()  # the old path still answers
    assert old_name["series"] == rates["series"]
    later = (utcnow() + timedelta(hours=1)).isoformat()
    assert admin.get("/admin/correction-rate", params={"since": later}).status_code == 422  # since after until

    history = admin.get("/admin/adapter-history").json()
    assert (history[0]["version"], history[0]["action"], history[0]["actor"]) == ("v0003-cccccccc", "register", "ana")
    assert plugin_service.client("agent").get("/admin/runs").status_code == 403


# --- pages without a model server ---------------------------------------------------------------------------------
@pytest.fixture
def ui_service(housestyle_home: Path, start_service: Callable[..., RunningService]) -> RunningService:
    """The service on a fresh SQLite store, no model servers: enough for the console and the dashboard."""
    return start_service(rate_limit_per_second=1000, rate_limit_burst=1000)


def test_each_role_sees_only_its_pages_and_nothing_loads_from_elsewhere(
    ui_service: RunningService, open_page: Callable[..., Any]
) -> None:
    page = open_page(allow_errors=("401",))  # the refused key's 401 is logged by Chromium itself
    page.goto(f"{ui_service.url}/ui/console")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))  # no key yet: off to log in, then back
    page.get_by_label("API key").fill("not-a-real-key")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert").filter(has_text="unknown or revoked")).to_be_visible()
    screenshot(page, "login")

    page.get_by_label("API key").fill(ui_service.keys["agent"])
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/ui/console$"))
    expect(page.get_by_role("heading", name=re.compile("Review queue"))).to_be_visible()
    nav = page.get_by_role("navigation", name="Pages")
    expect(nav.get_by_role("link", name="Agent console")).to_be_visible()
    expect(nav.get_by_role("link", name="Admin dashboard")).to_be_hidden()  # an agent key: no admin controls

    page.goto(f"{ui_service.url}/ui/admin")
    expect(page.get_by_role("alert")).to_contain_text("needs a key with role admin")
    expect(page.get_by_role("button", name=re.compile("Promote|Roll back"))).to_have_count(0)

    page.get_by_role("button", name="Log out").click()
    log_in(page, ui_service, "admin")
    expect(page).to_have_url(re.compile(r"/ui/admin$"))
    expect(page.get_by_role("heading", name="Adapter versions")).to_be_visible()
    headers = page.request.get(f"{ui_service.url}/ui/admin").headers
    assert "default-src 'self'" in headers["content-security-policy"]


def test_agent_sees_who_holds_a_claimed_draft_and_reviews_another_from_the_keyboard(
    ui_service: RunningService, open_page: Callable[..., Any]
) -> None:
    url = ui_service.app.state.settings.resolved_database_url
    held = seed_draft(url, "Where is my SuperWidget order?", "It ships tomorrow.")
    free = seed_draft(url, "Can I return a SuperWidget after 30 days?", "No returns after 30 days sorry.")
    claim = ui_service.person("bob").post(f"/reviews/{held}/claim", json={})
    assert claim.status_code == 200

    page = open_page(allow_errors=("409",))  # the refused claim's 409 is logged by Chromium itself
    log_in(page, ui_service, "agent")
    queue = page.get_by_role("list", name="Drafts waiting for review")
    expect(queue.get_by_role("button")).to_have_count(2)
    held_item = queue.locator(f'[data-draft-id="{held}"]')
    expect(held_item).to_contain_text("claimed by bob")

    held_item.click()
    expect(page.locator("#claim-status")).to_contain_text("Conflict (409)")
    expect(page.locator("#claim-status")).to_contain_text("bob")
    expect(page.get_by_role("button", name="Approve")).to_be_disabled()
    screenshot(page, "console-claim-conflict")

    page.keyboard.press("j")  # next draft: claimed for this agent
    expect(page.locator("#claim-status")).to_contain_text("Claimed by you (test-agent)")
    free_item = queue.locator(f'[data-draft-id="{free}"]')
    expect(free_item).to_contain_text("claimed by you")
    page.keyboard.press("k")  # back to bob's draft without deciding: this one goes back to the queue for everyone
    expect(free_item).not_to_contain_text("claimed by")
    page.keyboard.press("j")
    expect(page.locator("#claim-status")).to_contain_text("Claimed by you (test-agent)")
    expect(page.locator("#draft-text")).to_have_text("No returns after 30 days sorry.")
    page.keyboard.press("r")
    expect(page.get_by_label("Reply instead (optional: the customer gets this)")).to_be_focused()
    page.keyboard.type("Sorry, returns close after 30 days, but the warranty covers defects for two years.")
    page.get_by_label("Why the draft was wrong (optional)").fill("too curt")
    page.keyboard.press("Control+Enter")
    expect(page.get_by_role("status").filter(has_text="Rejected")).to_be_visible()
    expect(queue.get_by_role("button")).to_have_count(1)

    with session_scope(url) as session:
        review = session.execute(select(Review).where(Review.draft_id == free)).scalar_one()
        assert (review.decision, review.agent_id, review.reason) == (ReviewDecision.REJECTED, "test-agent", "too curt")
        assert review.final_text.startswith("Sorry, returns close after 30 days")


def test_admin_dashboard_charts_the_correction_rate_and_follows_a_refresh_run(
    ui_service: RunningService, open_page: Callable[..., Any]
) -> None:
    url = ui_service.app.state.settings.resolved_database_url
    with session_scope(url) as session:
        register_adapter(session, version="v0000-ffffffff", path="/a/0", base_model="tiny", rank=8)
        set_status(session, "v0000-ffffffff", AdapterStatus.LIVE, action="promote", actor="ana")
        set_status(session, "v0000-ffffffff", AdapterStatus.RETIRED, action="rolled-back", actor="ana",
                   reason="rolled back to v0001-aaaaaaaa")
        register_adapter(session, version="v0001-aaaaaaaa", path="/a/1", base_model="tiny", rank=8,
                         metrics={"eval": {"chrf": 38.2, "loss": 1.91}})
        set_status(session, "v0001-aaaaaaaa", AdapterStatus.LIVE, action="promote", actor="ana", reason="first adapter")
        register_adapter(session, version="v0002-bbbbbbbb", path="/a/2", base_model="tiny", rank=8,
                         metrics={"eval": {"chrf": 44.0, "loss": 1.62}})
        record_held_out(session, "v0002-bbbbbbbb", {"chrf": 61.0, "correction_rate": 0.25})  # as a refresh scored it
        run = TrainingRun(kind="refresh", status=RunStatus.RUNNING, step="train", progress=0.4)
        session.add(run)
        session.flush()
        run_id = run.id
    for decision in (ReviewDecision.EDITED, ReviewDecision.EDITED, ReviewDecision.APPROVED):
        seed_review(url, "v0001-aaaaaaaa", decision)
    seed_review(url, "v0002-bbbbbbbb", ReviewDecision.APPROVED)

    page = open_page(allow_errors=("503",))  # promoting without model servers answers 503 (shown to the admin)
    log_in(page, ui_service, "admin")
    versions = page.get_by_role("list", name="Adapter versions, newest first")
    expect(versions.locator('[data-status="live"]')).to_contain_text("v0001-aaaaaaaa")
    expect(versions.locator('[data-version="v0002-bbbbbbbb"]')).to_contain_text("eval.chrf")
    expect(versions.locator('[data-version="v0002-bbbbbbbb"] dl div').first).to_have_text("held-out corrections25%")
    rolled_back = versions.locator('[data-version="v0000-ffffffff"]')
    expect(rolled_back).to_have_attribute("data-shown-status", "rolled back")
    rolled_back.get_by_text("history (3)").click()  # registered, promoted, rolled back: the version's timeline
    expect(rolled_back.locator("details li").first).to_contain_text("rolled back by ana")
    chart = page.get_by_role("img", name=re.compile("Correction rate .* per adapter version"))
    expect(chart.locator("g[data-version]")).to_have_count(2)
    expect(chart).to_have_attribute("aria-label", re.compile("v0001-aaaaaaaa 67%"))
    run_row = page.locator(f'#runs tr[data-run-id="{run_id}"]')
    expect(run_row).to_have_attribute("data-status", "running")
    expect(run_row.locator("progress")).to_have_attribute("value", "0.4")
    screenshot(page, "admin-dashboard")

    with session_scope(url) as session:  # the refresh moves on: the page follows by polling /admin/runs
        row = session.get(TrainingRun, run_id)
        row.status, row.step, row.progress = RunStatus.SUCCEEDED, "done", 1.0
    expect(run_row).to_have_attribute("data-status", "succeeded")
    expect(run_row).to_contain_text("done")

    page.locator('[data-version="v0002-bbbbbbbb"]').get_by_role("button", name="Canary…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Share of new conversations (%)").fill("")
    dialog.get_by_role("button", name="Start canary").click()
    expect(page.locator("#page-error")).to_contain_text("between 1 and 100")  # an empty share is no "stop"

    page.locator('[data-version="v0002-bbbbbbbb"]').get_by_role("button", name="Promote").click()
    expect(dialog).to_contain_text("Promote v0002-bbbbbbbb?")
    page.keyboard.press("Escape")  # cancelled: nothing changes
    expect(dialog).to_be_hidden()
    page.locator('[data-version="v0002-bbbbbbbb"]').get_by_role("button", name="Promote").click()
    dialog.get_by_label("Reason (kept in the history)").fill("better chrF")
    dialog.get_by_role("button", name="Promote").click()
    expect(page.locator("#page-error")).to_contain_text("no model server is configured")
    with session_scope(url) as session:
        statuses = dict(session.execute(select(AdapterVersion.version, AdapterVersion.status)).all())
    assert statuses == {"v0000-ffffffff": "retired", "v0001-aaaaaaaa": "live", "v0002-bbbbbbbb": "candidate"}


# --- the whole story on the real vLLM --------------------------------------------------------------------------------
@pytest.mark.vllm
@pytest.mark.slow
def test_customer_sees_the_agents_edit_and_the_admin_promotes_a_version_live(
    e2e_service: EndToEndService, open_page: Callable[..., Any], serving_base: Path, tmp_path: Path
) -> None:
    question = "Does the SuperWidget work with the GadgetCorp hub?"
    customer = open_page(viewport=PHONE)
    customer.goto(f"{e2e_service.url}/ui/demo-site?key={e2e_service.keys['widget']}&mode=assist")
    screenshot(customer, "widget-phone-closed")
    customer.get_by_role("button", name="Chat with GadgetCorp support").click()
    chat = customer.get_by_role("dialog", name="GadgetCorp support")
    message_box = chat.get_by_label("Your message")
    expect(message_box).to_be_focused()
    message_box.fill(question)
    message_box.press("Enter")
    messages = chat.get_by_role("log", name="Messages")
    expect(messages.locator(".msg.user")).to_have_text(f"You said: {question}")
    customer_status = chat.get_by_role("status")
    expect(customer_status).to_have_text("Waiting for an agent to review the reply…", timeout=120_000)
    follow_up = "Also, which colours does it come in?"
    message_box.fill(follow_up)  # a second question while the first waits: its draft takes the next slot
    message_box.press("Enter")
    expect(customer_status).to_have_text("Waiting for an agent to review the reply…", timeout=120_000)
    expect(messages.locator(".msg.user")).to_have_count(2)
    screenshot(customer, "widget-phone-waiting-for-agent")

    agent = open_page()
    log_in(agent, e2e_service, "agent")
    item = agent.get_by_role("list", name="Drafts waiting for review").get_by_role("button").filter(has_text=question)
    item.first.click()
    expect(agent.locator("#claim-status")).to_contain_text("Claimed by you")
    expect(customer_status).to_have_text("An agent is reviewing the reply…")  # the claim reaches the customer
    draft = agent.locator("#draft-text").inner_text()
    agent.keyboard.press("e")
    edit_box = agent.get_by_label("Your reply (what the customer will get)")
    expect(edit_box).to_have_value(draft)
    final = f"{draft} And yes: the SuperWidget pairs with every GadgetCorp hub."
    edit_box.fill(final)
    expect(customer_status).to_have_text("An agent is typing…")  # for a few seconds after each keystroke signal
    screenshot(customer, "widget-phone-agent-typing")
    expect(agent.locator("#diff ins")).to_have_text("And yes: the SuperWidget pairs with every GadgetCorp hub.")
    expect(agent.locator("#diff del")).to_have_count(0)  # the draft's own words stay, unmarked
    screenshot(agent, "console-editing-with-diff")
    edit_box.press("Control+Enter")
    expect(agent.get_by_role("status").filter(has_text="Edited")).to_be_visible()

    expect(messages.locator(".msg.agent .text")).to_have_text(final, timeout=30_000)
    expect(messages.locator(".msg.user")).to_have_count(2)  # each question once, however the polls interleave
    expect(customer_status).to_have_text("Waiting for an agent to review the reply…")  # the follow-up's draft
    screenshot(customer, "widget-phone-agent-reply")
    customer.keyboard.press("Escape")  # closes the chat and gives focus back to the bubble
    expect(chat).to_be_hidden()
    expect(customer.get_by_role("button", name="Chat with GadgetCorp support")).to_be_focused()

    folder = make_lora_adapter(serving_base, tmp_path / "ui-adapter", seed=11)
    version = register_adapter_folder(folder, serving_base, database_url=e2e_service.settings.resolved_database_url)
    admin = open_page()
    log_in(admin, e2e_service, "admin")
    card = admin.locator(f'#versions [data-version="{version}"]')
    expect(card).to_have_attribute("data-status", "candidate")
    card.get_by_role("button", name="Promote").click()
    dialog = admin.get_by_role("dialog")
    dialog.get_by_label("Reason (kept in the history)").fill("tried in the web UI")
    dialog.get_by_role("button", name="Promote").click()
    expect(admin.get_by_role("status").filter(has_text=f"{version} is live")).to_be_visible(timeout=120_000)
    expect(card).to_have_attribute("data-status", "live")
    expect(card).to_contain_text("tried in the web UI")
    expect(admin.locator("#serving")).to_contain_text(version)
    screenshot(admin, "admin-promoted-live")


@pytest.mark.vllm
@pytest.mark.slow
def test_widget_streams_an_auto_mode_reply_as_it_is_generated(
    e2e_service: EndToEndService, open_page: Callable[..., Any]
) -> None:
    page = open_page()
    page.goto(f"{e2e_service.url}/ui/demo-site?key={e2e_service.keys['widget']}&mode=auto")
    page.get_by_role("button", name="Chat with GadgetCorp support").click()
    box = page.get_by_label("Your message")
    box.fill("How long does the SuperWidget take to charge?")
    box.press("Enter")
    reply = page.locator("#housestyle-widget .msg.agent .text")
    expect(reply).not_to_have_text("", timeout=120_000)
    expect(page.get_by_role("status")).to_have_text("", timeout=120_000)
    screenshot(page, "widget-desktop-auto-reply")
    widget = e2e_service.client("widget")
    saved = json.loads(page.evaluate(
        "() => Object.entries(sessionStorage).find(([k]) => k.startsWith('housestyle.widget'))[1]"))
    stored = WidgetConversation(widget, saved["id"], saved["token"]).history()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert reply.inner_text() == stored[-1]["content"]


def test_an_agent_of_two_brands_switches_between_their_queues(
    ui_service: RunningService, open_page: Callable[..., Any]
) -> None:
    from collector.brands import brand_fields, create_brand
    from core.settings import get_settings
    from plugin.api.keys import create_key

    url = ui_service.app.state.settings.resolved_database_url
    with session_scope(url) as session:
        business = int(create_brand(session, "business", brand_fields(company_name="GadgetCorp Business"),
                                    settings=get_settings()).id)
        _, key = create_key(session, "agent", "maria", brands=["default", "business"])
        _, single = create_key(session, "agent", "tomas", brands=["business"])
    ours = seed_draft(url, "Where is my SuperWidget order?", "It ships tomorrow.")
    with session_scope(url) as session:
        conversation = recorder.start_conversation(session, channel="web", brand_id=business)
        recorder.add_message(session, conversation.id, Role.USER, "We need the invoice for 30 UltraHubs.")
        theirs = recorder.record_draft(session, conversation.id, "Here it is.").id

    page = open_page()
    log_in(page, ui_service, "agent", key=key)
    queue = page.get_by_role("list", name="Drafts waiting for review")
    expect(queue.locator(f'[data-draft-id="{ours}"]')).to_be_visible()
    expect(queue.locator(f'[data-draft-id="{theirs}"]')).to_have_count(0)
    page.get_by_label("Brand").select_option("business")
    expect(queue.locator(f'[data-draft-id="{theirs}"]')).to_be_visible()
    expect(queue.locator(f'[data-draft-id="{ours}"]')).to_have_count(0)
    screenshot(page, "console-brand-switcher")

    other = open_page()  # a key of one brand: no switcher, and only that brand's drafts
    log_in(other, ui_service, "agent", key=single)
    other_queue = other.get_by_role("list", name="Drafts waiting for review")
    expect(other_queue.locator(f'[data-draft-id="{theirs}"]')).to_be_visible()
    expect(other_queue.locator(f'[data-draft-id="{ours}"]')).to_have_count(0)
    expect(other.get_by_label("Brand")).to_be_hidden()
