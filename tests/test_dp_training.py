"""Differentially private training per customer: who a row's customer is, Opacus's step equal to plain training at
noise 0 without clipping, the epsilon a run spends recorded, and one-line refusals."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlmodel import select

from core.adapter_manifest import MANIFEST_NAME
from core.db import session_scope
from core.errors import InputError
from core.models import RunStatus, TrainingRun
from core.settings import get_settings
from tests.fixtures.models import housestyle_env
from trainer.audit.runner import candidate_recipe
from trainer.data import IGNORE, collate_packed, encode_example
from trainer.distributed import World
from trainer.dp.customers import customer_of, group_by_customer
from trainer.dp.fitting import PrivacyConfig, PrivateFitter, check_privacy, epsilon_spent, row_losses
from trainer.dp.train import refuse_preference, train_private_adapter
from trainer.fitting import FitConfig
from trainer.loss import CausalLMLoss, batch_loss
from trainer.model_loading import load_model, load_tokenizer
from trainer.train import add_lora, train_config

HOUSESTYLE = Path(sys.executable).parent / "housestyle"
OPENING = [{"role": "user", "content": "Where is my UltraHub?"}, {"role": "assistant", "content": "On its way!"}]


@pytest.mark.parametrize(("row", "customer"), [
    ({"customer": "c-7", "customer_ref": "x", "messages": OPENING}, "customer:c-7"),  # the export's key first
    ({"customer_ref": "chatwoot-contact:12", "messages": OPENING}, "customer_ref:chatwoot-contact:12"),
    ({"contact": 99, "messages": OPENING}, "contact:99"),
    ({"conversation": "gc-0004", "messages": OPENING}, "conversation:gc-0004"),
    ({"customer": "", "messages": OPENING}, customer_of({"messages": OPENING})),  # blank: as if absent
])
def test_a_rows_customer_is_the_first_key_it_has(row: dict, customer: str) -> None:
    assert customer_of(row) == customer


def test_without_a_key_rows_with_the_same_opening_are_one_customer() -> None:
    """One conversation exported as several records (one per reply) shares its opening: one customer, never more."""
    later = [*OPENING, {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "Bye"}]
    other = [{"role": "user", "content": "Refund please"}, {"role": "assistant", "content": "Done."}]
    keys = [customer_of({"messages": m}) for m in (OPENING, later, other)]
    assert keys[0] == keys[1] != keys[2] and keys[0].startswith("opening:")
    assert group_by_customer([OPENING, later, other], keys) == [[OPENING, later], [other]]
    with pytest.raises(ValueError):
        group_by_customer([OPENING], [])


@pytest.mark.parametrize(("privacy", "customers", "message"), [
    (PrivacyConfig(epsilon=0.0), 100, "must be above 0"),
    (PrivacyConfig(epsilon=4.0, delta=0.02), 100, "below 1 / customers (1/100)"),
    (PrivacyConfig(epsilon=4.0, delta=0.0), 100, "must be above 0 and below"),
    (PrivacyConfig(epsilon=4.0, max_grad_norm=0.0), 100, "MAX_GRAD_NORM"),
])
def test_privacy_that_would_mean_nothing_is_refused(privacy: PrivacyConfig, customers: int, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_privacy(privacy, customers)


def test_more_noise_or_fewer_steps_spend_less_epsilon_and_no_noise_promises_nothing() -> None:
    assert epsilon_spent(0.0, 0.1, 100, 1e-5) is None
    assert epsilon_spent(2.0, 0.1, 100, 1e-5) < epsilon_spent(1.0, 0.1, 100, 1e-5)
    assert epsilon_spent(1.0, 0.1, 50, 1e-5) < epsilon_spent(1.0, 0.1, 100, 1e-5)


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_methods_refuse_dp_with_one_line(method: str) -> None:
    with pytest.raises(InputError, match=f"covers --method sft only, not {method}"):
        refuse_preference(method)
    refuse_preference("sft")


CUSTOMERS = [
    [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "My MegaGadget won't turn on."},
      {"role": "assistant", "content": "I'm sorry! Hold the power button for ten seconds."}]],
    [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Where is my UltraHub?"},
      {"role": "assistant", "content": "It has shipped and arrives Friday. Warm regards, the GadgetCorp Team."}],
     [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Can I return it?"},
      {"role": "assistant", "content": "Yes, within 30 days."}]],
    [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Does it come in blue?"},
      {"role": "assistant", "content": "Only in silver and black, I'm afraid."}]],
]


def lora_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("micro_batch_size", [None, 1])
def test_dp_step_with_no_noise_and_no_clipping_is_plain_training(tiny_base: Path, micro_batch_size: int | None) -> None:
    """With noise 0 and a clipping bound no gradient reaches, Opacus's per-customer gradients, summed and divided by
    the batch, are the plain gradient of the mean customer loss, on every LoRA layer this project trains."""
    tokenizer = load_tokenizer(tiny_base)
    rows = [[encode_example(tokenizer, messages, 256) for messages in customer] for customer in CUSTOMERS]
    torch.manual_seed(0)
    plain = add_lora(load_model(tiny_base, torch.device("cpu")), train_config("tiny"), checkpointing=False)
    with torch.no_grad():  # LoRA's B starts at 0, which would leave A's gradient 0: give both something to test
        for name, parameter in plain.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    private = copy.deepcopy(plain)
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    batch = collate_packed(rows, width)
    losses = row_losses(plain, batch)
    with torch.no_grad():  # the same cross-entropy plain training sums (trainer.loss), only averaged per customer
        summed, _ = batch_loss(CausalLMLoss(plain), batch)
    counts = (batch.targets != IGNORE).sum(dim=1)
    torch.testing.assert_close((losses * counts).sum(), summed, rtol=1e-5, atol=1e-4)
    (losses.sum() / len(rows)).backward()
    expected = lora_grads(plain)

    fitter = PrivateFitter(private, FitConfig(lr=1e-3, epochs=1, batch_size=3, row_length=256,
                                              micro_batch_size=micro_batch_size),
                           PrivacyConfig(epsilon=None, noise_multiplier=0.0, max_grad_norm=1e9, customers_per_step=3,
                                         noise_seed=0), World(rank=0, size=1, device=torch.device("cpu")))
    fitter.gradients(rows)
    fitter.optimizer.pre_step()  # clip (nothing reaches 1e9), add noise (0), as `step` does before dividing
    got = {name: p.grad / 3 for name, p in private.named_parameters() if p.requires_grad}

    targets = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in expected}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert expected.keys() == got.keys() and len(expected) == 2 * 7 * 2  # A and B, 7 layers each, 2 blocks
    worst = max(float((expected[name] - got[name]).abs().max()) for name in expected)
    scale = max(float(expected[name].abs().max()) for name in expected)
    assert scale > 1e-4 and worst < 1e-6, (worst, scale)


def test_a_dp_step_moves_no_customer_more_than_the_clipping_bound(tiny_base: Path) -> None:
    tokenizer = load_tokenizer(tiny_base)
    rows = [[encode_example(tokenizer, messages, 256) for messages in customer] for customer in CUSTOMERS]
    model = add_lora(load_model(tiny_base, torch.device("cpu")), train_config("tiny"), checkpointing=False)
    fitter = PrivateFitter(model, FitConfig(lr=1e-3, epochs=1, batch_size=3, row_length=256),
                           PrivacyConfig(epsilon=None, noise_multiplier=0.0, max_grad_norm=0.01, customers_per_step=3,
                                         noise_seed=0), World(rank=0, size=1, device=torch.device("cpu")))
    fitter.gradients(rows)
    fitter.optimizer.pre_step()
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.requires_grad))
    assert float(total) <= 3 * 0.01 + 1e-6  # three customers, each clipped to 0.01


def test_a_private_run_records_the_epsilon_it_spent(tiny_base: Path, gadgetcorp_export: Path, tmp_path: Path) -> None:
    with housestyle_env(tmp_path / "home") as url:
        trained = train_private_adapter(tiny_base, gadgetcorp_export, tmp_path / "adapter", settings=get_settings(),
                                        privacy=PrivacyConfig(epsilon=4.0, delta=1e-5), database_url=url,
                                        preset="tiny", epochs=1)
        spent = json.loads((trained.path / MANIFEST_NAME).read_text())["hyperparameters"]["dp"]
        assert 0 < spent["epsilon"] <= 4.0 and spent["unit"] == "customer" and spent["noise_multiplier"] > 0
        assert spent["customers"] >= 100 and spent["steps"] >= 1 and spent["accountant"] == "prv"
        with session_scope(url) as session:
            run = session.exec(select(TrainingRun)).one()
            assert run.status == RunStatus.SUCCEEDED and run.adapter_version == trained.version
            assert f"epsilon {spent['epsilon']:.2f}" in run.log and run.params["dp"]["target_epsilon"] == 4.0


def test_an_audit_of_a_private_candidate_trains_its_shadow_with_the_same_noise(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"hyperparameters": {
        **train_config("tiny").model_dump(), "epochs": 3,
        "dp": {"epsilon": 3.9, "delta": 1e-5, "noise_multiplier": 2.5, "max_grad_norm": 0.5, "customers_per_step": 32,
               "sample_rate": 0.2, "steps": 15, "customers": 160, "accountant": "prv", "unit": "customer"}}}))
    config, privacy = candidate_recipe(tmp_path, tmp_path, {})
    assert config.epochs == 3 and config.preset == "tiny"
    assert privacy == PrivacyConfig(epsilon=None, delta=1e-5, max_grad_norm=0.5, customers_per_step=32,
                                    noise_multiplier=2.5)


def test_cli_refuses_dp_for_preference_training_in_one_line(tmp_path: Path, gadgetcorp_export: Path) -> None:
    env = {**os.environ, "HOUSESTYLE_HOME": str(tmp_path / "home"), "HOUSESTYLE_TRAIN_DP_EPSILON": "4"}
    env.pop("HOUSESTYLE_DATABASE_URL", None)
    result = subprocess.run([str(HOUSESTYLE), "train", "--base", str(tmp_path), "--data", str(gadgetcorp_export),
                             "--method", "dpo"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: differentially private training (HOUSESTYLE_TRAIN_DP_EPSILON) covers --method sft only, not dpo; "
        "unset HOUSESTYLE_TRAIN_DP_EPSILON or train with --method sft"]
