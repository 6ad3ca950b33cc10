"""Who may call what: API keys and roles on every route, key revocation, rate limits, body limits and CORS."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select
from starlette.routing import Route

from collector import recorder
from collector.importer import import_file
from collector.sample import SAMPLE_PATH
from core.db import session_scope
from core.models import DEFAULT_BRAND_ID, MemoryUse, Message, ReviewDecision
from core.registry import register_adapter
from core.runs import RunLog
from plugin.api.keys import create_key
from tests.fixtures.service import RunningService, chatwoot_event, start_widget_conversation
from tests.test_brands import make_business, seed_pending

W, A, ADM = "widget", "agent", "admin"
PUBLIC = "public"  # probes and API docs: open on purpose
WEBHOOK_TOKEN = "webhook-token"  # the Chatwoot webhook: its own shared secret instead of a key

# Every route of the app and who may call it. A new route must be added here, or the test fails.
ACCESS: dict[tuple[str, str], set[str] | str] = {
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/health"): PUBLIC,
    ("GET", "/ready"): PUBLIC,
    ("GET", "/metrics"): {ADM},
    ("POST", "/widget/conversations"): {W, ADM},
    ("GET", "/widget/conversations/{conversation_id}"): {W, A, ADM},
    ("POST", "/widget/conversations/{conversation_id}/messages"): {W, ADM},
    ("GET", "/reviews/queue"): {A, ADM},
    ("GET", "/reviews/{draft_id}"): {A, ADM},
    ("POST", "/reviews/{draft_id}/claim"): {A, ADM},
    ("POST", "/reviews/{draft_id}/typing"): {A, ADM},
    ("POST", "/reviews/{draft_id}/release"): {A, ADM},
    ("POST", "/reviews/{draft_id}/approve"): {A, ADM},
    ("POST", "/reviews/{draft_id}/edit"): {A, ADM},
    ("POST", "/reviews/{draft_id}/reject"): {A, ADM},
    ("POST", "/reviews/{draft_id}/recalled/{review_id}/outdated"): {A, ADM},
    ("GET", "/v1/models"): {A, ADM},
    ("POST", "/v1/chat/completions"): {A, ADM},
    ("POST", "/chatwoot/webhook"): WEBHOOK_TOKEN,
    ("GET", "/admin/adapters"): {ADM},
    ("POST", "/admin/adapters/rollback"): {ADM},
    ("POST", "/admin/adapters/{version}/promote"): {ADM},
    ("POST", "/admin/adapters/{version}/canary"): {ADM},
    ("GET", "/admin/stats"): {ADM},
    ("POST", "/admin/export"): {ADM},
    ("POST", "/admin/refresh"): {ADM},
    ("GET", "/admin/quality"): {ADM},
    ("GET", "/admin/coverage"): {ADM},
    ("GET", "/me"): {W, A, ADM},
    ("GET", "/admin/runs"): {ADM},
    ("GET", "/admin/runs/{run_id}"): {ADM},
    ("GET", "/admin/correction-rate"): {ADM},
    ("GET", "/admin/edit-rate"): {ADM},
    ("GET", "/admin/adapter-history"): {ADM},
    # the web UI's pages and widget loader hold no data: the browser fetches everything with the user's key
    ("GET", "/ui/login"): PUBLIC,
    ("GET", "/ui/console"): PUBLIC,
    ("GET", "/ui/admin"): PUBLIC,
    ("GET", "/ui/demo-site"): PUBLIC,
    ("GET", "/ui/widget.js"): PUBLIC,
}
# routes that act without a body: an allowed caller is checked through the route's role dependency, not a live call
NO_LIVE_CALL = {("POST", "/admin/refresh")}  # would start a real refresh (export + training)


def declared_roles(service: RunningService, method: str, path: str) -> set[str]:
    """The roles a route's `require(...)` dependency lets through."""
    route = next(r for r in service.app.routes if getattr(r, "path", None) == path and method in r.methods)
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        allowed = getattr(dependant.call, "allowed_roles", None)
        if allowed is not None:
            return {role.value for role in allowed}
        pending.extend(dependant.dependencies)
    return set()


def app_routes(service: RunningService) -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in service.app.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }


