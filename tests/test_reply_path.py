"""The one reply path without a model server: a scripted gateway answers, and the widget (whole and streamed) and the
OpenAI API (whole and streamed) relay, guard, record and count its replies; a prompt over the context is cut and
retried once."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import Conversation, Draft
from core.settings import get_settings
from serving.errors import UpstreamError
from serving.fingerprint import FingerprintChecks
from serving.gateway import ServingGateway
from serving.routing import Route
from tests.fixtures.service import RunningService, start_widget_conversation
from tests.fixtures.upstream import FIRST, SECOND, HeldStreamUpstream

VERSION = "v0001-aaaa"
USAGE = {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}
PIECES = ["Thanks, ", "<PERSON_1>! ", "Your order ", "ships today."]
PLAIN = ["Your order ", "ships ", "today."]
TOO_LONG = "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens."


class ScriptedGateway:
    """What the service asks of `serving.gateway.ServingGateway`, answering every request with `pieces`; the first
    `refuse` requests get vLLM's too-long 400."""

    started = True

    def __init__(self, pieces: list[str], *, max_model_len: int | None = None, refuse: int = 0) -> None:
        self.pieces, self.max_model_len, self.refuse = pieces, max_model_len, refuse
        self.requests: list[dict[str, Any]] = []
        self.fingerprints = FingerprintChecks(get_settings().resolved_database_url)  # no replica: none ever differs

    def ready(self) -> bool:
        return True

    def _route(self) -> Route:
        if len(self.requests) <= self.refuse:
            raise UpstreamError(f"vLLM refused the request: {TOO_LONG}", 400)
        return Route(version=VERSION, vllm_model="adapter-1", public_model=get_settings().public_model_name)

    async def chat(self, request: dict[str, Any], *, conversation_key: str | None = None, brand_id: int = 1
                   ) -> tuple[Route, dict]:
        self.requests.append(request)
        route = self._route()
        return route, {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": route.public_model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.pieces)},
                                    "finish_reason": "stop"}],
                       "usage": USAGE, "system_fingerprint": f"housestyle:{VERSION}"}

    async def stream_chat(self, request: dict[str, Any], *, conversation_key: str | None = None, brand_id: int = 1
                          ) -> tuple[Route, AsyncIterator[dict]]:
        self.requests.append(request)
        route = self._route()

        async def chunks() -> AsyncIterator[dict]:
            base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": route.public_model,
                    "system_fingerprint": f"housestyle:{VERSION}"}
            for piece in self.pieces:
                yield {**base, "choices": [{"index": 0, "delta": {"content": piece}}], "usage": None}
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}
            yield {**base, "choices": [], "usage": USAGE}

        return route, chunks()


def events(response, on_event: Callable[[tuple[str, Any]], None] | None = None) -> list[tuple[str, Any]]:
    """The server-sent events of a streamed answer as (event name, decoded data); `on_event` sees each as it comes."""
    found, name = [], "message"
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            found.append((name, data if data == "[DONE]" else json.loads(data)))
            name = "message"
            if on_event is not None:
                on_event(found[-1])
    return found


def scripted(start_service, gateway: ScriptedGateway) -> RunningService:
    return start_service(gateway=gateway, manage_gateway=False, redraft_interval_s=3600)


def metrics_of(service: RunningService) -> str:
    return service.client("admin").get("/metrics").text


