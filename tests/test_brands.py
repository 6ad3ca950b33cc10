"""Many brands on one server: an agency runs GadgetCorp's consumer chat and its business desk side by side.

Each brand has its own conversations, keys, adapter versions and loop; a key of one brand can neither read nor change
anything of another, on any route or command. One brand looks exactly like no brands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from collector import recorder
from collector.brands import brand_fields, brand_id, create_brand, settings_for
from core.db import session_scope
from core.errors import InputError
from core.models import DEFAULT_BRAND_ID, Conversation, Draft, DraftStatus, Role
from core.registry import register_adapter
from core.runs import RunLog
from core.settings import get_settings
from plugin.api.keys import create_key
from plugin.loop.refresh import refresh_lock
from serving.routing import BrandRoutes
from serving.vllm_server import lora_slots
from tests.fixtures.service import RunningService, start_widget_conversation

REPO = Path(__file__).resolve().parents[1]


# --- pure rules ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("configured", "brands", "slots"), [
    (None, 1, 4),  # one brand: as before brands (live + canary + one swapping in, at least 4)
    (None, 0, 4),
    (None, 2, 5),
    (None, 8, 17),
    (4, 1, 4),
    (17, 8, 17),
    (40, 3, 40),  # more than needed is the operator's choice
])
def test_lora_slots_hold_every_brands_live_and_canary_plus_one_swapping(configured, brands, slots) -> None:
    assert lora_slots(configured, brands) == slots


@pytest.mark.parametrize(("configured", "brands", "needed"), [(4, 2, 5), (8, 4, 9), (1, 1, 3)])
def test_too_few_lora_slots_is_a_clear_error_naming_the_number_needed(configured, brands, needed) -> None:
    with pytest.raises(InputError, match=f"raise it to {needed}"):
        lora_slots(configured, brands)


@pytest.mark.parametrize(("brand", "lock"), [("default", "refresh"), ("business", "refresh:business")])
def test_each_brand_refreshes_under_its_own_lock(brand: str, lock: str) -> None:
    assert refresh_lock(brand) == lock


def test_each_brand_routes_to_its_own_table_and_public_name() -> None:
    routes = BrandRoutes("base", {1: "gadgetcorp-assistant", 2: "business-assistant"})
    assert routes.table(1).public_model == "gadgetcorp-assistant"
    assert routes.table(2).public_model == "business-assistant"
    assert routes.table(1) is not routes.table(2)
    routes.name_brand(3, "acme-assistant")  # made after the service started
    assert routes.table(3).public_model == "acme-assistant"
    routes.base_vllm_name = "base-2"
    assert {table.base_vllm_name for table in routes.tables.values()} == {"base-2"}


@pytest.mark.parametrize(("given", "problem"), [
    ({"refresh_canary_share": 2}, "refresh_canary_share"),
    ({"public_model_name": "has space"}, "public_model_name"),
    ({"refresh_min_new_reviews": 0}, "refresh_min_new_reviews"),
])
def test_bad_brand_settings_name_the_field(given: dict, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        brand_fields(**given)


# --- the store ----------------------------------------------------------------------------------------------------
def make_business(url: str) -> int:
    with session_scope(url) as session:
        brand = create_brand(session, "business", brand_fields(company_name="GadgetCorp Business",
                                                               system_prompt="You are the GadgetCorp Business Desk."),
                             settings=get_settings())
        return int(brand.id)


def test_two_brands_may_both_have_a_platforms_conversation_42(store_url: str) -> None:
    business = make_business(store_url)
    with session_scope(store_url) as session:
        ours = recorder.start_conversation(session, channel="chatwoot", external_id="1:42")
        theirs = recorder.start_conversation(session, channel="chatwoot", external_id="1:42", brand_id=business)
        assert ours.id != theirs.id
        assert recorder.find_conversation(session, "chatwoot", "1:42").id == ours.id
        assert recorder.find_conversation(session, "chatwoot", "1:42", brand_id=business).id == theirs.id


def test_a_brands_settings_are_the_installations_with_its_own_over_them(store_url: str) -> None:
    make_business(store_url)
    settings = get_settings()
    with session_scope(store_url) as session:
        from collector.brands import get_brand

        default, business = (settings_for(settings, get_brand(session, slug)) for slug in ("default", "business"))
    assert default.system_prompt == settings.system_prompt and default.public_model_name == settings.public_model_name
    assert default.golden_set  # the bundled golden set guards the default brand
    assert business.system_prompt == "You are the GadgetCorp Business Desk."
    assert business.public_model_name == "business-assistant" and business.golden_set is None
    assert business.gate_min_chrf_gain == settings.gate_min_chrf_gain  # not set: the installation's


def test_a_brands_settings_carry_its_id_and_settings_made_without_the_brands_look_it_up(store_url: str) -> None:
    from collector.brands import brand_id_of, brand_settings

    business_id = make_business(store_url)
    settings = get_settings()
    with session_scope(store_url) as session:
        business = brand_settings(settings, session, "business")
    assert settings.brand_id is None and business.brand_id == business_id
    assert brand_id_of(business) == business_id and brand_id_of(settings) == DEFAULT_BRAND_ID
    # a copy for another brand or another store never answers with the id it was made with
    assert business.model_copy(update={"brand": "default"}).brand_id is None
    assert business.model_copy(update={"database_url": "sqlite:///elsewhere.db"}).brand_id is None
    assert business.model_copy(update={"system_prompt": "Hi."}).brand_id == business_id
    assert brand_id_of(business.model_copy(update={"brand": "default"})) == DEFAULT_BRAND_ID


# --- keys and routes ----------------------------------------------------------------------------------------------
def seed_pending(url: str, brand: int, question: str) -> tuple[str, int]:
    with session_scope(url) as session:
        conversation = recorder.start_conversation(session, channel="web", brand_id=brand)
        recorder.add_message(session, conversation.id, Role.USER, question)
        return conversation.external_id, recorder.record_draft(session, conversation.id, "A draft.").id


def business_keys(url: str) -> dict[str, str]:
    with session_scope(url) as session:
        return {role: create_key(session, role, f"biz-{role}", brands=["business"])[1]
                for role in ("widget", "agent", "admin")}


def test_a_key_of_one_brand_reaches_nothing_of_another_on_any_route(plugin_service: RunningService) -> None:
    url = plugin_service.app.state.settings.resolved_database_url
    business = make_business(url)
    ours_conversation, ours_draft = seed_pending(url, DEFAULT_BRAND_ID, "Where is my SuperWidget?")
    _, their_draft = seed_pending(url, business, "Where is our SuperWidget order?")
    with session_scope(url) as session:
        register_adapter(session, version="v0001-aaaaaaaa", path="/nowhere", base_model="tiny", rank=8)
    run_id = RunLog(url, kind="refresh", params={}, step="export").run_id
    keys = business_keys(url)
    biz = {role: httpx.Client(base_url=plugin_service.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
           for role, key in keys.items()}
    agent, admin = biz["agent"], biz["admin"]

    # what the key may see: its own brand only
    me = admin.get("/me").json()
    assert [brand["name"] for brand in me["brands"]] == ["business"]
    assert [draft["draft_id"] for draft in agent.get("/reviews/queue").json()] == [their_draft]
    assert [model["id"] for model in agent.get("/v1/models").json()["data"]] == ["business-assistant"]
    assert admin.get("/admin/adapters").json()["adapters"] == []
    assert admin.get("/admin/stats").json()["conversations"] == 1
    assert run_id not in [run["id"] for run in admin.get("/admin/runs").json()]

    # another brand's objects answer exactly as if they did not exist
    missing = [
        agent.get(f"/reviews/{ours_draft}"),
        *(agent.post(f"/reviews/{ours_draft}/{action}", json={})
          for action in ("claim", "typing", "release", "approve", "reject")),
        agent.post(f"/reviews/{ours_draft}/edit", json={"final_text": "Hi"}),
        agent.get(f"/widget/conversations/{ours_conversation}"),
        agent.post("/v1/chat/completions", json={"model": get_settings().public_model_name,
                                                 "messages": [{"role": "user", "content": "Hi"}]}),
        admin.post("/admin/adapters/v0001-aaaaaaaa/promote", json={}),
        admin.post("/admin/adapters/v0001-aaaaaaaa/canary", json={"share": 0.1}),
        admin.post("/admin/adapters/rollback", json={"version": "v0001-aaaaaaaa"}),
        admin.get(f"/admin/runs/{run_id}"),
        *(admin.get(path, params={"brand": "default"}) for path in (
            "/admin/adapters", "/admin/stats", "/admin/quality", "/admin/runs", "/admin/correction-rate",
            "/admin/adapter-history", "/admin/coverage", "/reviews/queue")),
        admin.post("/admin/export", params={"brand": "default"}, json={}),
        admin.post("/admin/refresh", params={"brand": "default"}),
        biz["widget"].post("/widget/conversations", params={"brand": "default"}, json={}),
    ]
    assert [response.status_code for response in missing] == [404] * len(missing), [r.text for r in missing]
    unknown = admin.get("/admin/stats", params={"brand": "nosuchbrand"})
    assert unknown.status_code == 404
    assert missing[-4].json()["detail"].replace("'default'", "'nosuchbrand'") == unknown.json()["detail"]
    assert admin.get("/metrics").status_code == 403  # every brand's counts: a key of every brand only
    with session_scope(url) as session:  # nothing of the default brand changed
        assert session.get(Draft, ours_draft).status == DraftStatus.PENDING

    # the widget key's conversations land in its brand; the unscoped admin sees both brands
    started = start_widget_conversation(biz["widget"])
    with session_scope(url) as session:
        row = session.execute(select(Conversation).where(Conversation.external_id == started.id)).scalar_one()
        assert row.brand_id == business
    everyone = plugin_service.client("admin")
    assert [b["name"] for b in everyone.get("/me").json()["brands"]] == ["default", "business"]
    assert everyone.get("/admin/stats", params={"brand": "business"}).json()["conversations"] == 2
    assert len(everyone.get("/reviews/queue").json()) == 2
    assert everyone.get("/admin/stats").json()["conversations"] == 1  # no ?brand=: the default brand, as before
    for client in biz.values():
        client.close()


def test_a_brand_made_while_the_service_runs_answers_its_keys_at_once(plugin_service: RunningService) -> None:
    """An operator runs `housestyle brands create` (or another instance does) while the service runs: the new
    brand's key works on its first request, not after the directory's 5 s re-read, and never answers 500.
    Catches: the directory re-read only on its timer (a KeyError for the unknown brand)."""
    url = plugin_service.app.state.settings.resolved_database_url
    admin = plugin_service.client("admin")
    assert admin.get("/admin/stats").status_code == 200  # the directory has read the brands: only "default"
    make_business(url)
    with session_scope(url) as session:
        _, key = create_key(session, "admin", "business-admin", brands=["business"])
    client = plugin_service.client()
    client.headers["Authorization"] = f"Bearer {key}"
    for path in ("/admin/stats", "/me", "/v1/models"):
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text)
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["business-assistant"]


def test_an_agent_key_of_several_brands_names_the_one_it_acts_on(plugin_service: RunningService) -> None:
    url = plugin_service.app.state.settings.resolved_database_url
    make_business(url)
    with session_scope(url) as session:
        _, key = create_key(session, "admin", "two-brands", brands=["default", "business"])
    client = httpx.Client(base_url=plugin_service.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    refused = client.get("/admin/stats")
    assert refused.status_code == 422 and "?brand=" in refused.json()["detail"]
    assert client.get("/admin/stats", params={"brand": "business"}).status_code == 200
    assert {m["id"] for m in client.get("/v1/models").json()["data"]} == {get_settings().public_model_name,
                                                                          "business-assistant"}
    client.close()


def test_a_chatwoot_inbox_mapped_to_a_brand_files_its_conversations_there(
    store_url: str, start_service
) -> None:
    from tests.fixtures.service import chatwoot_event

    business = make_business(store_url)
    service = start_service(chatwoot_webhook_token="secret", chatwoot_inbox_brands={"7": "business"})
    event = {**chatwoot_event("Where is our order?", "incoming", conversation=42), "inbox": {"id": 7}}
    response = service.client().post("/chatwoot/webhook", params={"token": "secret"}, json=event)
    assert response.status_code == 200, response.text
    with session_scope(store_url) as session:
        assert recorder.find_conversation(session, "chatwoot", "1:42", brand_id=business) is not None
        assert recorder.find_conversation(session, "chatwoot", "1:42") is None


# --- the command line ---------------------------------------------------------------------------------------------
def housestyle(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOUSESTYLE_HOME": str(home), "COLUMNS": "200"}
    env.pop("HOUSESTYLE_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "plugin.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_an_agency_sets_up_a_second_brand_and_its_data_never_mixes_with_the_first(tmp_path: Path) -> None:
    made = housestyle("brands", "create", "business", "--company", "GadgetCorp Business", home=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "served as model 'business-assistant'" in made.stdout
    assert housestyle("import", "--sample", home=tmp_path).returncode == 0
    imported = housestyle("import", "--business-sample", "--brand", "business", home=tmp_path)
    assert imported.returncode == 0, imported.stderr
    out = tmp_path / "business-export"
    exported = housestyle("export", "--brand", "business", "--out", str(out), home=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert json.loads((out / "manifest.json").read_text())["brand"] == "business"
    replies = [json.loads(line)["messages"][-1]["content"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert replies and all("GadgetCorp Business Desk" in reply for reply in replies)
    assert not any("Warm regards, the GadgetCorp Team" in reply for reply in replies)

    listed = housestyle("brands", "list", home=tmp_path)
    assert "default" in listed.stdout and "business" in listed.stdout
    key = housestyle("keys", "create", "--role", "agent", "--name", "maria", "--brand", "business", home=tmp_path)
    assert key.returncode == 0 and "for brand business" in key.stderr
    for command in (["export", "--brand", "nope", "--out", str(tmp_path / "x")], ["stats", "--brand", "nope"], ["adapters", "list", "--brand", "x"],
                    ["keys", "create", "--role", "agent", "--brand", "nope"], ["brands", "create", "Bad Name"],
                    ["brands", "create", "business", "--company", "Again"],
                    ["train", "--base", "b", "--data", str(out), "--brand", "default"]):
        refused = housestyle(*command, home=tmp_path)
        assert refused.returncode == 1, (command, refused.stdout, refused.stderr)
        assert refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr, (command, refused.stderr)
    with session_scope(f"sqlite:///{tmp_path / 'housestyle.db'}") as session:
        assert brand_id(session, "business") == 2


# --- the migration ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_store_from_before_brands_becomes_the_default_brand_and_looks_as_before(
        kind: str, housestyle_home: Path, request: pytest.FixtureRequest) -> None:
    from sqlalchemy import text

    from core import db

    # an empty store of its own, built up to 0008 only (`store_url`'s are at the current schema already)
    store_url = (f"sqlite:///{housestyle_home / 'old.db'}" if kind == "sqlite"
                 else request.getfixturevalue("postgres_cluster").create_database())
    db.upgrade(store_url, "0008")
    assert db.current_revision(store_url) == "0008"
    now = "2026-01-01 00:00:00"
    with db.get_engine(store_url).begin() as connection:
        connection.execute(text(
            "INSERT INTO conversation (external_id, channel, mode, status, source, created_at, updated_at) "
            f"VALUES ('1:42', 'chatwoot', 'assist', 'open', 'live', '{now}', '{now}')"))
        connection.execute(text("INSERT INTO apikey (name, role, key_hash, prefix, created_at) "
                                f"VALUES ('ana', 'agent', '{'a' * 64}', 'hs_abc', '{now}')"))
    db.upgrade(store_url)
    with session_scope(store_url) as session:
        old = recorder.find_conversation(session, "chatwoot", "1:42")
        assert old is not None and old.brand_id == DEFAULT_BRAND_ID
        from core.models import ApiKey

        assert session.execute(select(ApiKey.brands)).scalar_one() is None  # an old key: every brand, as before
    business = make_business(store_url)  # ids after the default brand's
    with session_scope(store_url) as session:
        assert business == 2
        recorder.start_conversation(session, channel="chatwoot", external_id="1:42", brand_id=business)


def test_the_same_history_imported_into_two_brands_is_two_brands_history(store_url: str) -> None:
    from collector.importer import import_file
    from collector.sample import SAMPLE_PATH

    business = make_business(store_url)
    first = import_file(SAMPLE_PATH, url=store_url, source="sample")
    second = import_file(SAMPLE_PATH, url=store_url, source="sample", brand_id=business)
    again = import_file(SAMPLE_PATH, url=store_url, source="sample", brand_id=business)
    assert first.added == second.added > 0 and second.errors == []
    assert again.added == 0 and again.duplicates == second.added  # within a brand, importing twice adds nothing
