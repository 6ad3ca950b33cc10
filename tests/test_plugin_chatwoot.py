"""The Chatwoot connector without a model: webhook authenticity, loops avoided, agents' replies become reviews."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from collector import recorder
from core.db import session_scope
from core.models import Review
from tests.fixtures.service import FakeChatwoot, chatwoot_event

TOKEN = "cw-shared-secret"
DRAFT = "Thanks for reaching out! Your SuperWidget can be returned within 30 days."


@pytest.fixture
def connected(store_url: str, start_service, fake_chatwoot: FakeChatwoot):
    return start_service(chatwoot_url=fake_chatwoot.url, chatwoot_api_token="bot-token", chatwoot_webhook_token=TOKEN)


def post_event(service, event: dict, token: str | None = TOKEN):
    return service.client().post("/chatwoot/webhook", params={"token": token} if token else None, json=event)


def test_webhook_without_the_shared_token_is_refused(connected) -> None:
    event = chatwoot_event("Hi", "incoming")
    assert post_event(connected, event, token=None).status_code == 401
    assert post_event(connected, event, token="guess").status_code == 401
    assert post_event(connected, {"event": "conversation_status_changed", "id": 1}).json()["action"] == "ignored"


@pytest.mark.parametrize(
    ("agent_text", "decision"),
    [
        (DRAFT, "approved"),
        ("Thanks for reaching out, Jane! Your SuperWidget can be returned within 30 days.", "edited"),
        ("Please call our hotline, they handle warranty cases.", "rejected"),
    ],
)
def test_agents_chatwoot_reply_reviews_the_pending_draft(
    connected, store_url: str, fake_chatwoot: FakeChatwoot, agent_text: str, decision: str
) -> None:
    stored = post_event(connected, chatwoot_event("Can I return my SuperWidget?", "incoming", message_id=201)).json()
    assert stored["action"] == "draft-requested"
    with session_scope(store_url) as session:
        conversation = recorder.find_conversation(session, "chatwoot", "1:42")
        assert [m.content for m in recorder.transcript(session, conversation.id)] == ["Can I return my SuperWidget?"]
        draft = recorder.record_draft(session, conversation.id, DRAFT, adapter_version="v0001-aaaa")

    # the agent's private note and the bot's own echo are not replies
    note = post_event(connected, chatwoot_event("checking warranty", "outgoing", private=True, sender_type="user"))
    echo = post_event(connected, chatwoot_event(DRAFT, "outgoing", sender_type="agent_bot", message_id=202))
    assert note.json()["action"] == echo.json()["action"] == "ignored"

    reply = post_event(connected, chatwoot_event(agent_text, "outgoing", sender_type="user", message_id=203)).json()
    assert reply == {"action": "review-recorded", "detail": f"draft {draft.id} {decision}"}
    with session_scope(store_url) as session:
        review = session.execute(select(Review).where(Review.draft_id == draft.id)).scalar_one()
        transcript = recorder.transcript(session, draft.conversation_id)
    assert review.decision == decision and review.agent_id == "chatwoot:Alice Agent"
    assert transcript[-1].content == agent_text  # what the customer actually got
    metrics = connected.client("admin").get("/metrics").text  # counted as the review queue counts its reviews
    assert f'housestyle_reviews_total{{adapter_version="v0001-aaaa",decision="{decision}"}} 1.0' in metrics
    # no model server here: nothing was posted to Chatwoot, and nothing crashed
    assert fake_chatwoot.calls == []
