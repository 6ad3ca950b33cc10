"""An admin changes what is served through the API (issue 27: paths no test ran before): a canary answers its share
of new conversations, each conversation stays on its side, and ending it puts every conversation back on the live
version; a swap that would need more LoRA slots than vLLM holds is refused, and nothing changes.

The model server is the stand-in of `tests/test_registry_follow.py` (it answers naming the model it was asked for);
`tests/test_serving_swap.py` runs the canary against real vLLM.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.brands import brand_fields, create_brand
from core.db import session_scope
from core.registry import register_adapter
from core.settings import get_settings
from serving.gateway import ServingGateway
from tests.fixtures.service import RunningService, start_widget_conversation
from tests.fixtures.upstream import BackgroundLoop
from tests.fixtures.vllm import register_adapter_folder
from tests.test_registry_follow import StandInVllm, adapter_folder

CONVERSATIONS = 200
SHARE = 0.3


@pytest.fixture
def stand_in() -> Iterator[StandInVllm]:
    background = BackgroundLoop()
    upstream = background.run(StandInVllm().start())
    yield upstream
    background.run(upstream.stop())
    background.close()


def versions_answering(service: RunningService, count: int) -> tuple[Counter, list]:
    """Start `count` widget conversations (auto mode), one message each; the version that answered each."""
    widget = service.client("widget")
    conversations, answered = [], []
    for n in range(count):
        conversation = start_widget_conversation(widget, mode="auto")
        reply = conversation.send(f"Where is order {n}?")
        assert reply.status_code == 200, reply.text
        conversations.append(conversation)
        answered.append(reply.json()["adapter_version"])
    return Counter(answered), list(zip(conversations, answered))


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_an_admin_starts_a_canary_that_answers_its_share_and_each_conversation_keeps_its_version(
    store_url: str, start_service, stand_in: StandInVllm, tmp_path: Path
) -> None:
    """A share of 0.3 over 200 new conversations: the canary answers 60 +- 3 sigma (sigma 6.5) of them. Catches a
    canary that serves no share, all of it, or 1 - share (`serving/routing.py`), and a route that records the share
    but never routes by it."""
    live, canary = (register_adapter_folder(adapter_folder(tmp_path, name), Path("stand-in-base"),
                                            database_url=store_url) for name in ("live", "canary"))
    settings = get_settings().model_copy(update={"health_interval_s": 0.5})
    service = start_service(gateway=ServingGateway(settings, urls=[stand_in.url], database_url=store_url),
                            redraft_interval_s=3600, widget_rate_per_client=10_000, rate_limit_per_second=10_000,
                            rate_limit_burst=10_000)  # every customer here comes from 127.0.0.1
    admin = service.client("admin")
    assert admin.post(f"/admin/adapters/{live}/promote", json={"reason": "passed the gate"}).status_code == 200

    started = admin.post(f"/admin/adapters/{canary}/canary", json={"share": SHARE, "reason": "try it on some"})
    assert started.status_code == 200, started.text
    serving = admin.get("/admin/adapters").json()["serving"]
    assert (serving["live"], serving["canary"], serving["canary_share"]) == (live, canary, SHARE)

    counts, answered = versions_answering(service, CONVERSATIONS)
    assert set(counts) == {live, canary}
    sigma = (CONVERSATIONS * SHARE * (1 - SHARE)) ** 0.5
    assert abs(counts[canary] - CONVERSATIONS * SHARE) <= 3 * sigma, counts
    for conversation, version in answered[:40]:  # a second message of the same conversation: the same side
        assert conversation.send("And when will it arrive?").json()["adapter_version"] == version

    ended = admin.post(f"/admin/adapters/{canary}/canary", json={"share": 0, "reason": "enough seen"})
    assert ended.status_code == 200, ended.text
    assert admin.get("/admin/adapters").json()["serving"]["canary"] is None
    for conversation, version in answered[:40]:
        assert conversation.send("Thanks!").json()["adapter_version"] == live


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_swap_past_the_lora_slots_vllm_holds_is_refused_and_nothing_changes(
    store_url: str, start_service, stand_in: StandInVllm, tmp_path: Path
) -> None:
    """vLLM started with 3 slots for one brand (live, canary, one swapping in); a second brand added while serving
    takes the third for its live version, exactly at the limit, and its canary, one past it, is refused with the
    fix named. Catches `names_in_use() + 1 > max_loras` (`serving/swaps.py`) made `>=` (the third is refused) or
    losing its `+ 1` (the fourth loads and vLLM would evict an adapter in use)."""
    settings = get_settings().model_copy(update={"health_interval_s": 0.5, "max_loras": 3})
    service = start_service(gateway=ServingGateway(settings, urls=[stand_in.url], database_url=store_url),
                            redraft_interval_s=3600)
    with session_scope(store_url) as session:
        business = int(create_brand(session, "business", brand_fields(company_name="GadgetCorp Business"),
                                    settings=settings).id)
    versions = {}
    for name, brand in (("live", 1), ("canary", 1), ("business-live", business), ("business-canary", business)):
        folder = adapter_folder(tmp_path, name)
        with session_scope(store_url) as session:
            versions[name] = f"v000{len(versions) + 1}-{name[:4]}{brand}aa"
            register_adapter(session, version=versions[name], path=str(folder), base_model="stand-in-base", rank=8,
                             brand_id=brand)
    admin = service.client("admin")
    assert admin.post(f"/admin/adapters/{versions['live']}/promote", json={}).status_code == 200
    assert admin.post(f"/admin/adapters/{versions['canary']}/canary", json={"share": 0.2}).status_code == 200
    at_limit = admin.post(f"/admin/adapters/{versions['business-live']}/promote", json={})
    assert at_limit.status_code == 200, at_limit.text
    loads = list(stand_in.loads)

    past = admin.post(f"/admin/adapters/{versions['business-canary']}/canary", json={"share": 0.2})
    assert past.status_code == 409, past.text
    assert "--max-loras" in past.json()["detail"] and "HOUSESTYLE_MAX_LORAS" in past.json()["detail"]
    assert stand_in.loads == loads  # nothing was sent to vLLM
    serving = admin.get("/admin/adapters", params={"brand": "business"}).json()["serving"]
    assert (serving["live"], serving["canary"]) == (versions["business-live"], None)