def test_every_route_checks_the_callers_role(plugin_service: RunningService) -> None:
    """Catches a route's `require(...)` roles widened or narrowed, and (for allowed roles) a route that crashes with
    a 500 where the old check, "not 401/403", let it pass."""
    assert app_routes(plugin_service) == set(ACCESS), "a route was added or removed: list who may call it in ACCESS"
    anonymous = plugin_service.client()
    clients = {role: plugin_service.client(role) for role in (W, A, ADM)}
    schema = anonymous.get("/openapi.json").json()["paths"]
    documented = {(method, template): set(schema[template][method.lower()]["responses"])
                  for method, template in ACCESS if template in schema}
    for (method, template), allowed in sorted(ACCESS.items()):
        path = re.sub(r"\{[^}]+\}", "1", template)  # no body: allowed callers get 422/404 (documented), never 401/403/5xx
        if allowed == PUBLIC:
            assert anonymous.request(method, path).status_code == 200 or template == "/ready", (method, path)
            continue
        no_key = anonymous.request(method, path)
        assert no_key.status_code == 401, (method, path, no_key.text)
        if allowed == WEBHOOK_TOKEN:
            for client in clients.values():  # API keys do not open the webhook either
                assert client.request(method, path).status_code == 401, (method, path)
            continue
        for role, client in clients.items():
            if role in allowed and (method, template) in NO_LIVE_CALL:
                assert declared_roles(plugin_service, method, template) == allowed, (method, template)
                continue
            response = client.request(method, path)
            if role in allowed:
                # the route's own answer: a success, or a 4xx its OpenAPI entry documents; never a 5xx, a crash
                # that the old check ("not 401/403") let pass as "let through"
                status = response.status_code
                assert status < 500 and status not in (401, 403), (role, method, path, status, response.text)
                if status >= 400:
                    assert str(status) in documented[(method, template)], (role, method, path, status, response.text)
            else:
                assert response.status_code == 403, (role, method, path, response.text)
                assert "needs a key with role" in response.json()["detail"]


# Every path parameter of the app names an object of one brand. A route with a new parameter must say here which of
# a brand's objects it names, or the brand-isolation test below fails naming the route.
BRAND_OWNED = {"conversation_id", "draft_id", "review_id", "version", "run_id"}
# a valid body for each route that needs one (others get {}): a 422 for the body would hide whether the brand check ran
BODIES = {
    ("POST", "/reviews/{draft_id}/edit"): {"final_text": "Hi"},
    ("POST", "/admin/adapters/{version}/canary"): {"share": 0.1},
    ("POST", "/widget/conversations/{conversation_id}/messages"): {"content": "let me in", "stream": False},
}


def brand_objects(service: RunningService, brand: int, slug: str) -> dict:
    """One of each object a path names, in `brand`, and keys of every role scoped to that brand alone."""
    url = service.app.state.settings.resolved_database_url
    with session_scope(url) as session:
        keys = {role: create_key(session, role, f"{slug}-{role}", brands=[slug])[1] for role in (W, A, ADM)}
    clients = {role: service.client() for role in keys}
    for role, client in clients.items():
        client.headers["Authorization"] = f"Bearer {keys[role]}"
    conversation = start_widget_conversation(clients[W])  # with its secret: the widget key sends the right one
    _, draft = seed_pending(url, brand, f"Where is my {slug} order?")
    _, reviewed = seed_pending(url, brand, f"Is my {slug} order late?")
    with session_scope(url) as session:
        review = recorder.record_review(session, reviewed, ReviewDecision.APPROVED, agent_id="dana").id
        session.add(MemoryUse(draft_id=draft, review_id=review, score=0.9))  # the draft leaned on that reply
        register_adapter(session, version=f"v0001-{slug}"[:14], path="/nowhere", base_model="tiny", rank=8,
                         brand_id=brand)
    run = RunLog(url, kind="refresh", params={}, step="export", brand_id=brand).run_id
    return {"clients": clients, "headers": conversation.headers, "conversation_id": conversation.id,
            "draft_id": draft, "review_id": review, "version": f"v0001-{slug}"[:14], "run_id": run}


