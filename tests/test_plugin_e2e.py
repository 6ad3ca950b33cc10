"""End to end on a real vLLM: widget conversations, agent edits into the export, the OpenAI SDK, and Chatwoot."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from sqlalchemy import select

from collector import recorder
from core.db import session_scope
from core.models import Conversation, Draft, Review
from tests.fixtures.service import E2E_CHATWOOT_TOKEN, EndToEndService, chatwoot_event, start_widget_conversation
from tests.fixtures.vllm import register_adapter_folder

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def read_events(response) -> list[tuple[str, dict | str]]:
    """The server-sent events of a streamed answer as (event name, decoded data)."""
    events, name, data = [], "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            text = "\n".join(data)
            events.append((name, text if text == "[DONE]" else json.loads(text)))
            name, data = "message", []
    return events


def stored_draft(service: EndToEndService, draft_id: int) -> Draft:
    with session_scope(service.settings.resolved_database_url) as session:
        return session.get(Draft, draft_id)


def test_assist_mode_widget_conversation_agent_edit_becomes_training_example(e2e_service: EndToEndService) -> None:
    widget, agent = e2e_service.client("widget"), e2e_service.client("agent")
    conversation = start_widget_conversation(widget, channel="web", mode="assist")
    with widget.stream(
        "POST", f"/widget/conversations/{conversation.id}/messages", headers=conversation.headers,
        json={"content": "My SuperWidget will not charge."},
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
    assert [name for name, _ in events] == ["awaiting_agent"]  # the customer never sees the draft itself
    assert events[0][1]["awaiting_agent"] is True and events[0][1]["reply"] is None

    pending = [item for item in agent.get("/reviews/queue").json() if item["channel"] == "web"]
    item = next(item for item in pending if item["context"][-1]["content"] == "My SuperWidget will not charge.")
    draft = stored_draft(e2e_service, item["draft_id"])
    assert draft.content == item["draft"] and draft.latency_ms > 0
    assert draft.prompt[0] == {"role": "system", "content": e2e_service.settings.system_prompt}
    assert draft.prompt[-1] == {"role": "user", "content": "My SuperWidget will not charge."}

    final = "I'm sorry to hear that! Please try another cable and charger first."
    edited = agent.post(f"/reviews/{item['draft_id']}/edit", json={"final_text": final}).json()
    assert edited["decision"] == "edited" and edited["draft"] == draft.content and edited["agent"] == "test-agent"
    history = conversation.history()
    assert history["awaiting_agent"] is False and history["messages"][-1]["content"] == final

    from tests.fixtures.stores import redact_store

    redact_store(e2e_service.settings.resolved_database_url)  # the redaction worker's pass; HTTP exports are redacted
    export = e2e_service.client("admin").post("/admin/export", json={"dedup": False, "channels": ["web"]})
    assert export.status_code == 200, export.text
    records = [
        json.loads(line)
        for path in Path(export.json()["path"]).glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    replies = [m["content"] for record in records for m in record["messages"] if m["role"] == "assistant"]
    assert final in replies and draft.content not in replies


def test_auto_mode_streams_the_live_adapters_reply_to_the_customer(
    e2e_service: EndToEndService, lora_adapters: dict[str, Path], vllm_server
) -> None:
    version = register_adapter_folder(
        lora_adapters["other"], vllm_server.base_model, database_url=e2e_service.settings.resolved_database_url
    )
    admin_cli = e2e_service.client()
    admin_cli.headers["Authorization"] = f"Bearer {e2e_service.control_token}"
    promoted = admin_cli.post(f"/admin/adapters/{version}/promote", json={"actor": "ana", "reason": "eval passed"})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["version"] == version
    assert admin_cli.get("/admin/adapters").json()["serving"]["live"] == version

    widget = e2e_service.client("widget")
    conversation = start_widget_conversation(widget, mode="auto")
    with widget.stream(
        "POST", f"/widget/conversations/{conversation.id}/messages", headers=conversation.headers,
        json={"content": "Where is my order GC-1234567?"},
    ) as response:
        events = read_events(response)
    names = [name for name, _ in events]
    assert names[-1] == "reply" and set(names[:-1]) == {"delta"}
    reply = events[-1][1]
    assert reply["adapter_version"] == version
    assert "".join(data["text"] for name, data in events if name == "delta") == reply["reply"]["content"]
    history = conversation.history()
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
    assert history["messages"][-1]["content"] == reply["reply"]["content"]

    answered = conversation.send("Thanks!")
    assert answered.status_code == 200 and answered.json()["adapter_version"] == version
    assert e2e_service.client().get("/ready").json()["ready"] is True


def test_openai_sdk_works_unchanged_and_every_call_is_recorded(e2e_service: EndToEndService) -> None:
    client = openai.OpenAI(base_url=f"{e2e_service.url}/v1", api_key=e2e_service.keys["agent"], max_retries=0)
    public_model = e2e_service.settings.public_model_name
    assert [model.id for model in client.models.list()] == [public_model]

    completion = client.chat.completions.create(
        model=public_model, messages=[{"role": "user", "content": "Do you ship to Canada?"}], max_tokens=12
    )
    assert completion.model == public_model and completion.choices[0].message.content
    assert completion.usage.completion_tokens > 0
    assert completion.system_fingerprint.startswith("housestyle:")

    stream = client.chat.completions.create(
        model=public_model, messages=[{"role": "user", "content": "Can I return it?"}], max_tokens=12, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(pieces)

    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=f"{e2e_service.url}/v1", api_key=e2e_service.keys["widget"], max_retries=0).models.list()

    with session_scope(e2e_service.settings.resolved_database_url) as session:
        api_conversations = session.execute(select(Conversation).where(Conversation.channel == "api")).scalars().all()
        transcripts = {
            c.id: [(str(m.role), m.content) for m in recorder.transcript(session, c.id)] for c in api_conversations
        }
        drafts = session.execute(select(Draft).where(Draft.conversation_id.in_(list(transcripts)))).scalars().all()
    by_question = {turns[0][1]: turns for turns in transcripts.values()}
    assert by_question["Do you ship to Canada?"] == [
        ("user", "Do you ship to Canada?"),
        ("assistant", completion.choices[0].message.content),
    ]
    assert by_question["Can I return it?"][-1] == ("assistant", "".join(pieces))
    assert all(draft.latency_ms and draft.prompt for draft in drafts)
    metrics = e2e_service.client("admin").get("/metrics").text
    assert "housestyle_tokens_total{adapter_version=" in metrics and 'kind="completion"' in metrics


def test_chatwoot_customer_gets_a_draft_note_and_the_agents_edit_is_recorded(e2e_service: EndToEndService) -> None:
    chatwoot, anonymous = e2e_service.chatwoot, e2e_service.client()
    before = len(chatwoot.calls)
    webhook = {"token": E2E_CHATWOOT_TOKEN}
    event = chatwoot_event("Hi, my GadgetCorp order has not arrived.", "incoming", conversation=77, account=5)
    assert anonymous.post("/chatwoot/webhook", params=webhook, json=event).json()["action"] == "draft-requested"
    calls = chatwoot.wait_for_calls(before + 1)
    assert len(calls) == before + 1
    note = calls[-1]
    assert note["path"] == "/api/v1/accounts/5/conversations/77/messages" and note["token"] == "e2e-bot-token"
    assert note["json"]["private"] is True and note["json"]["content"]  # assist: a private note for the agents

    # Chatwoot echoes the bot's note back as a webhook: ignored, no loop
    echo = chatwoot_event(
        note["json"]["content"],
        "outgoing",
        private=True,
        sender_type="agent_bot",
        conversation=77,
        account=5,
        message_id=note["id"],
    )
    assert anonymous.post("/chatwoot/webhook", params=webhook, json=echo).json()["action"] == "ignored"

    # a small edit of whatever the model drafted (a sign-off shorter than any real draft): similar enough to count
    # as an edit, not a reply written from scratch (HOUSESTYLE_CHATWOOT_EDIT_THRESHOLD 0.5); a long addition to a
    # short draft would count as a rejection, whichever the draft is that this session's memory led to
    agent_text = note["json"]["content"] + " Thanks!"
    assert len(note["json"]["content"]) >= 2 * len(" Thanks!"), note["json"]["content"]
    reply = chatwoot_event(agent_text, "outgoing", sender_type="user", conversation=77, account=5, message_id=999)
    outcome = anonymous.post("/chatwoot/webhook", params=webhook, json=reply).json()
    assert outcome["action"] == "review-recorded" and outcome["detail"].endswith("edited"), (agent_text, outcome)
    with session_scope(e2e_service.settings.resolved_database_url) as session:
        conversation = recorder.find_conversation(session, "chatwoot", "5:77")
        draft = session.execute(select(Draft).where(Draft.conversation_id == conversation.id)).scalar_one()
        review = session.execute(select(Review).where(Review.draft_id == draft.id)).scalar_one()
    assert draft.content == note["json"]["content"] and review.final_text == agent_text
    assert len(chatwoot.calls) == before + 1  # nothing more was posted
