"""Every input field is checked at the edge: a bad Chatwoot or OpenAI body is one 422 with a JSON `detail`, never a
500; a platform's text the store cannot keep is cleaned rather than refused (Chatwoot never resends a message)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from collector import recorder
from core.db import session_scope
from core.models import Review
from plugin.connectors.chatwoot_payloads import ChatwootEvent
from plugin.openai.protocol import ChatCompletionRequest
from tests.fixtures.service import FakeChatwoot, chatwoot_event

TOKEN = "cw-edge-secret"


@pytest.fixture
def connected(store_url: str, start_service, fake_chatwoot: FakeChatwoot):
    return start_service(chatwoot_url=fake_chatwoot.url, chatwoot_api_token="bot-token", chatwoot_webhook_token=TOKEN)


def post_raw(service, body: str, path: str = "/chatwoot/webhook", role: str | None = None):
    """POST a JSON text as sent (json.dumps escapes a lone surrogate as \\ud800, as an attacker's client would)."""
    params = {"token": TOKEN} if path.startswith("/chatwoot") else None
    return service.client(role).post(path, params=params, content=body.encode("ascii"),
                                     headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("Jane\x00Doe", "Jane\ufffdDoe"),  # Postgres refuses NUL
        ("Jane\ud800Doe", "Jane?Doe"),  # SQLite cannot encode a lone surrogate
        ("J" * 500, "J" * 200),  # the store keeps 200 characters of a name
    ],
)
def test_a_chatwoot_senders_unstorable_name_is_cleaned_and_the_message_kept(
    connected, store_url: str, name: str, kept: str
) -> None:
    event = chatwoot_event("Where is my order?", "incoming", message_id=301)
    event["sender"]["name"] = name
    answer = post_raw(connected, json.dumps(event))
    assert answer.status_code == 200, answer.text
    assert answer.json()["action"] == "draft-requested"
    with session_scope(store_url) as session:
        conversation = recorder.find_conversation(session, "chatwoot", "1:42")
        assert [m.content for m in recorder.transcript(session, conversation.id)] == ["Where is my order?"]
        assert conversation.known_values["name"] == kept


def test_an_agents_long_name_still_records_the_review(connected, store_url: str) -> None:
    post_raw(connected, json.dumps(chatwoot_event("Can I return it?", "incoming", message_id=311)))
    with session_scope(store_url) as session:
        conversation = recorder.find_conversation(session, "chatwoot", "1:42")
        recorder.record_draft(session, conversation.id, "Yes, within 30 days.", adapter_version="v0001-aaaa")
    event = chatwoot_event("Yes, within 30 days.", "outgoing", sender_type="user", message_id=312)
    event["sender"]["name"] = "A\x00" * 300
    answer = post_raw(connected, json.dumps(event))
    assert answer.status_code == 200 and answer.json()["action"] == "review-recorded", answer.text
    with session_scope(store_url) as session:
        review = session.execute(select(Review)).scalar_one()
        assert len(review.agent_id) == 200 and "\x00" not in review.agent_id


@pytest.mark.parametrize("where", ["id", "conversation", "account", "sender", "inbox"])
def test_an_absurd_chatwoot_id_is_a_422(connected, where: str) -> None:
    event = chatwoot_event("Hi", "incoming")
    if where == "id":
        event["id"] = 10**30
    else:
        event.setdefault(where, {})["id"] = -1 if where == "inbox" else 2**63
    answer = post_raw(connected, json.dumps(event))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]


def completion_body(**changes: object) -> dict:
    return {"model": "housestyle", "messages": [{"role": "user", "content": "Hi"}], **changes}


@pytest.mark.parametrize(
    "body",
    [
        completion_body(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
        completion_body(messages=[{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]),
        completion_body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        completion_body(model="house\ud800style"),
        completion_body(model=""),
        completion_body(user="u" * 201),
        completion_body(user="jane\x00"),
        completion_body(user="jane\udfff"),
        completion_body(messages=[{"role": "user", "content": "Hi", "name": "x\ud800"}]),
        completion_body(logit_bias={"a": "\ud800"}),
    ],
    ids=["int-text", "dict-text", "no-text", "surrogate-model", "empty-model", "long-user", "nul-user",
         "surrogate-user", "surrogate-name", "surrogate-extra"],
)
def test_a_bad_chat_completion_body_is_a_422(plugin_service, body: dict) -> None:
    answer = post_raw(plugin_service, json.dumps(body), path="/v1/chat/completions", role="agent")
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]


# --- fuzzing the two bodies' models: whatever JSON arrives, validation refuses it or yields a storable request ----
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=())),  # lone surrogates and NUL included
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def validates_or_refuses(model: type, body: object) -> object | None:
    """The model built from `body`, or None when pydantic refused it; any other exception is a bug (a 500)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError:
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sender=st.dictionaries(st.sampled_from(["id", "name", "email", "phone_number", "type"]), JSON_VALUES),
       ids=st.dictionaries(st.sampled_from(["conversation", "account", "inbox"]),
                           st.fixed_dictionaries({"id": JSON_VALUES})))
def test_any_chatwoot_body_validates_to_storable_fields_or_is_refused(sender: dict, ids: dict) -> None:
    event = validates_or_refuses(ChatwootEvent, {"event": "message_created", "content": "Hi", "sender": sender, **ids})
    if event is None or event.sender is None:
        return
    for value in (event.sender.name, event.sender.email, event.sender.phone_number, event.sender.type):
        if value is not None:
            assert "\x00" not in value and len(value) <= 320
            value.encode("utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=JSON_VALUES, user=JSON_VALUES, content=JSON_VALUES)
def test_any_chat_completion_body_validates_to_storable_text_or_is_refused(
    model: object, user: object, content: object
) -> None:
    body = {"model": model, "user": user, "messages": [{"role": "user", "content": content}]}
    request = validates_or_refuses(ChatCompletionRequest, body)
    if request is None:
        return
    for text in (request.model, request.user or "", request.messages[0].text()):
        assert "\x00" not in text
        text.encode("utf-8")