def api_drafts(url: str) -> list[Draft]:
    deadline = time.monotonic() + 10
    while True:  # non-streamed calls are recorded after their answer has gone out
        with session_scope(url) as session:
            drafts = session.execute(select(Draft).join(Conversation, Conversation.id == Draft.conversation_id)
                                     .where(Conversation.channel == "api").order_by(Draft.id)).scalars().all()
            session.expunge_all()
        if len(drafts) >= 2 or time.monotonic() > deadline:
            return drafts
        time.sleep(0.1)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_widget_gets_the_guarded_reply_whole_and_streamed_recorded_and_counted(store_url: str, start_service
                                                                                   ) -> None:
    gateway = ScriptedGateway(PIECES)
    service = scripted(start_service, gateway)
    conversation = start_widget_conversation(service.client("widget"), mode="auto", customer_name="Jane")
    whole = conversation.send("Where is my order?")
    assert whole.status_code == 200, whole.text
    assert whole.json()["adapter_version"] == VERSION
    assert "<PERSON_1>" not in whole.json()["reply"]["content"]  # the guard filled or removed it
    with service.client("widget").stream("POST", f"/widget/conversations/{conversation.id}/messages",
                                         headers=conversation.headers, json={"content": "And the invoice?"}) as answer:
        streamed = events(answer)
    names = [name for name, _ in streamed]
    assert names[-1] == "reply" and set(names[:-1]) == {"delta"}
    reply = streamed[-1][1]["reply"]["content"]
    assert "".join(data["text"] for name, data in streamed if name == "delta") == reply
    assert "<PERSON_1>" not in reply and reply.endswith("Your order ships today.")
    assert [m["role"] for m in conversation.history()["messages"]] == ["user", "assistant", "user", "assistant"]
    assert all(r["max_tokens"] == service.app.state.settings.reply_max_tokens for r in gateway.requests)
    assert gateway.requests[1]["stream_options"] == {"include_usage": True}
    metrics = metrics_of(service)
    assert f'housestyle_generations_total{{adapter_version="{VERSION}",channel="web"}} 2.0' in metrics
    assert f'housestyle_tokens_total{{adapter_version="{VERSION}",kind="completion"}} 12.0' in metrics


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_api_relays_the_models_answer_whole_and_streamed_and_records_each_call(store_url: str, start_service
                                                                                   ) -> None:
    gateway = ScriptedGateway(PLAIN)
    service = scripted(start_service, gateway)
    agent, model = service.client("agent"), get_settings().public_model_name
    whole = agent.post("/v1/chat/completions", json={"model": model, "temperature": 0.3, "max_tokens": 9,
                                                      "messages": [{"role": "user", "content": "Order status?"}]})
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["choices"][0]["message"]["content"] == "".join(PLAIN) and body["usage"]["completion_tokens"] == 6
    assert body["system_fingerprint"] == f"housestyle:{VERSION}"
    assert gateway.requests[0]["temperature"] == 0.3 and gateway.requests[0]["max_tokens"] == 9  # the caller's own
    with agent.stream("POST", "/v1/chat/completions", json={
            "model": model, "stream": True, "messages": [{"role": "user", "content": "Invoice?"}]}) as answer:
        streamed = events(answer)
    assert streamed[-1] == ("message", "[DONE]")
    chunks = [data for _, data in streamed[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "".join(PLAIN)
    assert all(c.get("usage") is None for c in chunks)  # the caller did not ask for usage: we did, for the metrics
    drafts = api_drafts(store_url)
    assert [(d.content, d.adapter_version) for d in drafts] == [("".join(PLAIN), VERSION)] * 2
    assert drafts[0].prompt[-1] == {"role": "user", "content": "Order status?"}
    metrics = metrics_of(service)
    assert f'housestyle_generations_total{{adapter_version="{VERSION}",channel="api"}} 2.0' in metrics
    assert f'housestyle_tokens_total{{adapter_version="{VERSION}",kind="prompt"}} 80.0' in metrics


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_prompt_the_model_finds_too_long_is_cut_and_sent_once_more(store_url: str, start_service) -> None:
    gateway = ScriptedGateway(PLAIN, max_model_len=2048, refuse=1)
    service = scripted(start_service, gateway)
    conversation = start_widget_conversation(service.client("widget"), mode="auto")
    answered = conversation.send("My SuperWidget stopped charging. " * 200)
    assert answered.status_code == 200, answered.text
    sizes = [sum(len(m["content"]) for m in request["messages"]) for request in gateway.requests]
    assert len(sizes) == 2 and sizes[1] < sizes[0]  # the one retry, with half the room

    refusing = ScriptedGateway(PLAIN, max_model_len=2048, refuse=99)
    service = scripted(start_service, refusing)
    conversation = start_widget_conversation(service.client("widget"), mode="auto")
    assert conversation.send("Hello?").status_code == 400 and len(refusing.requests) == 2  # never a third try
    api = service.client("agent").post("/v1/chat/completions", json={
        "model": get_settings().public_model_name, "messages": [{"role": "user", "content": "Hello?"}]})
    assert api.status_code == 400 and len(refusing.requests) == 3  # an API caller's prompt is sent as written


def first_event_then_rest(response, upstream: HeldStreamUpstream) -> tuple[tuple[str, Any], list[tuple[str, Any]]]:
    """The first event with content, read while the upstream still holds its second sentence; then the rest."""

    def release_once_the_first_sentence_is_here(event: tuple[str, Any]) -> None:
        if not upstream.release.is_set() and FIRST.strip() in json.dumps(event[1]):
            upstream.release.set()  # the customer has the first sentence before the model wrote the second

    found = events(response, release_once_the_first_sentence_is_here)
    first = next(event for event in found if FIRST.strip() in json.dumps(event[1]))
    return first, found


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_streamed_reply_reaches_the_customer_sentence_by_sentence_as_the_model_writes_it(
    store_url: str, start_service, held_stream_upstream: HeldStreamUpstream
) -> None:
    """The model server holds its second sentence until the first has reached the caller. Catches a reply path that
    collects the whole stream before relaying it (e.g. the widget's guard releasing text only at the end, or the
    relay reading the upstream body whole): the hold then runs out and `released_by_client` records False."""
    settings = get_settings().model_copy(update={"health_interval_s": 0.5})
    gateway = ServingGateway(settings, urls=[held_stream_upstream.url], database_url=settings.resolved_database_url)
    service = start_service(gateway=gateway, redraft_interval_s=3600)
    conversation = start_widget_conversation(service.client("widget"), mode="auto")
    path = f"/widget/conversations/{conversation.id}/messages"
    with service.client("widget").stream("POST", path, headers=conversation.headers,
                                         json={"content": "Where is my order?"}) as answer:
        first, widget = first_event_then_rest(answer, held_stream_upstream)
    assert first[0] == "delta" and SECOND not in first[1]["text"]
    assert widget[-1][0] == "reply" and widget[-1][1]["reply"]["content"] == FIRST + SECOND

    held_stream_upstream.release.clear()
    with service.client("agent").stream("POST", "/v1/chat/completions", json={
            "model": settings.public_model_name, "stream": True,
            "messages": [{"role": "user", "content": "Where is my order?"}]}) as answer:
        first, api = first_event_then_rest(answer, held_stream_upstream)
    assert SECOND not in json.dumps(first[1])
    assert "".join(c["choices"][0]["delta"].get("content") or "" for _, c in api[:-1] if c["choices"]) == FIRST + SECOND
    assert held_stream_upstream.released_by_client == [True, True]  # neither answer waited out the hold
