"""`run_audit`: train a shadow adapter with canaries, measure their exposure, probe the candidate for extraction.

Why a shadow: canaries must never reach a customer. Planting them into the candidate itself would need a proof
that no prompt can ever bring them out, and a generative model gives no such proof (any prompt may). So the
candidate is trained on the real data only, and a SHADOW adapter is trained by the candidate's own recipe
(its manifest's hyperparameters, and its DP noise when it was trained privately) on the same data plus the
canaries. The shadow lives in this process's memory only: it is never saved, registered or served, and it is
gone when the audit returns. What it memorises of a canary planted once is what the candidate memorises of a
customer's value seen once. The extraction probe, which plants nothing, questions the candidate itself.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.adapter_manifest import read_manifest
from core.settings import Settings
from trainer.audit.canaries import (
    DEFAULT_REPETITIONS,
    KINDS,
    Canary,
    Placement,
    alternatives,
    make_canaries,
    plant,
    with_secret,
)
from trainer.audit.exposure import extrapolated_exposure, mean_by_repetitions, rank_exposure
from trainer.audit.extraction import DEFAULT_MIN_CHARS, DEFAULT_RARE_LIMIT, PiiFinder, probe, redactor_finder
from trainer.audit.report import AuditReport, CanaryResult, ShadowFacts
from trainer.audit.scoring import ending_losses
from trainer.chat_format import Messages
from trainer.data import load_export
from trainer.distributed import current_world
from trainer.dp.customers import customer_of, train_rows
from trainer.dp.fitting import PrivacyConfig
from trainer.dp.train import customer_groups, fit_private, privacy_from_settings
from trainer.generate import ReplyModel, load_reply_model
from trainer.model_loading import load_tokenizer, resolve_base
from trainer.train import TrainConfig, _fit, preset_for, train_config

Progress = Callable[[str], None]


@dataclass
class AuditOptions:
    """How thorough an audit is; the defaults are what `housestyle audit` and the refresh use."""

    seed: int = 0
    kinds: Sequence[str] = KINDS
    repetitions: Sequence[int] = DEFAULT_REPETITIONS
    controls_per_kind: int = 1
    alternatives: int = 127  # per canary: exposure is measurable up to log2(128) = 7 bits by rank
    prompts: int = 32  # training openings the extraction probe prompts with
    samples: int = 2  # sampled replies per prompt, besides the greedy one
    max_new_tokens: int = 64
    min_chars: int = DEFAULT_MIN_CHARS
    rare_limit: int = DEFAULT_RARE_LIMIT
    look_for_pii: bool = True  # run the redactor over replies and training text (loads spaCy)
    overrides: dict[str, Any] = field(default_factory=dict)  # training values replaced (e.g. fewer epochs)


def candidate_recipe(candidate: Path | None, base_path: Path, overrides: dict[str, Any]
                     ) -> tuple[TrainConfig, PrivacyConfig | None]:
    """The candidate's training config and DP noise from its manifest; without a candidate, the base's preset."""
    if candidate is None:
        return train_config(preset_for(base_path, overrides.get("preset")), **overrides), None
    hyperparameters = read_manifest(candidate).get("hyperparameters") or {}
    known = {k: v for k, v in hyperparameters.items() if k in TrainConfig.model_fields}
    config = TrainConfig(**{**known, **{k: v for k, v in overrides.items() if v is not None}})
    spent = hyperparameters.get("dp")
    privacy = None
    if spent:  # the same noise, clipping and batch: the same steps and sample rate, hence the same epsilon
        privacy = PrivacyConfig(epsilon=None, delta=spent["delta"], max_grad_norm=spent["max_grad_norm"],
                                customers_per_step=spent["customers_per_step"],
                                noise_multiplier=spent["noise_multiplier"])
    return config, privacy


def train_shadow(base_path: Path, splits: dict[str, list[Messages]], rows: list[dict], config: TrainConfig,
                 privacy: PrivacyConfig | None, settings: Settings) -> tuple[torch.nn.Module, ShadowFacts]:
    """The shadow adapter (in memory only) on `splits`, whose train split carries the canaries."""
    world = current_world(settings)
    started = time.perf_counter()
    if privacy is None:
        result, model = _fit(base_path, splits, config, world, settings)
        dp = None
    else:
        customers = customer_groups(splits["train"], rows)
        result, spent, model = fit_private(base_path, splits, customers, config, privacy, world, settings)
        dp = spent.as_dict()
    facts = ShadowFacts(train_loss=result.train_loss, val_loss=result.val_loss, seconds=time.perf_counter() - started,
                        planted_copies=0, hyperparameters=config.model_dump(), dp=dp)
    return model.eval(), facts


def measure_exposure(model: torch.nn.Module, tokenizer: Any, planted: list[Messages], canaries: list[Canary],
                     placements: list[Placement], *, count: int, seed: int, device: torch.device,
                     progress: Progress | None = None) -> list[CanaryResult]:
    """Each canary's rank and exposure among `count` alternatives, scored where its first copy was planted."""
    results = []
    first = {}
    for placement in placements:
        first.setdefault(placement.canary, placement)
    for number, canary in enumerate(canaries, start=1):
        secrets = [canary.secret, *alternatives(canary, count, seed)]
        losses = ending_losses(model, tokenizer, [with_secret(planted, first[canary.name], canary, secret)
                                                  for secret in secrets], device)
        exposure = rank_exposure(losses[0], losses[1:])
        results.append(CanaryResult(
            name=canary.name, kind=canary.kind, repetitions=canary.repetitions, secret=canary.secret, loss=losses[0],
            rank=1 + sum(loss <= losses[0] for loss in losses[1:]), candidates=len(secrets), exposure=exposure,
            extrapolated_exposure=extrapolated_exposure(losses[0], losses[1:], canary.format.space_bits()),
        ))
        if progress:
            progress(f"exposure {number}/{len(canaries)}: {canary.name} {exposure:.2f} bits")
    return results


