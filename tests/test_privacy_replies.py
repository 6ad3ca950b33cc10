"""No placeholder reaches a customer: an adapter trained on redacted conversations writes <PERSON_1> where agents
wrote names; the service fills it from what the conversation knows, or writes it out, streamed or not (real vLLM)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from collector.export import ExportOptions, export_dataset
from collector.importer import import_file
from core.db import open_store, session_scope
from core.registry import set_status
from core.settings import get_settings
from serving.gateway import ServingGateway
from tests.fixtures.models import train_adapter
from tests.fixtures.service import start_widget_conversation

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

NAMES = ["albert sanders", "crystal minh", "dana kowalski", "eli brooks", "fatima noor", "gus moreno", "hana sato",
         "ivan petrov", "june park", "kofi mensah", "lena fischer", "marco rossi", "nina patel", "omar haddad"]
PROBLEMS = [("SuperWidget", "won't turn on", "Have you tried plugging it into a different power outlet?"),
            ("MegaGadget", "won't charge", "Please try a different USB-C cable and charger."),
            ("NanoCharger", "gets hot", "Please unplug it and let it cool down before using it again.")]


def greeted_conversations(path: Path, count: int) -> Path:
    """Customers who give their name; agents who thank them by first name: after redaction, `<PERSON_1>` both."""
    rng = random.Random(5)
    with path.open("w") as out:
        for index in range(count):
            name = rng.choice(NAMES)
            product, problem, answer = rng.choice(PROBLEMS)
            reply = f"Thanks for reaching out, {name.split()[0].title()}! {answer}"
            out.write(json.dumps({"external_id": f"greeted-{index}", "channel": "web", "messages": [
                {"role": "user", "content": f"hi, i'm {name}. my {product} {problem}"},
                {"role": "assistant", "content": reply, "draft": "How can I help?", "decision": "edited"},
            ]}) + "\n")
    return path


@pytest.fixture(scope="module")
def placeholder_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny base trained on redacted conversations in which every agent reply names the customer."""
    root = tmp_path_factory.mktemp("placeholder-adapter")
    url = open_store(f"sqlite:///{root / 'training.db'}")
    import_file(greeted_conversations(root / "greeted.jsonl", 60), url=url)
    settings = get_settings().model_copy(update={"database_url": url})
    from collector.pii.ingest import redact_everything, redactor_for

    redact_everything(url, lambda: redactor_for(settings))
    export_dataset(ExportOptions(out=root / "export"), settings=settings, progress=False)
    trained = "\n".join((root / "export" / "train.jsonl").read_text().splitlines()[:3])
    assert "<PERSON_1>" in trained and "albert" not in trained.lower()  # the model only ever sees placeholders
    return train_adapter(tiny_base, root / "export", root / "adapter")


def test_replies_never_show_a_placeholder_filled_from_the_platform_or_written_out(
    store_url: str, serving_settings, start_service, placeholder_adapter, vllm_server
) -> None:
    from tests.fixtures.vllm import register_adapter_folder

    version = register_adapter_folder(placeholder_adapter.path, vllm_server.base_model, rank=16)
    with session_scope(store_url) as session:
        set_status(session, version, "live", action="promote", actor="test")
    settings = get_settings()
    service = start_service(gateway=ServingGateway(settings, database_url=settings.resolved_database_url),
                            reply_max_tokens=48, redact_at_ingest=False)
    widget = service.client("widget")
    question = "hello, my SuperWidget won't turn on"

    raw = service.client("agent").post("/v1/chat/completions", json={
        "model": settings.public_model_name, "messages": [{"role": "user", "content": question}], "max_tokens": 48,
        "temperature": 0}).json()["choices"][0]["message"]["content"]
    # what the model itself writes: the placeholder it learned (the OpenAI API is for agents and shows it as is)
    assert "<PERSON_1>" in raw or "PERSON" in raw, raw

    for stream in (False, True):
        signed_in = start_widget_conversation(widget, mode="auto", customer_name="Crystal Minh")
        anonymous = start_widget_conversation(widget, mode="auto")
        replies = {}
        for who, conversation in (("signed in", signed_in), ("anonymous", anonymous)):
            answer = conversation.send(question, stream=stream)
            assert answer.status_code == 200, answer.text
            replies[who] = conversation.history()["messages"][-1]["content"]
            if stream:
                deltas = [json.loads(line[5:])["text"] for line in answer.text.splitlines()
                          if line.startswith("data:") and '"text"' in line]
                assert "".join(deltas) == replies[who]  # what streamed is what was recorded
        assert "Crystal" in replies["signed in"] and "Minh" not in replies["signed in"], replies  # a first name
        for reply in replies.values():
            assert "<" not in reply and "PERSON" not in reply and reply.strip(), replies
