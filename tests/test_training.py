"""LoRA training: assistant-only loss, packing without cross-talk, a registered adapter, one-line errors, DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlmodel import select

from core.adapter_manifest import MANIFEST_NAME
from core.checksums import sha256_file
from core.db import session_scope
from core.errors import ConflictError, InputError
from core.models import AdapterStatus, RunStatus, TrainingRun
from core.registry import get_adapter
from core.settings import get_settings
from tests.fixtures.models import TrainedFixtureAdapter, housestyle_env
from tests.fixtures.stores import current_store
from trainer.chat_format import END_TAG, encode_conversation
from trainer.data import IGNORE, collate_packed, encode_example, pack_rows
from trainer.model_loading import load_model, load_tokenizer, weights_hash
from trainer.train import train_adapter

HOUSESTYLE = Path(sys.executable).parent / "housestyle"
CONVERSATION = [
    {"role": "system", "content": "You are a helpful customer support assistant for 'GadgetCorp'."},
    {"role": "user", "content": "My MegaGadget won't turn on."},
    {"role": "assistant", "content": "I'm sorry to hear you're having trouble with your MegaGadget!"},
    {"role": "user", "content": "Thanks, all sorted now."},
    {"role": "assistant", "content": "Glad to hear it! Warm regards, the GadgetCorp Team."},
]


def test_loss_mask_covers_exactly_the_assistant_replies(tiny_base: Path) -> None:
    tokenizer = load_tokenizer(tiny_base)
    input_ids, mask = encode_conversation(tokenizer, CONVERSATION)
    assert len(mask) == len(input_ids) and any(mask)
    spans, current = [], []
    for token, masked in zip(input_ids, mask, strict=True):
        if masked:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    replies = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    assert [tokenizer.decode(span) for span in spans] == [reply + END_TAG for reply in replies]


def test_targets_are_the_next_reply_token_and_nothing_else(tiny_base: Path) -> None:
    tokenizer = load_tokenizer(tiny_base)
    example = encode_example(tokenizer, CONVERSATION, max_length=512)
    learned = [t for t in example.targets if t != IGNORE]
    replies = [m["content"] + END_TAG for m in CONVERSATION if m["role"] == "assistant"]
    assert tokenizer.decode(learned) == "".join(replies)


def test_packed_row_gives_each_conversation_the_logits_it_gets_alone(tiny_base: Path) -> None:
    tokenizer = load_tokenizer(tiny_base)
    model = load_model(tiny_base, torch.device("cpu")).eval()
    first = encode_example(tokenizer, CONVERSATION, 512)
    second = encode_example(tokenizer, [CONVERSATION[0], {"role": "user", "content": "Where is my UltraHub?"},
                                        {"role": "assistant", "content": "It has shipped."}], 512)
    rows = pack_rows([first, second], row_length=len(first.input_ids) + len(second.input_ids) + 7)
    assert len(rows) == 1  # both in one row, with a pad tail
    batch = collate_packed(rows, len(first.input_ids) + len(second.input_ids) + 7)
    with torch.no_grad():
        packed = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([second.input_ids]), use_cache=False).logits[0]
    start = len(first.input_ids)
    torch.testing.assert_close(packed[start : start + len(second.input_ids)], alone, atol=1e-4, rtol=1e-4)
    assert batch.targets[0, start - 1] == IGNORE  # no loss term predicts conversation 2 from conversation 1


def test_trained_adapter_is_a_registered_candidate_with_a_full_manifest(
    gadgetcorp_adapter: TrainedFixtureAdapter, gadgetcorp_export: Path
) -> None:
    folder = gadgetcorp_adapter.path
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert {p.name for p in folder.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", MANIFEST_NAME}
    assert manifest["files"] == {p.name: sha256_file(p) for p in folder.iterdir() if p.name != MANIFEST_NAME}
    assert manifest["version"] == gadgetcorp_adapter.version
    assert manifest["version"].endswith(manifest["adapter_hash"][:8])
    assert manifest["base_model_hash"] == weights_hash(gadgetcorp_adapter.base)
    export_manifest = json.loads((gadgetcorp_export / "manifest.json").read_text())
    assert manifest["dataset_hash"] == export_manifest["content_sha256"]
    assert manifest["hyperparameters"]["rank"] == 16 and manifest["metrics"]["train_loss"] > 0
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == str(gadgetcorp_adapter.base)
    assert {"q_proj", "down_proj"} <= set(config["target_modules"])
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0
               for name, tensor in load_file(folder / "adapter_model.safetensors").items())
    with session_scope(gadgetcorp_adapter.database_url) as session:
        adapter = get_adapter(session, gadgetcorp_adapter.version)
        assert adapter.status == AdapterStatus.CANDIDATE and Path(adapter.path) == folder
        run = session.get(TrainingRun, adapter.training_run_id)
        assert run.status == RunStatus.SUCCEEDED and run.adapter_version == adapter.version
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".training-")]


def _no_leftovers(folder: Path) -> bool:
    return not folder.exists() and not [p for p in folder.parent.iterdir() if p.name.startswith(".training-")]


def test_bad_inputs_fail_with_a_fix_and_leave_no_adapter(tiny_base: Path, gadgetcorp_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    empty = tmp_path / "empty-export"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    with housestyle_env(tmp_path / "home") as url:
        cases = [
            (dict(base=tmp_path / "no-such-base", data=gadgetcorp_export), InputError, "housestyle base build"),
            (dict(base=tiny_base, data=tmp_path / "no-such-export"), InputError, "housestyle export"),
            (dict(base=tiny_base, data=empty), InputError, "empty train split"),
            (dict(base=tiny_base, data=gadgetcorp_export, rank=64), InputError, "lower --rank"),
        ]
        for arguments, error, fix in cases:
            with pytest.raises(error, match=fix):
                train_adapter(out=out, settings=get_settings(), database_url=url, preset="tiny", epochs=1,
                              **arguments)
            assert _no_leftovers(out)
        out.mkdir()
        with pytest.raises(ConflictError, match="choose a new folder"):
            train_adapter(tiny_base, gadgetcorp_export, out, settings=get_settings(), database_url=url, preset="tiny",
                          epochs=1)
        with session_scope(url) as session:  # the run that got as far as the store is recorded as failed
            runs = list(session.exec(select(TrainingRun)))
            assert runs and all(run.status == RunStatus.FAILED and run.error for run in runs)


def test_cli_error_is_one_line_without_traceback(tmp_path: Path, gadgetcorp_export: Path) -> None:
    env = {**os.environ, "HOUSESTYLE_HOME": str(tmp_path / "home")}
    env.pop("HOUSESTYLE_DATABASE_URL", None)
    result = subprocess.run([str(HOUSESTYLE), "train", "--base", str(tmp_path / "missing"), "--data",
                             str(gadgetcorp_export), "--out", str(tmp_path / "a")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: base model") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "a").exists()


def test_torchrun_two_processes_train_one_adapter(tiny_base: Path, gadgetcorp_export: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(HOUSESTYLE.parent))
    env = {**os.environ, "HOUSESTYLE_HOME": str(tmp_path / "home"), "HOUSESTYLE_CPU_THREADS": "1"}
    env.pop("HOUSESTYLE_DATABASE_URL", None)
    result = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         "--no-python", str(HOUSESTYLE), "train", "--base", str(tiny_base), "--data", str(gadgetcorp_export),
         "--out", str(tmp_path / "ddp"), "--preset", "tiny", "--epochs", "1", "--max-length", "128"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    version = result.stdout.strip().splitlines()[-1]
    manifest = json.loads((tmp_path / "ddp" / MANIFEST_NAME).read_text())
    assert manifest["version"] == version and manifest["world_size"] == 2
    with housestyle_env(tmp_path / "home"), session_scope(current_store()) as session:
        assert get_adapter(session, version).status == AdapterStatus.CANDIDATE  # registered once, by rank 0


def _free_port() -> int:
    from tests.fixtures.stores import free_port

    return free_port()