def test_no_key_reaches_another_brands_object_on_any_route_in_either_direction(plugin_service: RunningService) -> None:
    """Every route whose path names an object (a conversation, draft, review, adapter version, run), derived from
    `app.routes`, answers 404 to every allowed role of one brand on the other brand's object, both ways round, and
    a widget key gets 404 even with the other brand's conversation secret. A new route is covered without an edit.

    Catches a route's brand check dropped, e.g. in plugin/api/routes/widget.py `conversation_for`
    `if caller.may_act_on(conversation.brand_id)]` removed (POST /widget/conversations/{id}/messages, which the
    hand-kept list in tests/test_brands.py missed), or in plugin/api/routes/reviews.py `mark_recalled_outdated`
    `draft = in_scope(session, caller, draft_id)` -> `draft = session.get(Draft, draft_id)`."""
    routes = sorted(route for route in app_routes(plugin_service) if "{" in route[1])
    unnamed = [(method, template) for method, template in routes
               if set(re.findall(r"\{([^}]+)\}", template)) - BRAND_OWNED]
    assert not unnamed, f"routes whose path parameter names no brand-owned object in BRAND_OWNED: {unnamed}"
    url = plugin_service.app.state.settings.resolved_database_url
    business = make_business(url)  # before the first call: the service re-reads its brands every few seconds
    brands = {"default": brand_objects(plugin_service, DEFAULT_BRAND_ID, "default"),
              "business": brand_objects(plugin_service, business, "business")}
    cases = 0
    for mine, theirs in (("default", "business"), ("business", "default")):
        objects = brands[theirs]
        for method, template in routes:
            allowed = ACCESS[(method, template)]
            assert isinstance(allowed, set) and allowed, (method, template)
            path = re.sub(r"\{([^}]+)\}", lambda found: str(objects[found.group(1)]), template)
            body = {"json": BODIES.get((method, template), {})} if method == "POST" else {}
            for role in sorted(allowed):
                headers = objects["headers"] if role == W else {}  # the other brand's own conversation secret
                response = brands[mine]["clients"][role].request(method, path, headers=headers, **body)
                assert response.status_code == 404, (mine, role, method, path, response.status_code, response.text)
                cases += 1
    assert cases >= 2 * len(routes)
    for slug, objects in brands.items():  # every object is there for its own brand: the 404s were the brand check's
        agent, admin = objects["clients"][A], objects["clients"][ADM]
        assert agent.get(f"/widget/conversations/{objects['conversation_id']}").status_code == 200, slug
        draft = agent.get(f"/reviews/{objects['draft_id']}").json()
        assert (draft["draft_id"], draft["claimed_by"]) == (objects["draft_id"], None), slug  # pending, unclaimed
        assert admin.get(f"/admin/runs/{objects['run_id']}").status_code == 200, slug
        adapters = admin.get("/admin/adapters").json()["adapters"]
        assert [(a["version"], a["status"]) for a in adapters] == [(objects["version"], "candidate")], slug
    with session_scope(url) as session:
        assert session.execute(select(func.count()).select_from(Message).where(
            Message.content == "let me in")).scalar_one() == 0  # nothing was written to another brand's conversation


