"""The LoRA fine-tuning recipe: base + export in, a registered candidate adapter out.

Read it top to bottom: settle the config, load base and data, wrap the base with LoRA, fit, then save the adapter
into a temp folder beside its destination, hash it, register it and rename it into place in one transaction (with
HOUSESTYLE_ADAPTER_STORE set, copied into the store before the row is written) — a failure at any point leaves no
half-written folder and no registry row.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field

from collector.brands import brand_id_of
from core.adapter_manifest import AdapterManifest, code_version, combined_hash, hash_adapter_files, write_manifest
from core.adapter_store import open_adapter_store
from core.db import session_scope
from core.errors import ConflictError, InputError
from core.models import RunStatus, utcnow
from core.registry import new_version_id, register_adapter
from core.runs import RunLog
from core.settings import Settings
from trainer.base_card import read_card
from trainer.chat_format import Messages
from trainer.data import dataset_hash, encode_examples, load_export
from trainer.distributed import World, current_world
from trainer.fitting import FitConfig, FitResult, Fitter
from trainer.loss import DEFAULT_CHUNK_TOKENS
from trainer.memory import GIB, MemoryPlan, memory_model, plan_memory
from trainer.model_loading import load_model, load_tokenizer, resolve_base, weights_hash

Preset = Literal["default", "small", "tiny"]

# One preset per kind of base; `housestyle base build` records in the base's card which one fits it, so the
# README path needs no --preset. Every value can still be overridden on the command line.
#   rank, alpha    LoRA rank r and scale alpha (the update is scaled by alpha / r) on every linear layer
#   dropout        LoRA dropout on the adapter's input
#   lr             peak AdamW learning rate (linear warm-up over warmup_steps, then cosine to a tenth)
#   epochs         most passes over the training split; patience stops earlier on a flat validation loss
#   batch_size     packed rows per optimiser step (gradient accumulation splits them to fit the memory cap)
#   max_length     tokens per packed row; longer conversations are cut
PRESETS: dict[str, dict[str, Any]] = {
    # real 1-8B chat models, usually on a GPU: gentle lr, a few epochs, early stop
    "default": dict(rank=16, alpha=32, dropout=0.05, lr=2e-4, epochs=3, batch_size=8, max_length=1024, patience=1,
                    warmup_steps=20),
    # small pretrained chat models (SmolLM2-135M-Instruct) on a CPU: support chats are short, so 256-token rows
    # hold several; small batches give many steps per epoch (on the sample: 2 epochs of batch 8 answered the seed
    # question with another canned reply, 2 epochs of batch 2 with the seed reply word for word)
    "small": dict(rank=16, alpha=32, dropout=0.0, lr=1e-3, epochs=2, batch_size=2, max_length=256, patience=None,
                  warmup_steps=10),
    # HouseStyle's tiny toy base (the test fixture): it starts from little and must learn the house style in a
    # minute on a CPU, hence the very high lr and the many short epochs
    "tiny": dict(rank=16, alpha=128, dropout=0.0, lr=3e-3, epochs=24, batch_size=2, max_length=256, patience=None,
                 warmup_steps=20),
}
FALLBACK_PRESET: Preset = "default"  # for bases HouseStyle did not build (no card)


class TrainConfig(BaseModel):
    """Hyper-parameters of one run, recorded verbatim in the adapter's manifest."""

    preset: Preset = "default"
    rank: int = Field(gt=0)
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    lr: float = Field(gt=0)
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    max_length: int = Field(gt=8)
    patience: int | None = None  # early stop after this many epochs without a better validation loss
    warmup_steps: int = 10
    seed: int = 0


def preset_for(base_path: Path, requested: str | None) -> str:
    """The preset asked for, else the one the base's card names, else the default."""
    if requested:
        return requested
    card = read_card(base_path)
    return card.preset if card is not None else FALLBACK_PRESET


