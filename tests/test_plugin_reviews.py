"""Agents reviewing the assistant's drafts through the API: queue, claims, approve / edit / reject, and what follows."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from collector import recorder
from core.db import session_scope
from core.models import Draft, utcnow
from tests.fixtures.service import RunningService, WidgetConversation, start_widget_conversation

DRAFT = "Please try charging your SuperWidget for an hour."
FINAL = "I'm sorry about that! Please try charging your SuperWidget for a full hour and let me know."


def customer_asks(
    service: RunningService, store_url: str, question: str, draft: str, version: str = "v0001-aaaa"
) -> tuple[WidgetConversation, int]:
    """A widget conversation with the customer's question, answered by a draft as the model would write it."""
    conversation = start_widget_conversation(service.client("widget"), channel="web", customer_ref="cust-7")
    assert conversation.history()["mode"] == "assist"
    # no model server is attached here: the customer's message is stored and the widget is told to retry
    refused = conversation.send(question)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    with session_scope(store_url) as session:
        conversation_id = recorder.find_conversation(session, "web", conversation.id).id
        draft_row = recorder.record_draft(
            session,
            conversation_id,
            draft,
            adapter_version=version,
            latency_ms=12.5,
            prompt=[{"role": "user", "content": question}],
        )
    return conversation, draft_row.id


def test_agent_edit_is_kept_beside_the_draft_reaches_the_customer_and_the_export(
    plugin_service: RunningService, store_url: str
) -> None:
    conversation, draft_id = customer_asks(plugin_service, store_url, "My SuperWidget won't turn on.", DRAFT)
    agent = plugin_service.client("agent")
    alice, bob = plugin_service.person("alice"), plugin_service.person("bob")

    def customer_sees() -> str | None:
        return conversation.history()["agent_activity"]

    waiting = conversation.history()
    assert waiting["awaiting_agent"] is True and waiting["agent_activity"] == "waiting"
    assert [m["role"] for m in waiting["messages"]] == ["user"]  # the customer never sees the draft

    queue = agent.get("/reviews/queue").json()
    assert [item["draft_id"] for item in queue] == [draft_id]
    assert queue[0]["draft"] == DRAFT and queue[0]["adapter_version"] == "v0001-aaaa"
    assert queue[0]["context"][0]["content"] == "My SuperWidget won't turn on."

    assert alice.post(f"/reviews/{draft_id}/claim", json={}).json()["claimed_by"] == "alice"
    assert customer_sees() == "reviewing"
    typing = alice.post(f"/reviews/{draft_id}/typing", json={}).json()
    assert typing["claimed_by"] == "alice" and typing["typing_until"] is not None
    assert customer_sees() == "typing"
    assert "alice" not in json.dumps(conversation.history())  # the agent stays anonymous
    taken = bob.post(f"/reviews/{draft_id}/claim", json={})
    assert taken.status_code == 409 and "alice" in taken.json()["detail"]
    assert bob.post(f"/reviews/{draft_id}/typing", json={}).status_code == 409
    bob_edit = bob.post(f"/reviews/{draft_id}/edit", json={"final_text": "Hi"})
    assert bob_edit.status_code == 409
    # who acts comes from the key: bob naming alice in the body neither passes her claim nor signs as her
    forged = bob.post(f"/reviews/{draft_id}/edit", json={"agent": "alice", "final_text": "Hi"})
    assert forged.status_code == 422 and "acts as 'bob', not 'alice'" in forged.json()["detail"]

    edited = alice.post(f"/reviews/{draft_id}/edit", json={"agent": "alice", "final_text": FINAL}).json()
    assert edited["decision"] == "edited" and edited["draft"] == DRAFT and edited["final_text"] == FINAL
    assert edited["agent"] == "alice"  # the body may repeat the key's own name
    assert {"op": "insert", "before": "", "after": "I'm sorry about that!"} in edited["diff"]
    assert {"op": "replace", "before": "an hour.", "after": "a full hour and let me know."} in edited["diff"]
    again = alice.post(f"/reviews/{draft_id}/approve", json={})
    assert again.status_code == 409 and "already reviewed" in again.json()["detail"]

    seen = conversation.history()
    assert seen["awaiting_agent"] is False and seen["agent_activity"] is None
    assert [(m["role"], m["content"]) for m in seen["messages"]][-1] == ("assistant", FINAL)
    assert agent.get("/reviews/queue").json() == []

    from tests.fixtures.stores import redact_store

    redact_store(store_url)  # what the service's redaction worker does as it goes; HTTP exports are always redacted
    export = plugin_service.client("admin").post("/admin/export", json={"dedup": False}).json()
    nothing = plugin_service.client("admin").post("/admin/export", json={"decisions": []})
    assert nothing.status_code == 422 and nothing.json()["detail"] == "keep at least one decision, e.g. approved,edited"
    lines = [
        json.loads(line) for path in Path(export["path"]).glob("*.jsonl") for line in path.read_text().splitlines()
    ]
    assert [m["content"] for record in lines for m in record["messages"] if m["role"] == "assistant"] == [FINAL]
    assert DRAFT not in json.dumps(lines)


