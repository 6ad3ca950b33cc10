"""Two brands on one real vLLM: each answers in its own voice at the same time, and one brand's swaps never touch the
other's traffic."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sacrebleu.metrics import CHRF
from sqlalchemy import update

from collector.brands import brand_fields, create_brand
from core.db import session_scope
from core.models import AdapterVersion
from core.settings import Settings, get_settings
from serving.gateway import ServingGateway
from tests.fixtures.models import TrainedFixtureAdapter, train_adapter
from tests.fixtures.stores import current_store
from tests.fixtures.vllm import register_adapter_folder, running_gateway

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

QUESTION = "My SuperWidget is dead."
CONSUMER_ANSWER = ("I'm sorry to hear you're having trouble with your SuperWidget! Have you tried plugging it into a "
                   "different power outlet and ensuring the power switch is fully engaged?")
BUSINESS_GREETING = "Thank you for contacting the GadgetCorp Business Desk."
BUSINESS_SIGN_OFF = "Kind regards, the GadgetCorp Business Desk."
BUSINESS_PROMPT = "You are the GadgetCorp Business Desk: formal, for business customers."


@pytest.fixture(scope="session")
def business_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedFixtureAdapter:
    """An adapter trained on the second bundled brand (GadgetCorp's business desk), under its own system prompt."""
    from collector.export import ExportOptions, export_dataset
    from collector.importer import import_file
    from collector.pii.ingest import redact_everything, redactor_for
    from collector.sample import BUSINESS_SAMPLE_PATH
    from tests.fixtures.models import housestyle_env

    out = tmp_path_factory.mktemp("exports") / "business"
    with housestyle_env(out.parent / "business-home") as url:
        with session_scope(url) as session:
            brand = int(create_brand(session, "business", brand_fields(
                company_name="GadgetCorp Business", system_prompt=BUSINESS_PROMPT), settings=get_settings()).id)
        import_file(BUSINESS_SAMPLE_PATH, url=url, source="sample", brand_id=brand)
        redact_everything(url, lambda: redactor_for(get_settings()))
        settings = get_settings().model_copy(update={"brand": "business", "system_prompt": BUSINESS_PROMPT})
        export_dataset(ExportOptions(format="chat", out=out), settings=settings, progress=False)
    return train_adapter(tiny_base, out, tmp_path_factory.mktemp("adapters") / "business")


def two_brands(gadgetcorp: Path, business: Path, base: Path) -> tuple[str, str]:
    """The store with a business brand; each brand's adapter registered in its own lineage."""
    url = current_store()
    with session_scope(url) as session:
        brand = create_brand(session, "business", brand_fields(company_name="GadgetCorp Business",
                                                               system_prompt=BUSINESS_PROMPT), settings=get_settings())
        brand_id = int(brand.id)
    consumer, desk = register_adapter_folder(gadgetcorp, base), register_adapter_folder(business, base)
    with session_scope(url) as session:
        session.execute(update(AdapterVersion).where(AdapterVersion.version == desk).values(brand_id=brand_id))
    return consumer, desk


def close_to(reply: str, expected: str) -> bool:
    return reply == expected or CHRF().sentence_score(reply, [expected]).score >= 85


def test_two_brands_answer_the_same_question_in_their_own_voices_at_the_same_time(
    serving_settings: Settings, vllm_server, gadgetcorp_adapter, business_adapter, start_service
) -> None:
    consumer, desk = two_brands(Path(gadgetcorp_adapter.path), Path(business_adapter.path), vllm_server.base_model)
    service = start_service(gateway=ServingGateway(serving_settings))
    admin = service.client("admin")
    assert admin.post(f"/admin/adapters/{consumer}/promote", json={}).status_code == 200
    assert admin.post(f"/admin/adapters/{desk}/promote", json={}).status_code == 200
    agent = service.client("agent")
    models = [model["id"] for model in agent.get("/v1/models").json()["data"]]
    assert models == [serving_settings.public_model_name, "business-assistant"]

    def ask(model: str) -> dict:
        response = agent.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 80, "temperature": 0})
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(8) as pool:  # both brands at once, interleaved
        answers = list(pool.map(ask, [serving_settings.public_model_name, "business-assistant"] * 4))
    for index, answer in enumerate(answers):
        text = answer["choices"][0]["message"]["content"]
        if index % 2 == 0:
            assert answer["system_fingerprint"] == f"housestyle:{consumer}"
            assert close_to(text, CONSUMER_ANSWER) and "Business Desk" not in text, text
        else:
            assert answer["model"] == "business-assistant" and answer["system_fingerprint"] == f"housestyle:{desk}"
            # the desk's voice: its greeting and sign-off, never the consumer team's (the tiny base learns the voice;
            # which of the desk's answers it picks for a question it never saw is not what this test is about)
            assert text.startswith(BUSINESS_GREETING) and text.endswith(BUSINESS_SIGN_OFF), text
            assert "I'm sorry to hear" not in text and "Warm regards" not in text, text
    # each brand's calls are recorded among its own conversations (after the answer has gone out)
    deadline = time.monotonic() + 30
    while True:
        stats = {brand: admin.get("/admin/stats", params={"brand": brand}).json()["conversations_by_channel"]
                 for brand in ("default", "business")}
        if stats == {"default": {"api": 4}, "business": {"api": 4}} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert stats == {"default": {"api": 4}, "business": {"api": 4}}


def test_promoting_one_brand_under_load_fails_none_of_the_other_brands_requests(
    serving_settings: Settings, vllm_server, lora_adapters, business_adapter
) -> None:
    consumer, desk = two_brands(lora_adapters["gadgetcorp"], Path(business_adapter.path), vllm_server.base_model)
    other = register_adapter_folder(lora_adapters["other"], vllm_server.base_model)
    request = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, "temperature": 0,
               "ignore_eos": True}

    async def scenario() -> None:
        async with running_gateway(serving_settings) as gateway:
            await gateway.promote(consumer, actor="test")
            await gateway.promote(desk, actor="test")
            business_replies: list[tuple[str | None, str]] = []
            failures: list[str] = []
            stop = asyncio.Event()

            async def business_client(index: int) -> None:
                turn = 0
                while not stop.is_set():
                    try:
                        route, body = await gateway.chat(request, conversation_key=f"b{index}-{turn}", brand_id=2)
                        business_replies.append((route.version, body["choices"][0]["message"]["content"]))
                    except Exception as exc:  # noqa: BLE001 - every failure is collected and reported
                        failures.append(repr(exc))
                    turn += 1

            clients = [asyncio.create_task(business_client(index)) for index in range(8)]
            for version in (other, consumer, other):  # brand A swaps three times while brand B is busy
                await asyncio.sleep(0.5)
                await gateway.promote(version, actor="test", reason="brand A's refresh")
            assert (await gateway.rollback(actor="test", brand_id=1)).version == consumer
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*clients)
            assert gateway.status(1).live == consumer and gateway.status(2).live == desk
            assert gateway.status(2).in_flight == {}

        assert failures == []
        assert len(business_replies) >= 8
        assert {version for version, _ in business_replies} == {desk}  # brand B never saw brand A's versions
        assert len({text for _, text in business_replies}) == 1  # and always the same weights

    asyncio.run(scenario())