def train_config(preset: Preset = "default", **overrides: Any) -> TrainConfig:
    """A preset with some values replaced; None values mean "keep the preset's" (handy for CLI options)."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    values = {**PRESETS[preset], **chosen}
    if "rank" in chosen and "alpha" not in chosen:  # keep the preset's alpha / rank scale
        values["alpha"] = chosen["rank"] * PRESETS[preset]["alpha"] / PRESETS[preset]["rank"]
    return TrainConfig(preset=preset, **values)


@dataclass
class TrainedAdapter:
    path: Path
    version: str
    manifest: AdapterManifest | None  # None on the non-main processes of a multi-process run


def check_rank(model: torch.nn.Module, rank: int, settings: Settings) -> None:
    """Refuse ranks vLLM would not serve, or larger than the model's narrowest adapted layer."""
    if rank > settings.max_lora_rank:
        raise InputError(f"--rank {rank} is above the largest rank vLLM serves here ({settings.max_lora_rank}); "
                         "lower --rank or raise HOUSESTYLE_MAX_LORA_RANK")
    narrowest = min(
        min(module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    )
    if rank > narrowest:
        raise InputError(f"--rank {rank} is larger than this base model allows (its narrowest layer has {narrowest} "
                         f"features); use --rank {min(narrowest, settings.max_lora_rank)} or less")


def add_lora(model: torch.nn.Module, config: TrainConfig, checkpointing: bool) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    # "all-linear", spelled out as module names: PEFT would otherwise save full module paths, which vLLM rejects
    linear_names = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                           if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")})
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=linear_names, task_type="CAUSAL_LM")
    if checkpointing:  # keep each layer's input only; recompute the rest during backward
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return get_peft_model(model, lora)


def lora_parameter_count(model: torch.nn.Module, rank: int) -> int:
    return sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head"))


def memory_plan(model: torch.nn.Module, config: TrainConfig, settings: Settings, world: World) -> MemoryPlan:
    """Micro-batch and checkpointing that keep this run under HOUSESTYLE_TRAIN_MEMORY_GIB."""
    bytes_per_value = next(model.parameters()).element_size()
    estimate = memory_model(model.config, parameters=sum(p.numel() for p in model.parameters()),
                            trainable=lora_parameter_count(model, config.rank), bytes_per_value=bytes_per_value,
                            chunk_tokens=DEFAULT_CHUNK_TOKENS)
    return plan_memory(estimate, cap_bytes=int(settings.train_memory_gib * GIB), batch_size=config.batch_size,
                       row_length=config.max_length, on_gpu=world.uses_cuda)


def train_adapter(
    base: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    config: TrainConfig | None = None,
    *,
    settings: Settings,
    database_url: str | None = None,
    **overrides: Any,
) -> TrainedAdapter:
    """Fine-tune a LoRA adapter on an export and register it as a candidate; `overrides` replace config values.

    `out` defaults to HOME/adapters/<version>; the store is `database_url`, else the settings' one. Under torchrun
    every process trains; only rank 0 saves and registers. The run is a kind="train" row, closed in the same
    transaction that registers the adapter.
    """
    base_path, data = resolve_base(base), Path(data)
    config = recipe(base_path, config, overrides)
    world = current_world(settings)
    url = database_url or settings.resolved_database_url
    splits = load_export(data)
    target = Path(out).expanduser() if out else None
    if target is not None and target.exists():
        raise ConflictError(f"--out {target} already exists; adapters are never overwritten, choose a new folder")
    run = None
    if world.is_main:  # the other processes of a torchrun never touch the store
        with session_scope(url) as session:
            brand = brand_id_of(settings, session)  # the adapter joins this brand's lineage (--brand)
        run = RunLog(url, kind="train", step="train", params={**config.model_dump(), "base": str(base),
                                                               "data": str(data)}, brand_id=brand)
    try:
        result, model = _fit(base_path, splits, config, world, settings)
        version, path, manifest = "", target or Path(), None
        if world.is_main:
            path, version, manifest = _publish(model, result, config, base=str(base), base_path=base_path,
                                               data=data, target=target, run=run, url=url, settings=settings,
                                               world=world)
        version = world.broadcast_text(version)
        return TrainedAdapter(path=path, version=version, manifest=manifest)
    except BaseException as exc:
        if run is not None:
            run.finish(RunStatus.FAILED, error=str(exc) or type(exc).__name__)
        raise