def test_a_stale_claim_expires_and_another_agent_takes_the_draft(
    housestyle_home: Path, store_url: str, start_service
) -> None:
    """Catches `draft.claimed_until > utcnow()` -> `<` (or the expiry ignored) in collector/review_queue.py. No real
    time passes: the claim's expiry is moved into the past in the store, as if alice's claim TTL had run out (a 1 s
    TTL raced bob's first request on a loaded machine)."""
    service = start_service(claim_ttl_seconds=600)
    _, draft_id = customer_asks(service, store_url, "Where is order GC-123456?", "It ships today.")
    alice, bob = service.person("alice"), service.person("bob")
    assert alice.post(f"/reviews/{draft_id}/claim", json={}).status_code == 200
    assert bob.post(f"/reviews/{draft_id}/claim", json={}).status_code == 409
    with session_scope(store_url) as session:  # alice walked away; her claim lapses
        session.execute(update(Draft).where(Draft.id == draft_id).values(claimed_until=utcnow() - timedelta(seconds=1)))
    assert bob.post(f"/reviews/{draft_id}/claim", json={}).json()["claimed_by"] == "bob"
    approved = bob.post(f"/reviews/{draft_id}/approve", json={}).json()
    assert approved["decision"] == "approved" and approved["final_text"] == "It ships today."


def test_an_agent_who_moves_on_gives_the_draft_back_at_once(plugin_service: RunningService, store_url: str) -> None:
    conversation, draft_id = customer_asks(plugin_service, store_url, "Can I pay by invoice?", "Yes.")
    alice, bob = plugin_service.person("alice"), plugin_service.person("bob")
    assert alice.post(f"/reviews/{draft_id}/claim", json={}).status_code == 200
    refused = bob.post(f"/reviews/{draft_id}/release", json={})
    assert refused.status_code == 409 and "only they can release it" in refused.json()["detail"]
    released = alice.post(f"/reviews/{draft_id}/release", json={}).json()
    assert released["claimed_by"] is None and released["draft"] == "Yes."
    assert conversation.history()["agent_activity"] == "waiting"
    assert bob.post(f"/reviews/{draft_id}/claim", json={}).json()["claimed_by"] == "bob"
    assert bob.post(f"/reviews/{draft_id}/approve", json={}).status_code == 200
    assert bob.post(f"/reviews/{draft_id}/release", json={}).status_code == 409  # decided already


def test_rejected_draft_with_a_written_reply_shows_the_agents_words_and_counts_in_stats_and_metrics(
    plugin_service: RunningService, store_url: str
) -> None:
    conversation, rejected_id = customer_asks(plugin_service, store_url, "Can I return it?", "No.", version="v0002-bbbb")
    _, approved_id = customer_asks(plugin_service, store_url, "Do you ship to Canada?", "Yes, we do!")
    agent, admin = plugin_service.client("agent"), plugin_service.client("admin")
    rejected = agent.post(
        f"/reviews/{rejected_id}/reject", json={"reply": "Of course, within 30 days.", "reason": "policy is wrong"}
    ).json()
    assert rejected["decision"] == "rejected" and rejected["agent"] == "test-agent"  # default: the key's name
    assert agent.post(f"/reviews/{approved_id}/approve", json={}).json()["decision"] == "approved"
    assert agent.post("/reviews/99999/approve", json={}).status_code == 404

    history = conversation.history()
    assert history["messages"][-1]["content"] == "Of course, within 30 days."

    stats = admin.get("/admin/stats").json()
    assert stats["conversations_by_channel"] == {"web": 2}
    assert stats["drafts_by_decision"] == {"pending": 0, "approved": 1, "edited": 0, "rejected": 1}
    by_version = {row["adapter_version"]: row for row in stats["per_adapter_version"]}
    assert by_version["v0002-bbbb"]["rejected"] == 1 and by_version["v0001-aaaa"]["approved"] == 1

    metrics = admin.get("/metrics").text
    assert 'housestyle_drafts{adapter_version="v0002-bbbb",decision="rejected"} 1.0' in metrics
    assert 'housestyle_reviews_total{adapter_version="v0001-aaaa",decision="approved"} 1.0' in metrics
    assert (
        'housestyle_http_requests_total{method="POST",route="/reviews/{draft_id}/reject",status="200"} 1.0' in metrics
    )


