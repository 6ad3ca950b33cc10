"""Adapters reach every model server: the adapter store (a shared directory or S3) and vLLM's resolver on each host.

The S3 store here is moto in server mode (`moto.server.ThreadedMotoServer`): an S3-compatible server run locally on
loopback, since no MinIO binary can be installed here; boto3 talks to it over HTTP as to any S3-compatible endpoint.
The shared directory is a folder every "host" of the test reads at the same path. The vLLM tests start one real vLLM
with the S3 store in its environment, so its own LoRA resolver (`serving/lora_resolver.py`, through the
`vllm.general_plugins` entry point) fetches and checks each version; the service and vLLM keep separate caches, as
two hosts would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from core.adapter_manifest import MANIFEST_NAME, combined_hash, read_manifest
from core.adapter_store import (
    AdapterStore,
    AdapterStoreError,
    DirectoryStore,
    S3Store,
    checked_manifest,
    open_adapter_store,
)
from core.db import open_store, session_scope
from core.models import AdapterStatus
from core.registry import get_adapter, register_adapter
from core.settings import Settings, get_settings
from plugin.cli import app
from serving.errors import SwapFailedError
from serving.gateway import ServingGateway
from serving.vllm_names import version_of_vllm_name
from serving.vllm_server import VllmServer
from tests.fixtures.models import TrainedFixtureAdapter
from tests.fixtures.stores import current_store
from tests.fixtures.vllm import VLLM_MAX_LORA_RANK, running_gateway

BUCKET = "housestyle-adapters"


# --- pure parts ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("vllm_name", "version"), [
    ("hs-0a1b2c-v0003-1a2b3c4d-abcdef", "v0003-1a2b3c4d"),
    ("hs-0a1b2c-my.version_2-ffffff", "my.version_2"),
    ("hs-0a1b2c-v0003-1a2b3c4d", None),  # no per-load tag
    ("hs-0a1b2c-..-abcdef", None),  # not a version id: it would walk up a path
    ("hs-0a1b2c-a/b-abcdef", None),
    ("hs-XYZ123-v0003-1a2b3c4d-abcdef", None),  # the store tag is hex
    ("housestyle-base", None),
    ("housestyle-eval-1a2b3c4d", None),
    ("", None),
])
def test_a_vllm_name_maps_to_its_version(vllm_name: str, version: str | None) -> None:
    assert version_of_vllm_name(vllm_name) == version


def test_the_names_the_gateway_makes_map_back_to_their_version(housestyle_home: Path) -> None:
    gateway = ServingGateway(Settings(home=housestyle_home), urls=["http://127.0.0.1:9"])
    for version in ("v0003-1a2b3c4d", "v0012-00ff00ff", "hand-made-1"):
        assert version_of_vllm_name(gateway._new_vllm_name(version)) == version


FILES = {"adapter_config.json": "a" * 64, "adapter_model.safetensors": "b" * 64}
GOOD = f"v0007-{combined_hash(FILES)[:8]}"


@pytest.mark.parametrize(("version", "manifest", "refusal"), [
    (GOOD, {"files": FILES, "version": GOOD, "metrics": {}}, None),
    (f"v0007-{combined_hash(FILES)}", {"files": FILES}, None),  # a longer suffix is checked whole
    ("v0007-00000000", {"files": FILES}, "is not that version's: its files' combined sha256 does not start with"),
    ("my-adapter", {"files": FILES}, "does not end in its adapter hash"),
    (GOOD, {"version": GOOD}, "lists no 'files' checksums"),
    (GOOD, {"files": {}}, "names no files"),
    (f"v0007-{combined_hash({'../x': 'a' * 64})[:8]}", {"files": {"../x": "a" * 64}}, "outside its folder (../x)"),
    (f"v0007-{combined_hash({MANIFEST_NAME: 'a' * 64})[:8]}", {"files": {MANIFEST_NAME: "a" * 64}}, "outside"),
])
def test_a_manifest_is_that_versions_or_refused(version: str, manifest: dict, refusal: str | None) -> None:
    raw = json.dumps(manifest).encode()
    if refusal is None:
        assert checked_manifest(version, raw) == manifest["files"]
    else:
        with pytest.raises(AdapterStoreError, match=refusal.replace("(", r"\(").replace(")", r"\)")):
            checked_manifest(version, raw)


@pytest.mark.parametrize(("location", "kind", "where", "refusal"), [
    ("", None, None, None),
    ("/mnt/adapters", DirectoryStore, "/mnt/adapters", None),
    ("file:///mnt/adapters/", DirectoryStore, "/mnt/adapters", None),
    ("s3://bucket/house/style", S3Store, "s3://bucket/house/style", None),
    ("s3://bucket", S3Store, "s3://bucket", None),
    ("adapters", None, None, "is not a store HouseStyle knows"),
    ("file://adapters", None, None, "is not a store HouseStyle knows"),
    ("gs://bucket/x", None, None, "is not a store HouseStyle knows"),
    ("s3:///prefix", None, None, "names no bucket"),
])
def test_the_store_setting_names_a_directory_or_a_bucket(location, kind, where, refusal, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, adapter_store=location)
    if refusal is not None:
        with pytest.raises(AdapterStoreError, match=refusal):
            open_adapter_store(settings)
        return
    store = open_adapter_store(settings)
    assert type(store) is kind if kind else store is None
    if store is not None:
        assert store.location == where and store.cache_dir == (tmp_path / "adapter-cache").resolve()


# --- the stores: publish, fetch, check -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on loopback (see the module docstring), one bucket, any credentials."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    with pytest.MonkeyPatch.context() as patch:
        # boto3's standard chain reads these in the tests and in the vLLM process alike
        patch.setenv("AWS_ACCESS_KEY_ID", "housestyle-test")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "housestyle-test")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        import boto3

        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
        try:
            yield url
        finally:
            server.stop()


def store_settings(kind: str, root: Path, s3_url: str, **values) -> Settings:
    """Settings whose store is a shared directory under `root`, or a fresh prefix of the S3 bucket."""
    if kind == "directory":
        (root / "shared").mkdir(exist_ok=True)
        return Settings(home=root / "home", adapter_store=f"file://{root / 'shared'}", **values)
    return Settings(home=root / "home", adapter_store=f"s3://{BUCKET}/{secrets.token_hex(4)}",
                    adapter_store_endpoint_url=s3_url, **values)


def as_version(adapter: TrainedFixtureAdapter, number: int) -> str:
    """A version id for the trained folder under another sequence number (its hash suffix stays the folder's)."""
    return f"v{number:04d}-{combined_hash(read_manifest(adapter.path)['files'])[:8]}"


def host_store(settings: Settings, host: str) -> AdapterStore:
    """The store as one host sees it: the same location, that host's own cache."""
    store = open_adapter_store(settings.model_copy(update={"adapter_cache_dir": settings.home / f"{host}-cache"}))
    assert store is not None
    return store


def tamper(store: AdapterStore, version: str, name: str) -> None:
    """Change one byte of a file of `version` in the store itself."""
    if isinstance(store, DirectoryStore):
        path = store.root / version / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        return
    assert isinstance(store, S3Store)
    key = store.key(version, name)
    data = bytearray(store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    store.client.put_object(Bucket=store.bucket, Key=key, Body=bytes(data))


def upload_without_manifest(store: AdapterStore, version: str, folder: Path) -> None:
    """What a publish cut short leaves: every file of the version but its manifest."""
    names = sorted(read_manifest(folder)["files"])
    if isinstance(store, DirectoryStore):
        (store.root / version).mkdir()
        for name in names:
            shutil.copyfile(folder / name, store.root / version / name)
        return
    assert isinstance(store, S3Store)
    for name in names:
        store.client.upload_file(str(folder / name), store.bucket, store.key(version, name))


@pytest.mark.parametrize("kind", ["directory", "s3"])
def test_a_published_version_is_fetched_checked_and_publish_is_idempotent(
    kind: str, gadgetcorp_adapter: TrainedFixtureAdapter, s3_endpoint: str, tmp_path: Path
) -> None:
    settings = store_settings(kind, tmp_path, s3_endpoint)
    trainer, vllm_host = host_store(settings, "trainer"), host_store(settings, "vllm")
    version = gadgetcorp_adapter.version
    assert trainer.publish(version, gadgetcorp_adapter.path) is True
    assert trainer.publish(version, gadgetcorp_adapter.path) is False  # already there: nothing copied again
    fetched = vllm_host.fetch_verified(version)
    assert fetched == vllm_host.cache_dir / version
    for name in [*read_manifest(gadgetcorp_adapter.path)["files"], MANIFEST_NAME]:
        assert (fetched / name).read_bytes() == (gadgetcorp_adapter.path / name).read_bytes()
    assert vllm_host.fetch_verified(version) == fetched  # the cached copy, checked again
    if kind == "directory":  # the copy appeared by rename: no staging folder is left beside it
        assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == [version]


@pytest.mark.parametrize("kind", ["directory", "s3"])
def test_a_tampered_or_incomplete_version_is_refused_and_nothing_is_cached(
    kind: str, gadgetcorp_adapter: TrainedFixtureAdapter, s3_endpoint: str, tmp_path: Path
) -> None:
    settings = store_settings(kind, tmp_path, s3_endpoint)
    trainer, vllm_host = host_store(settings, "trainer"), host_store(settings, "vllm")
    tampered, incomplete = as_version(gadgetcorp_adapter, 2), as_version(gadgetcorp_adapter, 3)
    trainer.publish(tampered, gadgetcorp_adapter.path)
    tamper(trainer, tampered, "adapter_model.safetensors")
    with pytest.raises(AdapterStoreError, match=f"{tampered}/adapter_model.safetensors does not match the sha256"):
        vllm_host.fetch_verified(tampered)
    upload_without_manifest(trainer, incomplete, gadgetcorp_adapter.path)
    with pytest.raises(AdapterStoreError, match=f"{incomplete}/ has no {MANIFEST_NAME}: the version is not published"):
        vllm_host.fetch_verified(incomplete)
    assert list(vllm_host.cache_dir.iterdir()) == []  # neither left a copy vLLM could load
    # publishing the incomplete one completes it (the manifest last)
    assert trainer.publish(incomplete, gadgetcorp_adapter.path) is True
    assert vllm_host.fetch_verified(incomplete).is_dir()


def test_a_changed_folder_or_a_clashing_copy_is_not_published(
    gadgetcorp_adapter: TrainedFixtureAdapter, s3_endpoint: str, tmp_path: Path
) -> None:
    store = host_store(store_settings("directory", tmp_path, s3_endpoint), "trainer")
    folder = Path(shutil.copytree(gadgetcorp_adapter.path, tmp_path / "copy"))
    version = as_version(gadgetcorp_adapter, 4)
    (folder / "adapter_config.json").write_text((folder / "adapter_config.json").read_text() + " ")
    with pytest.raises(AdapterStoreError, match="adapter_config.json of v0004-.* is missing or changed since training"):
        store.publish(version, folder)
    assert not (tmp_path / "shared" / version).exists()
    # another folder's manifest under this version's name in the store: never overwritten
    (tmp_path / "shared" / version).mkdir()
    manifest = read_manifest(gadgetcorp_adapter.path)
    manifest["files"] = {**manifest["files"], "README.md": "0" * 64}
    (tmp_path / "shared" / version / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(AdapterStoreError, match="is not that version's"):
        store.publish(version, gadgetcorp_adapter.path)


@pytest.mark.slow
def test_training_with_a_store_publishes_the_version_it_registers(
    tiny_base: Path, gadgetcorp_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fixtures.models import train_adapter

    (tmp_path / "shared").mkdir()
    monkeypatch.setenv("HOUSESTYLE_ADAPTER_STORE", str(tmp_path / "shared"))
    trained = train_adapter(tiny_base, gadgetcorp_export, tmp_path / "adapter", epochs=1)
    published = tmp_path / "shared" / trained.version
    assert sorted(p.name for p in published.iterdir()) == sorted(p.name for p in trained.path.iterdir())
    assert (published / MANIFEST_NAME).read_bytes() == (trained.path / MANIFEST_NAME).read_bytes()


# --- the CLI ---------------------------------------------------------------------------------------------------------


def register_version(adapter: TrainedFixtureAdapter, version: str) -> str:
    """Register the trained folder as `version` in the test's own store."""
    url = current_store()
    open_store(url)
    with session_scope(url) as session:
        register_adapter(session, version=version, path=str(adapter.path), base_model=str(adapter.base), rank=16)
    return version


def test_adapters_publish_copies_registered_versions_once(
    housestyle_home: Path, gadgetcorp_adapter: TrainedFixtureAdapter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = register_version(gadgetcorp_adapter, as_version(gadgetcorp_adapter, 1)), \
        register_version(gadgetcorp_adapter, as_version(gadgetcorp_adapter, 2))
    (tmp_path / "shared").mkdir()
    monkeypatch.setenv("HOUSESTYLE_ADAPTER_STORE", f"file://{tmp_path / 'shared'}")
    get_settings.cache_clear()
    run = CliRunner().invoke(app, ["adapters", "publish", second])
    assert run.exit_code == 0 and run.output == f"{second}: published to {tmp_path / 'shared'}/{second}/\n"
    run = CliRunner().invoke(app, ["adapters", "publish", "--all"])
    assert run.exit_code == 0, run.output
    assert run.output.splitlines() == [f"{first}: published to {tmp_path / 'shared'}/{first}/",
                                       f"{second}: already in {tmp_path / 'shared'}/{second}/"]


@pytest.mark.parametrize(("args", "store", "message"), [
    (["v0001-1a2b3c4d"], "", "HOUSESTYLE_ADAPTER_STORE is not set: set it to a shared directory or s3://"),
    ([], "/tmp", "name one VERSION or give --all"),
    (["v0001-1a2b3c4d", "--all"], "/tmp", "name one VERSION or give --all"),
    (["v0009-deadbeef"], "/tmp", "adapter version v0009-deadbeef is not registered"),
    (["../etc"], "/tmp", "is not an adapter version id"),
    (["--all"], "relative/adapters", "HOUSESTYLE_ADAPTER_STORE=relative/adapters is not a store HouseStyle knows"),
])
def test_adapters_publish_errors_are_one_line(args, store, message, housestyle_home: Path) -> None:
    env = {**os.environ, "HOUSESTYLE_HOME": str(housestyle_home), "HOUSESTYLE_ADAPTER_STORE": store}
    cli = Path(sys.executable).parent / "housestyle"
    result = subprocess.run([str(cli), "adapters", "publish", *args], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


# --- a real vLLM whose resolver reads the S3 store -------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_vllm(tiny_base: Path, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One real vLLM (CPU, runtime LoRA) started with the S3 store in its environment and its own cache."""
    root = tmp_path_factory.mktemp("store-vllm")
    settings = Settings(home=root / "home", base_model=str(Path(tiny_base).resolve()), max_lora_rank=VLLM_MAX_LORA_RANK,
                        max_loras=4, vllm_extra_args="--max-num-seqs 8", adapter_store=f"s3://{BUCKET}/served",
                        adapter_store_endpoint_url=s3_endpoint, adapter_cache_dir=root / "vllm-cache")
    server = VllmServer(settings, api_key=secrets.token_hex(16))
    asyncio.run(server.start())
    yield server
    server.kill()


def service_settings(server: VllmServer, home: Path) -> Settings:
    """The service on "another host": same store, its own HOME and cache, attached to the store's vLLM."""
    return server.settings.model_copy(update={
        "home": home, "vllm_urls": server.url, "vllm_api_key": server.api_key, "health_interval_s": 0.2,
        "adapter_cache_dir": home / "service-cache",
    })


def ask_vllm(server: VllmServer, model: str) -> httpx.Response:
    """A completion straight from vLLM naming `model`: an unknown name goes through its resolvers."""
    return httpx.post(f"{server.url}/v1/completions", headers={"Authorization": f"Bearer {server.api_key}"},
                      json={"model": model, "prompt": "Hello", "max_tokens": 2, "temperature": 0}, timeout=120)


def log_lines(server: VllmServer, text: str) -> list[str]:
    return [line for line in server.log_path.read_text(errors="replace").splitlines() if text in line]


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_serves_a_version_from_the_store_and_refuses_a_tampered_one(
    store_vllm: VllmServer, gadgetcorp_adapter: TrainedFixtureAdapter, housestyle_home: Path
) -> None:
    settings = service_settings(store_vllm, housestyle_home)
    trainer = host_store(settings, "trainer")
    good, tampered = as_version(gadgetcorp_adapter, 1), as_version(gadgetcorp_adapter, 2)
    for version in (good, tampered):
        register_version(gadgetcorp_adapter, version)
        trainer.publish(version, gadgetcorp_adapter.path)
    service = open_adapter_store(settings)
    service.fetch_verified(tampered)  # the service checked it before ...
    tamper(trainer, tampered, "adapter_model.safetensors")  # ... one byte changes in the store afterwards

    async def scenario() -> None:
        async with running_gateway(settings) as gateway:
            await gateway.promote(good, actor="test")
            route, body = await gateway.chat({"messages": [{"role": "user", "content": "Where is my order?"}],
                                              "max_tokens": 4, "temperature": 0})
            assert route.version == good and body["system_fingerprint"] == f"housestyle:{good}"
            name = gateway.status().vllm_names[good]
            models = {m.id: m for m in await gateway.pool.replicas[0].list_models()}
            # vLLM loaded the checked copy in its own cache, not the trainer's folder
            assert models[name].root == str(Path(store_vllm.settings.adapter_cache_dir).resolve() / good)
            with pytest.raises(SwapFailedError, match=f"loading {tampered} failed, so it was unloaded again and "
                                                      "nothing changed: vLLM at .* did not load"):
                await gateway.promote(tampered, actor="test")
            status = gateway.status()
            assert status.live == good and status.vllm_names == {good: name}
            assert status.replicas[0].loaded_adapters == [name]
            route, _ = await gateway.chat({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
            assert route.version == good

    asyncio.run(scenario())
    with session_scope(current_store()) as session:
        assert get_adapter(session, good).status == AdapterStatus.LIVE
        assert get_adapter(session, tampered).status == AdapterStatus.CANDIDATE
    refusals = log_lines(store_vllm, f"{tampered}/adapter_model.safetensors does not match the sha256")
    assert len(refusals) == 1 and "not serving" in refusals[0]
    assert not (Path(store_vllm.settings.adapter_cache_dir) / tampered).exists()


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_never_serves_a_version_without_its_manifest_or_a_tampered_one(
    store_vllm: VllmServer, gadgetcorp_adapter: TrainedFixtureAdapter, tmp_path: Path
) -> None:
    trainer = host_store(service_settings(store_vllm, tmp_path), "trainer")
    incomplete, tampered = as_version(gadgetcorp_adapter, 5), as_version(gadgetcorp_adapter, 6)
    upload_without_manifest(trainer, incomplete, gadgetcorp_adapter.path)
    trainer.publish(tampered, gadgetcorp_adapter.path)
    tamper(trainer, tampered, "adapter_config.json")
    for version in (incomplete, tampered):
        answer = ask_vllm(store_vllm, f"hs-0a1b2c-{version}-{secrets.token_hex(3)}")
        assert answer.status_code == 404, answer.text
    assert len(log_lines(store_vllm, f"{incomplete}/ has no {MANIFEST_NAME}")) == 1
    assert len(log_lines(store_vllm, f"{tampered}/adapter_config.json does not match the sha256")) == 1
    # once the publish completes, the same version is served by name
    trainer.publish(incomplete, gadgetcorp_adapter.path)
    answer = ask_vllm(store_vllm, f"hs-0a1b2c-{incomplete}-{secrets.token_hex(3)}")
    assert answer.status_code == 200 and answer.json()["choices"], answer.text