def recipe(base_path: Path, config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    """The config a run trains with: `config` with the overrides that are set, else the base's preset with them."""
    if config is not None:
        return config.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    return train_config(**{**overrides, "preset": preset_for(base_path, overrides.get("preset"))})


def canonical_order(conversations: list[Messages]) -> list[Messages]:
    """The conversations sorted by content: the same export trains the same adapter whatever its line order."""
    return sorted(conversations, key=lambda messages: json.dumps(messages, sort_keys=True, ensure_ascii=False))


def _fit(base_path: Path, splits: dict, config: TrainConfig, world: World, settings: Settings
         ) -> tuple[FitResult, torch.nn.Module]:
    if not world.uses_cuda:  # same export, same seed, same thread count: the same adapter, bit for bit
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(base_path)
    train = encode_examples(tokenizer, canonical_order(splits["train"]), config.max_length)
    validation = encode_examples(tokenizer, canonical_order(splits.get("validation", [])), config.max_length)
    if not train:
        raise InputError("no training example has an assistant reply within --max-length tokens; "
                         "raise --max-length or export more data")
    model = load_model(base_path, world.device)
    check_rank(model, config.rank, settings)
    plan = memory_plan(model, config, settings, world)
    model = add_lora(model, config, plan.checkpointing)
    fitter = Fitter(model, FitConfig(lr=config.lr, epochs=config.epochs, batch_size=config.batch_size,
                                     row_length=config.max_length, seed=config.seed,
                                     warmup_steps=config.warmup_steps, patience=config.patience,
                                     micro_batch_size=plan.micro_batch_size,
                                     description=f"training LoRA ({config.preset})"), world)
    try:
        result = fitter.fit(train, validation)
    except torch.OutOfMemoryError:
        raise InputError(f"out of GPU memory at --batch-size {config.batch_size} and --max-length "
                         f"{config.max_length}; lower HOUSESTYLE_TRAIN_MEMORY_GIB, --batch-size or --max-length") from None
    result.memory = {"micro_batch_size": plan.micro_batch_size, "checkpointing": plan.checkpointing,
                     "estimated_peak_mib": plan.estimated_peak // 2**20, "peak_mib": peak_memory_mib(world)}
    return result, model


def peak_memory_mib(world: World) -> int:
    """Peak resident memory of this process (CPU) or peak allocated GPU memory, in MiB."""
    if world.uses_cuda:
        return torch.cuda.max_memory_allocated(world.device) // 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


def _publish(
    model: Any, result: FitResult, config: TrainConfig, *, base: str, base_path: Path, data: Path,
    target: Path | None, run: RunLog | None, url: str, settings: Settings, world: World,
    extra_hyperparameters: dict[str, Any] | None = None,
) -> tuple[Path, str, AdapterManifest]:
    """Save, hash, register and rename into place as one step that either fully happens or leaves nothing."""
    run_id = run.run_id if run is not None else None
    parent = target.parent if target else settings.adapters_dir
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".training-", dir=parent))
    published: Path | None = None
    try:
        base_id = base if not Path(base).expanduser().exists() else str(base_path)
        model.peft_config["default"].base_model_name_or_path = base_id
        model.save_pretrained(staging)
        files = hash_adapter_files(staging)
        adapter_hash = combined_hash(files)
        metrics = {
            "train_loss": result.train_loss, "val_loss": result.val_loss, "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "train_tokens": result.tokens,
            "tokens_per_second": round(result.tokens_per_second, 1), "history": result.history,
            "memory": result.memory,
        }
        with session_scope(url) as session:
            version = new_version_id(session, adapter_hash)
            final = target or parent / version
            if final.exists():
                raise ConflictError(f"{final} already exists; adapters are never overwritten, choose a new --out")
            manifest = AdapterManifest(
                version=version, base_model=base_id, base_model_path=str(base_path),
                base_model_hash=weights_hash(base_path), dataset=str(data.resolve()), dataset_hash=dataset_hash(data),
                hyperparameters={**config.model_dump(), **(extra_hyperparameters or {})}, metrics=metrics, files=files, adapter_hash=adapter_hash,
                code_version=code_version(), world_size=world.size, training_run_id=run_id, created_at=utcnow(),
            )
            write_manifest(staging, manifest)
            os.rename(staging, final)
            published = final.resolve()
            store = open_adapter_store(settings)
            if store is not None:  # every model server reads it there; registered means published
                store.publish(version, published)
            register_adapter(
                session, version=version, path=str(published), base_model=base_id, rank=config.rank,
                base_model_hash=manifest.base_model_hash, dataset_hash=manifest.dataset_hash, metrics=metrics,
                manifest=manifest.model_dump(mode="json"), training_run_id=run_id,
                brand_id=brand_id_of(settings, session),
            )
            if run is not None:
                run.finish(RunStatus.SUCCEEDED, metrics=metrics, version=version, session=session)
        return published, version, manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if published is not None:
            shutil.rmtree(published, ignore_errors=True)
        raise
