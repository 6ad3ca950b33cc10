"""Hostile bodies for the two routes other systems post to, on both stores (issue 28 items 7 and 8): the Chatwoot
webhook and `/v1/chat/completions`, fuzzed with Hypothesis. One field of a well-formed body at a time is replaced by
something hostile (NUL, a lone surrogate, 70,000 characters, a template's control string, a number past 64 bits, a
float, a list, an object, null); the service answers 2xx, a 4xx with a JSON `detail`, or the documented 503 "no
model server" (none is attached here), never another 5xx. The whole-API fuzz (tests/test_fuzz_api.py) runs on SQLite
and rarely gets past the webhook's token; this one sends the token and reaches the code that stores what came in,
where the earlier 500s were (a NUL on Postgres, a lone surrogate on SQLite, a 200-character name, a huge id).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fixtures.service import RunningService, chatwoot_event

EXAMPLES = 60  # per route and store: a few seconds each
TOKEN = "fuzz-bodies-token"

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\x00", "a\x00b", "\ud800", "tail \udfff", "x" * 70_000, "<|im_start|>system", "[INST]", "",
                     " ", "é" * 300, "0" * 400]),
)
HOSTILE = st.one_of(
    HOSTILE_TEXT,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)

WEBHOOK_FIELDS = [("content",), ("id",), ("message_type",), ("private",), ("sender", "name"), ("sender", "id"),
                  ("sender", "email"), ("sender", "type"), ("conversation", "id"), ("account", "id"),
                  ("conversation",), ("sender",), ("event",)]
COMPLETION_FIELDS = [("model",), ("user",), ("messages",), ("messages", 0, "content"), ("messages", 0, "role"),
                     ("max_tokens",), ("temperature",), ("stream",)]

BOUNDED = settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
                   suppress_health_check=list(HealthCheck), derandomize=True, database=None)


def with_field(body: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    """`body` with the field at `path` replaced by `value`."""
    changed = copy.deepcopy(body)
    holder = changed
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return changed


def content_parts(text: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


def post_raw(client: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response:
    """JSON as a client would send it (lone surrogates escaped as \\udXXX, which JSON allows)."""
    return client.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"})


def problems_of(client: httpx.Client, url: str, bodies: Callable[[], Any]) -> list[str]:
    """Send the generated bodies; each answer that breaks the promise, one line each."""
    found: list[str] = []

    @BOUNDED
    @given(body=bodies())
    def send(body: dict[str, Any]) -> None:
        answer = post_raw(client, url, body)
        detail = answer.json().get("detail") if answer.headers.get("content-type", "").startswith(
            "application/json") else None
        no_model = answer.status_code == 503 and "model server" in str(detail)
        if answer.status_code >= 500 and not no_model:
            found.append(f"{answer.status_code} for {json.dumps(body)[:200]}: {answer.text[:200]}")
        elif 400 <= answer.status_code < 500 and detail is None:
            found.append(f"{answer.status_code} without a JSON detail for {json.dumps(body)[:200]}")

    send()
    return found


def test_the_chatwoot_webhook_answers_no_server_error_to_hostile_fields(
    store_url: str, start_service: Callable[..., RunningService]
) -> None:
    service = start_service(chatwoot_webhook_token=TOKEN, rate_limit_per_second=100_000, rate_limit_burst=100_000)
    base = chatwoot_event("My SuperWidget is dead.", "incoming")

    def bodies() -> Any:
        return st.builds(lambda index, value, message_id: with_field(
            with_field(base, ("id",), message_id), WEBHOOK_FIELDS[index], value),
            st.integers(0, len(WEBHOOK_FIELDS) - 1), HOSTILE, st.integers(1, 10**9))

    problems = problems_of(service.client(), f"/chatwoot/webhook?token={TOKEN}", bodies)
    assert problems == [], "\n".join(problems)


def test_the_chat_api_answers_no_server_error_to_hostile_fields(
    store_url: str, start_service: Callable[..., RunningService]
) -> None:
    service = start_service(rate_limit_per_second=100_000, rate_limit_burst=100_000)
    base = {"model": service.app.state.settings.public_model_name, "user": "customer-1",
            "messages": [{"role": "user", "content": "My SuperWidget is dead."}]}

    def bodies() -> Any:
        field = st.builds(lambda index, value: with_field(base, COMPLETION_FIELDS[index], value),
                          st.integers(0, len(COMPLETION_FIELDS) - 1), HOSTILE)
        parts = st.builds(lambda value: with_field(base, ("messages", 0, "content"), content_parts(value)), HOSTILE)
        return st.one_of(field, parts)

    problems = problems_of(service.client("admin"), "/v1/chat/completions", bodies)
    assert problems == [], "\n".join(problems)
