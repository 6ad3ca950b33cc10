"""Fuzzing the service from its own OpenAPI document (schemathesis), with a key of each role and with none.

One service on its own SQLite store, its gateway attached to the session's real vLLM, answers generated requests
for every documented operation. Two promises, each its own test:
- nothing answers 5xx, whatever the body, path or query (a 503 would only be right with no model server, and one
  is attached), and every response has the content type its operation documents;
- every status code a route answers is documented for it, and every body matches its documented schema (the
  400/403/404/409/429 answers and the 422 body included). This one fails until `plugin/api` documents them:
  SECURITY.md and the hardening report list what is missing.

Bounded: FUZZ_EXAMPLES generated cases per operation and role, no shrinking (a failure is reported as found), so
both tests together take a few minutes on two cores. `POST /admin/refresh` is left out: a 202 there starts a real
training run (its 202/409/503 are covered by tests/test_loop_triggers.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.db import open_store
from core.settings import Settings
from plugin.api.app import create_app
from serving.gateway import ServingGateway
from tests.fixtures.service import LiveServer, make_role_keys

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

FUZZ_EXAMPLES = int(os.environ.get("HOUSESTYLE_FUZZ_EXAMPLES", "25"))
ROLES = ["widget", "agent", "admin", None]  # None: no key at all
UNFUZZED = {("POST", "/admin/refresh")}  # starts a real training run


class FuzzTarget:
    """The running service, its URL and one key per role."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url, self.keys = url, keys

    def headers(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"} if role else {}


@pytest.fixture(scope="module")
def fuzz_target(vllm_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    home = tmp_path_factory.mktemp("fuzz-home")
    service_settings = Settings(
        home=home, database_url=f"sqlite:///{home / 'store.db'}", vllm_urls=vllm_server.url,
        vllm_api_key=vllm_server.api_key, base_model=str(vllm_server.base_model), max_lora_rank=16,
        health_interval_s=0.5, reply_max_tokens=4, chatwoot_webhook_token="fuzz-webhook-token",
        # the fuzzer is one client sending hundreds of requests: the limiter would answer most of them 429
        rate_limit_per_second=100_000, rate_limit_burst=100_000,
    )
    url = open_store(service_settings.resolved_database_url)
    gateway = ServingGateway(service_settings, database_url=url)
    server = LiveServer(create_app(service_settings, gateway=gateway, control_token="fuzz-control-token")).start()
    try:
        yield FuzzTarget(server.url, make_role_keys(url))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_target: FuzzTarget):
    return schemathesis.openapi.from_url(f"{fuzz_target.url}/openapi.json")


BOUNDED = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time, the first failing case is reported
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases every run: a failure in CI is the one you get locally
    database=None,
)


def fuzz(api_schema, target: FuzzTarget, checks: list) -> list[str]:
    """Every documented operation, FUZZ_EXAMPLES generated requests each, each sent with every role's key and with
    none; the distinct problems found (operation, key, what), one line each."""
    problems: dict[tuple[str, str, str, int], str] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if (operation.method.upper(), operation.path) in UNFUZZED:
            continue

        @BOUNDED
        @given(case=operation.as_strategy())
        def send(case) -> None:
            for role in ROLES:
                response = case.call(headers=target.headers(role), timeout=120)
                try:
                    case.validate_response(response, checks=checks, headers=target.headers(role))
                except FailureGroup as group:  # collect every distinct problem, not just the first
                    for failure in group.exceptions:
                        key = (label, role or "no", failure.title, response.status_code)
                        body = " ".join(response.text.split())[:160]
                        detail = " ".join(str(failure.message).split())[:200]
                        problems.setdefault(key, f"{failure.title}: {detail} [answered {response.status_code}: {body}]")

        send()
    return [f"{label} with the {role} key: {what}" for (label, role, _, _), what in sorted(problems.items())]


def test_no_request_gets_a_server_error_and_every_body_has_its_documented_type(api_schema, fuzz_target) -> None:
    problems = fuzz(api_schema, fuzz_target, [not_a_server_error, content_type_conformance])
    assert problems == [], "\n".join(problems)


def test_every_answer_is_documented_with_its_status_code_and_body_schema(api_schema, fuzz_target) -> None:
    """Fails until plugin/api documents its 400/403/404/409/429 answers and its 422 body matches the documented one."""
    problems = fuzz(api_schema, fuzz_target, [status_code_conformance, response_schema_conformance])
    assert problems == [], "\n".join(problems)
