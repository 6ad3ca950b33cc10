"""Two `housestyle serve` processes on one Postgres and one shared vLLM serve one truth (issue 30's evidence).

Everything goes through the processes' own HTTP APIs, as a load balancer's clients would: a promotion, a canary at
30% and a rollback made through instance A are served by instance B within the bound (NOTIFY wakes B's follower; the
periodic re-read is the safety net); a widget conversation gets the same version from either instance; the rollback
guard acts once, in one instance; killing the instance that holds the scheduler's lease moves the scheduler to the
other, which goes on answering. The two share the vLLM server (HOUSESTYLE_SHARED_REPLICAS): each version is loaded
there once, under the one name both serve, and a name no service uses any more is unloaded.
`tests/test_registry_follow.py` covers the following in-process against stand-ins, on both stores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from core.db import open_store, session_scope
from core.models import AdapterEvent, JobLock
from plugin.loop.scheduler import LEASE_NAME
from serving.vllm_names import version_of_vllm_name
from tests.fixtures.service import WidgetConversation, make_role_keys, start_widget_conversation
from tests.fixtures.stores import PostgresCluster, replay_reviews
from tests.fixtures.vllm import RunningVllm, make_lora_adapter, register_adapter_folder

HOUSESTYLE = Path(sys.executable).parent / "housestyle"
BOUND_S = 10.0  # NOTIFY makes it well under a second here; the re-read every 2 s is the net under it


@dataclass
class Instance:
    """One `housestyle serve` process: its URL, pid and clients."""

    name: str
    process: subprocess.Popen
    url: str
    keys: dict[str, str]

    def client(self, role: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[role]}"}, timeout=120)

    def serving(self) -> dict:
        return self.client("admin").get("/admin/adapters").json()["serving"]


def start_instance(name: str, home: Path, env: dict[str, str], keys: dict[str, str]) -> Instance:
    home.mkdir(parents=True)
    process = subprocess.Popen([str(HOUSESTYLE), "serve", "--port", "0"], env={**env, "HOUSESTYLE_HOME": str(home)},
                               stdout=subprocess.DEVNULL, stderr=open(home.parent / f"{name}.log", "w"))
    control = home / "run" / "serve.json"
    deadline = time.monotonic() + 300
    while not control.exists():
        assert process.poll() is None, (home.parent / f"{name}.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"{name} did not start in 300 s"
        time.sleep(0.2)
    instance = Instance(name, process, json.loads(control.read_text())["url"], keys)
    wait_for(lambda: httpx.get(f"{instance.url}/ready").status_code == 200, 300, f"{name} ready")
    return instance


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until `condition()` holds (polled every 20 ms); fails after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def two_instances(postgres_cluster: PostgresCluster, vllm_server: RunningVllm, tmp_path: Path
                  ) -> Iterator[tuple[Instance, Instance, str]]:
    url = postgres_cluster.create_database()
    open_store(url)
    keys = make_role_keys(url)
    env = {**os.environ, "HOUSESTYLE_DATABASE_URL": url, "HOUSESTYLE_VLLM_URLS": vllm_server.url,
           "HOUSESTYLE_VLLM_API_KEY": vllm_server.api_key, "HOUSESTYLE_BASE_MODEL": str(vllm_server.base_model),
           "HOUSESTYLE_MAX_LORA_RANK": "16", "HOUSESTYLE_HEALTH_INTERVAL_S": "0.5",
           "HOUSESTYLE_REDACT_AT_INGEST": "false", "HOUSESTYLE_REPLY_MAX_TOKENS": "4",
           "HOUSESTYLE_WIDGET_RATE_PER_CLIENT": "1000", "HOUSESTYLE_RATE_LIMIT_PER_SECOND": "1000",
           "HOUSESTYLE_RATE_LIMIT_BURST": "1000", "HOUSESTYLE_SHARED_REPLICAS": "true"}
    instances: list[Instance] = []
    try:
        for name in ("a", "b"):
            instances.append(start_instance(name, tmp_path / name / "home", env, keys))
        yield instances[0], instances[1], url
    finally:
        for instance in instances:
            if instance.process.poll() is None:
                instance.process.send_signal(signal.SIGTERM)
        for instance in instances:
            try:
                instance.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                instance.process.kill()


def names_on_vllm(vllm_server: RunningVllm, versions: set[str]) -> dict[str, list[str]]:
    """The names vLLM lists for each of `versions` (the shared server also holds other tests' names)."""
    models = httpx.get(f"{vllm_server.url}/v1/models", headers={"Authorization": f"Bearer {vllm_server.api_key}"},
                       timeout=30).json()["data"]
    names: dict[str, list[str]] = {}
    for model in models:
        if version_of_vllm_name(model["id"]) in versions:
            names.setdefault(version_of_vllm_name(model["id"]), []).append(model["id"])
    return names


def scheduler_pid(url: str) -> int | None:
    """The pid of the process holding the scheduler's lease (holders are `machine:pid:random`)."""
    with session_scope(url) as session:
        lock = session.execute(select(JobLock).where(JobLock.name == LEASE_NAME)).scalar_one_or_none()
        return int(lock.holder.split(":")[1]) if lock is not None else None


@pytest.mark.vllm
@pytest.mark.postgres
@pytest.mark.slow
def test_two_services_on_one_postgres_serve_what_either_changed_and_hand_on_the_scheduler(
    two_instances: tuple[Instance, Instance, str], vllm_server: RunningVllm, tmp_path: Path
) -> None:
    a, b, url = two_instances
    v1, v2, v3 = (register_adapter_folder(make_lora_adapter(vllm_server.base_model, tmp_path / f"v{n}", seed=20 + n),
                                          vllm_server.base_model, database_url=url) for n in (1, 2, 3))
    admin = a.client("admin")
    followed: dict[str, float] = {}

    def one_name_each() -> bool:
        """vLLM holds each served version once, under the name both services serve, and no other of ours."""
        names = a.serving()["vllm_names"]
        return names == b.serving()["vllm_names"] and names_on_vllm(vllm_server, {v1, v2, v3}) == {
            version: [name] for version, name in names.items()}

    def b_serves(live: str | None, canary: str | None = None, share: float = 0.0) -> Callable[[], bool]:
        def check() -> bool:
            serving = b.serving()
            return (serving["live"], serving["canary"], serving["canary_share"] if canary else 0.0) == (
                live, canary, share if canary else 0.0)
        return check

    assert admin.post(f"/admin/adapters/{v1}/promote", json={"reason": "passed the gate"}).status_code == 200
    followed["promote"] = wait_for(b_serves(v1), BOUND_S, f"B serves {v1}")
    wait_for(one_name_each, BOUND_S, f"{v1} loaded once, under one name")
    answer = b.client("agent").post("/v1/chat/completions", json={
        "model": "gadgetcorp-assistant", "max_tokens": 2, "messages": [{"role": "user", "content": "Hello"}]})
    assert answer.status_code == 200 and answer.json()["system_fingerprint"] == f"housestyle:{v1}", answer.text

    assert admin.post(f"/admin/adapters/{v2}/canary", json={"share": 0.3}).status_code == 200
    followed["canary"] = wait_for(b_serves(v1, v2, 0.3), BOUND_S, f"B serves the canary {v2} at 0.3")
    wait_for(one_name_each, BOUND_S, f"{v1} and {v2} loaded once each")
    on_a, on_b = a.client("widget"), b.client("widget")
    sides = []
    for n in range(30):  # a conversation started on A and continued on B gets the same version from both
        conversation = start_widget_conversation(on_a, mode="auto")
        first = conversation.send(f"Where is order {n}?")
        second = WidgetConversation(on_b, conversation.id, conversation.token).send("And when does it arrive?")
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        assert first.json()["adapter_version"] == second.json()["adapter_version"]
        sides.append(first.json()["adapter_version"])
    assert set(sides) == {v1, v2}, sides

    assert admin.post(f"/admin/adapters/{v3}/promote", json={}).status_code == 200
    followed["promote-during-canary"] = wait_for(b_serves(v3, v2, 0.3), BOUND_S, f"B serves {v3} beside the canary")
    assert admin.post(f"/admin/adapters/{v2}/canary", json={"share": 0}).status_code == 200
    rolled = admin.post("/admin/adapters/rollback", json={"reason": "customers complained"})
    assert rolled.status_code == 200 and rolled.json()["version"] == v1, rolled.text
    followed["rollback"] = wait_for(b_serves(v1), BOUND_S, f"B rolled back to {v1}")
    print(f"served by B after the change on A (s): {followed}")
    wait_for(one_name_each, 60, f"only {v1} left loaded, once")  # v2 and v3 unloaded by the last to let go
    assert set(a.serving()["vllm_names"]) == {v1}

    # v2 goes live and agents correct it far more than v1: the rollback guard, which runs only in the instance
    # holding the scheduler's lease, rolls it back once, and both instances serve v1 again
    assert admin.post(f"/admin/adapters/{v2}/promote", json={}).status_code == 200
    replay_reviews(url, v1, approved=45, edited=5)
    replay_reviews(url, v2, approved=5, edited=35)
    wait_for(b_serves(v1), 120, "the guard rolls v2 back and B serves v1")
    assert a.serving()["live"] == v1
    with session_scope(url) as session:
        guard = sorted((e.action, e.version) for e in session.execute(
            select(AdapterEvent).where(AdapterEvent.actor == "auto-rollback")).scalars())
    assert guard == sorted([("rolled-back", v2), ("rollback", v1)])  # once: v2 marked, v1 live again
    logs = [(tmp_path / name / f"{name}.log").read_text() for name in ("a", "b")]
    assert sorted(f"rolling back {v2} to {v1}" in log for log in logs) == [False, True]  # one instance acted

    # the scheduler's lease is held by one of them; kill that one and the other takes it over and answers on
    holder = wait_for(lambda: scheduler_pid(url) in (a.process.pid, b.process.pid), 120, "a scheduler lease holder")
    assert holder >= 0
    dying, surviving = (a, b) if scheduler_pid(url) == a.process.pid else (b, a)
    dying.process.kill()
    dying.process.wait(timeout=30)
    taken = wait_for(lambda: scheduler_pid(url) == surviving.process.pid, 120, f"{surviving.name} takes the scheduler")
    print(f"scheduler moved from {dying.name} to {surviving.name} in {taken:.1f} s")
    answer = surviving.client("agent").post("/v1/chat/completions", json={
        "model": "gadgetcorp-assistant", "max_tokens": 2, "messages": [{"role": "user", "content": "Still there?"}]})
    assert answer.status_code == 200 and answer.json()["system_fingerprint"] == f"housestyle:{v1}", answer.text
