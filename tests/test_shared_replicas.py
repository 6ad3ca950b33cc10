"""Services that share their vLLM servers swap once for the fleet (HOUSESTYLE_SHARED_REPLICAS, issue 30 item 1).

Two `ServingGateway`s on one store in front of ONE stand-in vLLM (`tests/test_registry_follow.py`'s, which refuses
a second load of a name as vLLM does): each version is loaded once, under the name the registry records, and the
other service serves that name; a name is unloaded once, by the last service to let go of it, never while another
service still streams on it; a name is never loaded twice. The store side (who counts as using a name, the name's
claim) is tested as tables. `tests/test_two_services.py` runs the same with real processes and a real vLLM.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from core import registry, served_names
from core.db import session_scope
from core.errors import InputError
from core.models import AdapterStatus, ServedNames, utcnow
from core.settings import Settings
from serving.errors import UpstreamError
from serving.gateway import ServingGateway
from serving.routing import LoadedVersion
from serving.shared_names import check_shared_settings
from tests.fixtures.vllm import register_adapter_folder
from tests.test_registry_follow import StandInVllm, adapter_folder, until

ME = f"{served_names.this_machine()}:{os.getpid()}:self"
# (holder, its row's expiry in seconds from now) -> whether its names count as used
HOLDERS = [
    (f"{served_names.this_machine()}:{os.getpid()}:other", 30, True),  # a living service on this machine
    (f"{served_names.this_machine()}:999999999:gone", 30, False),  # its process is gone: at once
    ("another-host:4242:x", 30, True),  # elsewhere: alive until its row runs out
    ("another-host:4343:y", -1, False),  # ran out without renewing
]


@pytest.mark.parametrize(("holder", "expires_in_s", "counts"), HOLDERS,
                         ids=["alive-here", "gone-here", "unexpired-elsewhere", "expired-elsewhere"])
def test_a_name_counts_as_used_only_by_a_living_other_service(store_url: str, holder: str, expires_in_s: int,
                                                              counts: bool) -> None:
    """Catches a stale or dead service's names blocking the unload forever, or a living one's being ignored (its
    stream would be cut), or a service counting its own row (nothing would ever be unloaded)."""
    served_names.publish(ME, ["hs-x-mine"], ttl=timedelta(seconds=30), url=store_url)
    with session_scope(store_url) as session:
        session.add(ServedNames(holder=holder, names="hs-x-v1-a hs-x-v2-b",
                                expires_at=utcnow() + timedelta(seconds=expires_in_s)))
    assert served_names.used_by_others(ME, url=store_url) == ({"hs-x-v1-a", "hs-x-v2-b"} if counts else set())
    served_names.withdraw(holder, url=store_url)
    assert served_names.used_by_others(ME, url=store_url) == set()


def test_publishing_again_replaces_the_names(store_url: str) -> None:
    served_names.publish("h:1:a", ["n1", "n2"], ttl=timedelta(seconds=30), url=store_url)
    served_names.publish("h:1:a", ["n2"], ttl=timedelta(seconds=30), url=store_url)
    assert served_names.used_by_others(ME, url=store_url, machine="elsewhere") == {"n2"}


def test_a_name_is_claimed_once_and_only_for_a_served_version(store_url: str, tmp_path: Path) -> None:
    """A version made live with no name recorded (the CLI with no service running) gets the first claimant's name;
    later claimants get that one. A version that is not live or a canary has none (a stale read)."""
    live, candidate = (register_adapter_folder(adapter_folder(tmp_path, f"c{n}"), Path("stand-in-base"),
                                               database_url=store_url) for n in range(2))
    registry.mark_live(live, action="promote", actor="cli", reason=None, database_url=store_url)
    assert registry.claim_vllm_name(live, "first", database_url=store_url) == "first"
    assert registry.claim_vllm_name(live, "second", database_url=store_url) == "first"
    assert registry.claim_vllm_name(candidate, "third", database_url=store_url) is None
    with session_scope(store_url) as session:
        assert registry.get_adapter(session, candidate).status == AdapterStatus.CANDIDATE
        assert registry.get_adapter(session, candidate).vllm_name is None
    # going live again records the name the change gives (none here): the old one is never served again
    registry.mark_live(candidate, action="promote", actor="cli", reason=None, database_url=store_url)
    registry.mark_live(live, action="rollback", actor="cli", reason=None, database_url=store_url)
    assert registry.shared_vllm_name(live, database_url=store_url) is None


def test_shared_replicas_need_the_registry_followed() -> None:
    check_shared_settings(True, 2.0)
    check_shared_settings(False, 0.0)
    with pytest.raises(InputError, match="HOUSESTYLE_REGISTRY_FOLLOW_SECONDS above 0"):
        check_shared_settings(True, 0.0)


def names_of(gateway: ServingGateway) -> dict[str, str]:
    return {loaded.version: loaded.vllm_name for loaded in gateway.routes.names_in_use()}


@pytest.mark.slow
def test_services_sharing_a_vllm_load_each_version_once_and_the_last_to_let_go_unloads_it(
    store_url: str, tmp_path: Path
) -> None:
    """Catches each service loading its own name (two loads per version, twice the LoRA slots), a service unloading
    a name another still streams on, a name unloaded twice or never, and a name loaded again after its unload."""
    v0, v1, v2 = (register_adapter_folder(adapter_folder(tmp_path, f"s{n}"), Path("stand-in-base"),
                                          database_url=store_url) for n in range(3))
    settings = Settings(home=tmp_path / "home", database_url=store_url, registry_follow_seconds=0.3,
                        health_interval_s=0.2, shared_replicas=True)

    async def scenario() -> None:
        vllm = await StandInVllm().start()
        a, b = ServingGateway(settings, urls=[vllm.url]), ServingGateway(settings, urls=[vllm.url])
        await a.start()
        await b.start()
        try:
            await a.promote(v0, actor="ana")
            await until(lambda: names_of(b) == names_of(a), 5.0)
            name0 = names_of(a)[v0]
            assert vllm.loads == [name0] and registry.shared_vllm_name(v0, database_url=store_url) == name0

            await a.canary(v1, 0.3, actor="ana")
            await until(lambda: names_of(b) == names_of(a), 5.0)
            assert vllm.loads == [name0, names_of(a)[v1]]

            # B streams on v0 while A promotes the canary: A lets go of v0 first but must not unload it
            streaming = b.routes.acquire(1, "conversation-on-v0")
            assert streaming.vllm_model == name0 or streaming.canary
            if streaming.canary:  # this key fell on the canary side: take one that did not
                await b.routes.release(streaming)
                streaming = next(route for route in (b.routes.acquire(1, f"k{n}") for n in range(50))
                                 if route.vllm_model == name0)
            await a.promote(v1, actor="ana")
            await until(lambda: b.routes.table().live.version == v1, 5.0)
            await asyncio.sleep(1.0)  # several re-reads and renewals: nothing may unload v0 while B streams on it
            assert name0 in vllm.loaded and vllm.unloads == []
            await b.routes.release(streaming)
            await until(lambda: name0 not in vllm.loaded, 5.0)

            await a.rollback(actor="ana", reason="complaints")  # v0 again: under a new name, loaded once
            await until(lambda: names_of(b) == names_of(a) == {v0: names_of(a)[v0]}, 5.0)
            await until(lambda: set(vllm.loaded) == {names_of(a)[v0]}, 5.0)
            assert names_of(a)[v0] != name0

            # a service that joins late serves the registry's names without loading anything
            c = ServingGateway(settings, urls=[vllm.url])
            await c.start()
            try:
                assert names_of(c) == names_of(a)
            finally:
                await c.stop()
            loads_before_end = list(vllm.loads)
            await a.canary(v2, 0.5, actor="ana")
            await until(lambda: names_of(b) == names_of(a), 5.0)
            await a.canary(v2, 0.0, actor="ana")
            await until(lambda: names_of(b) == names_of(a) and set(vllm.loaded) == set(names_of(a).values()), 5.0)
            assert len(vllm.loads) == len(loads_before_end) + 1
        finally:
            await b.stop()
            await a.stop()
            await vllm.stop()
        # every name loaded once, unloaded at most once; only the live one is left
        assert max(Counter(vllm.loads).values()) == 1 and max(Counter(vllm.unloads).values()) == 1
        assert set(vllm.loads) - set(vllm.unloads) == set(vllm.loaded)

    asyncio.run(scenario())


def test_a_version_made_live_without_a_name_is_loaded_once_by_services_starting_together(
    store_url: str, tmp_path: Path
) -> None:
    """The CLI made a version live with no service running (no name recorded): two services starting at once
    claim one name between them and the shared vLLM loads it once."""
    version = register_adapter_folder(adapter_folder(tmp_path, "cli"), Path("stand-in-base"), database_url=store_url)
    registry.mark_live(version, action="promote", actor="cli", reason=None, database_url=store_url)
    settings = Settings(home=tmp_path / "home", database_url=store_url, registry_follow_seconds=0.3,
                        health_interval_s=0.2, shared_replicas=True)

    async def scenario() -> None:
        vllm = await StandInVllm().start()
        a, b = ServingGateway(settings, urls=[vllm.url]), ServingGateway(settings, urls=[vllm.url])
        try:
            await asyncio.gather(a.start(), b.start())
            assert names_of(a) == names_of(b) == {version: registry.shared_vllm_name(version, database_url=store_url)}
            assert vllm.loads == [names_of(a)[version]]
        finally:
            await b.stop()
            await a.stop()
            await vllm.stop()

    asyncio.run(scenario())


def test_a_lagging_service_never_loads_a_name_the_registry_moved_on_from(store_url: str, tmp_path: Path) -> None:
    """A service whose read of the registry is stale may hold a name another service already unloaded: loading it
    again would show vLLM a name twice (vllm#42125). It loads a recorded name only while the registry names it."""
    version = register_adapter_folder(adapter_folder(tmp_path, "lag"), Path("stand-in-base"), database_url=store_url)
    registry.mark_live(version, action="promote", actor="ana", reason=None, vllm_name="hs-000000-old-000000",
                       database_url=store_url)
    settings = Settings(home=tmp_path / "home", database_url=store_url, registry_follow_seconds=0.3,
                        health_interval_s=0.2, shared_replicas=True)

    async def scenario() -> None:
        vllm = await StandInVllm().start()
        gateway = ServingGateway(settings, urls=[vllm.url])
        await gateway.start()
        try:
            replica, path = gateway.pool.replicas[0], str(tmp_path / "lag")
            assert vllm.loads == ["hs-000000-old-000000"]  # the recorded name, loaded at start
            loads = list(vllm.loads)
            stale = LoadedVersion(version=version, vllm_name="hs-000000-old-000000", path=path)
            registry.mark_live(version, action="rollback", actor="ana", reason=None, vllm_name="hs-000000-new-000000",
                               database_url=store_url)
            await replica.unload_adapter(stale.vllm_name)  # the last service to let go of it unloaded it
            with pytest.raises(UpstreamError, match="the registry no longer serves .* under hs-000000-old-000000"):
                await gateway.swaps.place(replica, stale, recorded=True)
            assert vllm.loads == loads  # not loaded again
            current = LoadedVersion(version=version, vllm_name="hs-000000-new-000000", path=path)
            assert await gateway.swaps.place(replica, current, recorded=True) is True
            assert vllm.loads == [*loads, "hs-000000-new-000000"]
        finally:
            await gateway.stop()
            await vllm.stop()

    asyncio.run(scenario())