def test_the_console_shows_the_past_replies_a_draft_leaned_on_and_an_agent_marks_one_outdated(
    plugin_service: RunningService, store_url: str
) -> None:
    """A draft's `recalled`: the brand's past exchanges (redacted) its prompt carried; an agent marks one outdated
    (never offered again); another brand's key gets 404, as for a draft it may not see; bad input gets a 4xx detail."""
    import httpx

    from collector.brands import brand_fields, create_brand
    from collector.memory import Example, Recall, forget_indexes, recall, record_recall
    from core.settings import get_settings
    from plugin.api.keys import create_key
    from tests.fixtures.stores import redact_store

    forget_indexes()
    with session_scope(store_url) as session:  # a past exchange of the default brand, reviewed
        past = recorder.start_conversation(session)
        recorder.add_message(session, past.id, "user", "How long does SuperWidget shipping take?")
        old = recorder.record_draft(session, past.id, "Shipping takes 5 days.")
        review_id = recorder.record_review(session, old.id, "approved", agent_id="alice").id
    redact_store(store_url)
    _, draft_id = customer_asks(plugin_service, store_url, "SuperWidget shipping, how many days?", DRAFT)
    with session_scope(store_url) as session:  # what the reply path records when the prompt carried it
        record_recall(session, draft_id, Recall(query="shipping", examples=[Example(
            review_id=review_id, conversation_id=past.id, customer="", reply="", score=3.5)]))
    agent = plugin_service.client("agent")
    (item,) = agent.get("/reviews/queue").json()
    assert item["recalled"] == [{"review_id": review_id, "customer": "How long does SuperWidget shipping take?",
                                 "reply": "Shipping takes 5 days.", "score": 3.5}]
    assert agent.get(f"/reviews/{draft_id}").json()["recalled"][0]["review_id"] == review_id

    with session_scope(store_url) as session:  # a key of another brand only
        create_brand(session, "business", brand_fields(company_name="GadgetCorp Business"), settings=get_settings())
        _, other_key = create_key(session, "agent", "other-brand-agent", brands=["business"])
    other = httpx.Client(base_url=plugin_service.url, headers={"Authorization": f"Bearer {other_key}"}, timeout=60)
    with other:
        assert other.post(f"/reviews/{draft_id}/recalled/{review_id}/outdated").status_code == 404
    missing = agent.post(f"/reviews/{draft_id}/recalled/{review_id + 99}/outdated")
    assert missing.status_code == 404 and "leaned on no review" in missing.json()["detail"]
    bad = agent.post(f"/reviews/{draft_id}/recalled/0/outdated")
    assert bad.status_code == 422 and bad.json()["detail"]
    settings = get_settings().model_copy(update={"memory_examples": 3, "memory_min_score": 0.0})
    assert recall(store_url, [("user", "SuperWidget shipping")], brand_id=1, settings=settings).review_ids == [review_id]

    marked = agent.post(f"/reviews/{draft_id}/recalled/{review_id}/outdated", json={})
    assert marked.status_code == 200 and marked.json() == {"review_id": review_id, "outdated": True, "already": False}
    assert agent.post(f"/reviews/{draft_id}/recalled/{review_id}/outdated").json()["already"] is True
    assert recall(store_url, [("user", "SuperWidget shipping")], brand_id=1, settings=settings).examples == []
    forget_indexes()
