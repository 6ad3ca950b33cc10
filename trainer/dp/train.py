"""The SFT recipe with differential privacy: `trainer.train`'s steps, with the customer-level DP loop in the middle.

Same config, same LoRA, same publishing (a registered candidate with its manifest); what differs is the fit
(`trainer.dp.fitting`) and what is recorded: the privacy spent (epsilon, delta, noise, clipping, sample rate,
steps, customers) goes into the adapter manifest's hyperparameters under "dp" and into the run's log.
Only SFT: DPO and KTO train through TRL's trainers, whose steps Opacus does not wrap here (`refuse_preference`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from collector.brands import brand_id_of
from core.db import session_scope
from core.errors import ConflictError, InputError
from core.models import RunStatus
from core.runs import RunLog
from core.settings import Settings
from trainer.chat_format import Messages
from trainer.data import encode_examples, load_export
from trainer.distributed import World, current_world
from trainer.dp.customers import customer_of, group_by_customer, train_rows
from trainer.dp.fitting import PrivacyConfig, PrivacySpent, PrivateFitter
from trainer.fitting import FitConfig, FitResult
from trainer.model_loading import load_model, load_tokenizer, resolve_base
from trainer.train import TrainConfig, TrainedAdapter, _publish, add_lora, check_rank, recipe

SUPPORTED_METHODS = ("sft",)
# customers' rows per forward/backward: a step's dozens of customers go through in pieces (the per-customer
# gradients Opacus keeps grow with the piece, not with the step)
MICRO_BATCH = 16


def privacy_from_settings(settings: Settings) -> PrivacyConfig | None:
    """The DP settings, or None when HOUSESTYLE_TRAIN_DP_EPSILON is unset (DP is opt-in)."""
    if settings.train_dp_epsilon is None:
        return None
    return PrivacyConfig(epsilon=settings.train_dp_epsilon, delta=settings.train_dp_delta,
                         max_grad_norm=settings.train_dp_max_grad_norm,
                         customers_per_step=settings.train_dp_customers_per_step)


def refuse_preference(method: str) -> None:
    """One error line for a training method DP does not cover."""
    if method not in SUPPORTED_METHODS:
        raise InputError(f"differentially private training (HOUSESTYLE_TRAIN_DP_EPSILON) covers --method sft only, "
                         f"not {method}; unset HOUSESTYLE_TRAIN_DP_EPSILON or train with --method sft")


def customer_groups(conversations: list[Messages], rows: list[dict[str, Any]]) -> list[list[Messages]]:
    """The train split grouped by customer, each group in a content order (same export, same groups)."""
    customers = [customer_of(row) for row in rows] if len(rows) == len(conversations) else None
    if customers is None:  # rows that could not be read back alongside: one customer per opening, the safe side
        customers = [customer_of({"messages": messages}) for messages in conversations]
    groups = group_by_customer(conversations, customers)
    key = lambda messages: json.dumps(messages, sort_keys=True, ensure_ascii=False)  # noqa: E731
    return sorted((sorted(group, key=key) for group in groups), key=lambda group: key(group[0]))


def fit_private(base_path: Path, splits: dict[str, list[Messages]], customers: list[list[Messages]],
                config: TrainConfig, privacy: PrivacyConfig, world: World, settings: Settings
                ) -> tuple[FitResult, PrivacySpent, torch.nn.Module]:
    """Load the base, add LoRA and train it with customer-level DP; the model stays in memory (not saved)."""
    if not world.uses_cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(config.seed)  # LoRA's initialisation: not secret, the data never touches it
    tokenizer = load_tokenizer(base_path)
    grouped = [encode_examples(tokenizer, group, config.max_length) for group in customers]
    grouped = [examples for examples in grouped if examples]
    validation = encode_examples(tokenizer, splits.get("validation", []), config.max_length)
    if not grouped:
        raise InputError("no training example has an assistant reply within --max-length tokens; "
                         "raise --max-length or export more data")
    model = add_lora(load_model(base_path, world.device), config, checkpointing=False)
    check_rank(model, config.rank, settings)
    fitter = PrivateFitter(model, FitConfig(lr=config.lr, epochs=config.epochs, batch_size=config.batch_size,
                                            row_length=config.max_length, seed=config.seed,
                                            warmup_steps=config.warmup_steps, micro_batch_size=MICRO_BATCH,
                                            description=f"training LoRA ({config.preset}, private)"),
                           privacy, world)
    result, spent = fitter.fit(grouped, validation)
    return result, spent, model


def describe(spent: PrivacySpent) -> str:
    epsilon = "no guarantee (noise 0)" if spent.epsilon is None else f"epsilon {spent.epsilon:.2f}"
    return (f"differential privacy per customer: {epsilon} at delta {spent.delta:g}, noise {spent.noise_multiplier:.3f}"
            f", clipping {spent.max_grad_norm:g}, {spent.customers} customers sampled at {spent.sample_rate:.3f} over "
            f"{spent.steps} steps")


def train_private_adapter(
    base: str | Path, data: str | Path, out: str | Path | None = None, config: TrainConfig | None = None, *,
    settings: Settings, privacy: PrivacyConfig, database_url: str | None = None, **overrides: Any,
) -> TrainedAdapter:
    """`trainer.train.train_adapter` with customer-level DP: a registered candidate whose manifest says the epsilon."""
    base_path, data = resolve_base(base), Path(data)
    config = recipe(base_path, config, overrides)
    world = current_world(settings)
    if world.size > 1:
        raise InputError("differentially private training runs in one process; start it without torchrun")
    url = database_url or settings.resolved_database_url
    splits = load_export(data)
    target = Path(out).expanduser() if out else None
    if target is not None and target.exists():
        raise ConflictError(f"--out {target} already exists; adapters are never overwritten, choose a new folder")
    customers = customer_groups(splits["train"], train_rows(data))
    with session_scope(url) as session:
        brand = brand_id_of(settings, session)
    run = RunLog(url, kind="train", step="train", brand_id=brand,
                 params={**config.model_dump(), "base": str(base), "data": str(data),
                         "dp": {"target_epsilon": privacy.epsilon, "delta": privacy.delta,
                                "max_grad_norm": privacy.max_grad_norm,
                                "customers_per_step": privacy.customers_per_step}})
    try:
        result, spent, model = fit_private(base_path, splits, customers, config, privacy, world, settings)
        run.step("train", describe(spent), 1.0)
        path, version, manifest = _publish(model, result, config, base=str(base), base_path=base_path, data=data,
                                           target=target, run=run, url=url, settings=settings, world=world,
                                           extra_hyperparameters={"dp": spent.as_dict()})
        return TrainedAdapter(path=path, version=version, manifest=manifest)
    except BaseException as exc:
        run.finish(RunStatus.FAILED, error=str(exc) or type(exc).__name__)
        raise