def run_audit(base: str | Path, data: str | Path, *, settings: Settings, candidate: str | Path | None = None,
              options: AuditOptions | None = None, finder: PiiFinder | None = None,
              progress: Progress | None = None) -> AuditReport:
    """Audit `candidate` (an adapter folder; None: audit the recipe, probing the shadow) trained on export `data`.

    `finder` replaces the redactor for the personal-value check (tests); with `options.look_for_pii` off there is
    none. Nothing is written: the report is returned, the shadow adapter is dropped.
    """
    options = options or AuditOptions()
    say = progress or (lambda message: None)
    started = time.perf_counter()
    base_path, data = resolve_base(base), Path(data)
    candidate = Path(candidate) if candidate else None
    splits = load_export(data)
    config, privacy = candidate_recipe(candidate, base_path, options.overrides)
    if privacy is None and candidate is None:
        privacy = privacy_from_settings(settings)  # auditing the recipe a refresh would use
    canaries = make_canaries(options.seed, options.kinds, options.repetitions, options.controls_per_kind)
    planted, placements = plant(splits["train"], canaries, options.seed)
    copies = sum(canary.repetitions for canary in canaries)
    say(f"shadow adapter: {copies} canary copies in {len(splits['train'])} training conversations; training "
        f"({config.preset} preset, {config.epochs} epochs{', private' if privacy else ''})")
    rows = train_rows(data)
    customers = [customer_of(row) for row in rows] if len(rows) == len(planted) else None
    model, shadow = train_shadow(base_path, {**splits, "train": planted}, rows, config, privacy, settings)
    shadow.planted_copies = copies
    tokenizer = load_tokenizer(base_path)
    device = next(model.parameters()).device
    results = measure_exposure(model, tokenizer, planted, canaries, placements, count=options.alternatives,
                               seed=options.seed, device=device, progress=say)
    if not options.look_for_pii:
        finder = None
    elif finder is None:
        say("loading the redactor for the personal-value check")
        finder = redactor_finder(settings)
    if candidate is None:
        probed = ReplyModel(tokenizer, model, device)
        conversations = planted
    else:
        del model  # one model in memory at a time
        gc.collect()
        probed = load_reply_model(base_path, candidate, settings=settings)
        conversations = splits["train"]
    extraction = probe(probed, conversations, finder=finder, customers=customers,
                       prompts=options.prompts, samples=options.samples, max_new_tokens=options.max_new_tokens,
                       min_chars=options.min_chars, rare_limit=options.rare_limit, seed=options.seed, progress=say)
    return AuditReport(
        base=str(base), data=str(data), candidate=str(candidate) if candidate else None, seed=options.seed,
        canaries=results, exposure=mean_by_repetitions([(r.repetitions, r.exposure) for r in results]),
        max_measurable_exposure=round(math.log2(options.alternatives + 1), 4), shadow=shadow,
        extraction=extraction, seconds=time.perf_counter() - started,
    )