def test_keys_cli_prints_the_key_alone_and_revoking_locks_it_out(
    plugin_service: RunningService, store_url: str
) -> None:
    env = {**os.environ, "HOUSESTYLE_DATABASE_URL": store_url}
    housestyle = str(Path(sys.executable).parent / "housestyle")
    created = subprocess.run(
        [housestyle, "keys", "create", "--role", "agent", "--name", "dana"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"hs_[A-Za-z0-9_-]{40,}", key)
    with httpx.Client(base_url=plugin_service.url, headers={"Authorization": f"Bearer {key}"}) as dana:
        assert dana.get("/reviews/queue").status_code == 200
        listed = subprocess.run([housestyle, "keys", "list"], env=env, capture_output=True, text=True, check=True)
        assert "dana" in listed.stdout and key not in listed.stdout
        key_id = re.search(r"│\s*(\d+)\s*│\s*dana", listed.stdout).group(1)
        subprocess.run([housestyle, "keys", "revoke", key_id], env=env, capture_output=True, text=True, check=True)
        deadline = time.monotonic() + 30  # the service trusts a checked key for HOUSESTYLE_KEY_CACHE_SECONDS (2 s)
        while (refused := dana.get("/reviews/queue")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    unknown = subprocess.run([housestyle, "keys", "revoke", "9999"], env=env, capture_output=True, text=True)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: ") and "keys list" in unknown.stderr


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(housestyle_home: Path, start_service) -> None:
    service = start_service(rate_limit_per_second=0.2, rate_limit_burst=3)
    agent = service.client(A)
    statuses = [agent.get("/reviews/queue").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = agent.get("/reviews/queue")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert service.client(W).post("/widget/conversations", json={}).status_code == 201  # other keys are unaffected
    assert service.client(ADM).get("/admin/stats").status_code == 200


def from_address(service, role: str, address: str) -> httpx.Client:
    """A client whose requests come from `address` (any 127.x.y.z is this machine): one customer's own address."""
    return service.client(role, transport=httpx.HTTPTransport(local_address=address))


def test_widget_limits_hold_per_client_address_and_per_conversation_not_per_shared_key(
    housestyle_home: Path, start_service
) -> None:
    service = start_service(widget_rate_per_client=0.2, widget_burst_per_client=8,
                            widget_rate_per_conversation=0.2, widget_burst_per_conversation=2)
    looping = from_address(service, W, "127.0.0.2")
    statuses = [looping.get(f"/widget/conversations/guess-{n}").status_code for n in range(9)]
    assert statuses == [404] * 8 + [429]  # a client guessing ids: its own address is throttled...
    customer = from_address(service, W, "127.0.0.3")
    conversation = start_widget_conversation(customer, mode="assist")  # ...while another customer is served
    assert conversation.history()["mode"] == "assist"
    assert customer.get(f"/widget/conversations/{conversation.id}", headers=conversation.headers).status_code == 200
    hammered = customer.get(f"/widget/conversations/{conversation.id}", headers=conversation.headers)
    assert hammered.status_code == 429 and "this conversation" in hammered.json()["detail"]
    assert int(hammered.headers["Retry-After"]) >= 1
    other = start_widget_conversation(customer, mode="assist")  # a fresh conversation has its own bucket
    assert customer.get(f"/widget/conversations/{other.id}", headers=other.headers).status_code == 200


def test_a_widget_key_reaches_only_the_conversations_it_started(store_url: str, start_service, tmp_path: Path) -> None:
    service = start_service(chatwoot_webhook_token="secret")
    widget, agent = service.client(W), service.client(A)
    mine, theirs = start_widget_conversation(widget), start_widget_conversation(widget)
    import_file(SAMPLE_PATH, url=store_url, source="sample", channel="sample")  # gc-0001 ... from an import
    service.client().post("/chatwoot/webhook", params={"token": "secret"},
                          json=chatwoot_event("my phone is 415 555 0199", "incoming", conversation=7, account=1))
    for public_id, headers in (
        (mine.id, theirs.headers),  # another customer's secret
        (mine.id, {}),  # no secret at all
        ("gc-0001", mine.headers),  # an imported conversation
        ("1:7", mine.headers),  # a Chatwoot conversation (sequential ids)
    ):
        read = widget.get(f"/widget/conversations/{public_id}", headers=headers)
        written = widget.post(f"/widget/conversations/{public_id}/messages", headers=headers,
                              json={"content": "let me in", "stream": False})
        assert (read.status_code, written.status_code) == (404, 404), (public_id, read.text, written.text)
        assert "does not exist for this widget" in read.json()["detail"]
    with session_scope(store_url) as session:
        assert session.execute(select(func.count()).select_from(Message).where(
            Message.content == "let me in")).scalar_one() == 0  # nothing was written anywhere
    assert mine.history()["conversation_id"] == mine.id  # its own secret opens it
    assert agent.get(f"/widget/conversations/{mine.id}").status_code == 200  # agents read any conversation


def test_oversized_bodies_are_refused_with_413(housestyle_home: Path, start_service) -> None:
    service = start_service(max_request_bytes=2000)
    widget = service.client(W)
    announced = widget.post("/widget/conversations", json={"customer_ref": "x" * 5000})
    assert announced.status_code == 413 and "HOUSESTYLE_MAX_REQUEST_BYTES" in announced.json()["detail"]

    def chunks():
        yield b'{"customer_ref": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    streamed = widget.post("/widget/conversations", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_cors_allows_only_the_configured_widget_origins(housestyle_home: Path, start_service) -> None:
    service = start_service(widget_origins=["https://shop.gadgetcorp.example"])
    browser = service.client()
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = browser.options(
        "/widget/conversations", headers={"Origin": "https://shop.gadgetcorp.example", **preflight}
    )
    assert allowed.headers.get("access-control-allow-origin") == "https://shop.gadgetcorp.example"
    other = browser.options("/widget/conversations", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
