"""The differentially private training loop: customers Poisson-sampled, one packed row each, clipped and noised.

User-level DP-SGD (arXiv 2407.07737): at every step each customer joins the batch independently with probability
q = customers_per_step / customers (Poisson sampling, what the accountant assumes). A chosen customer contributes
one row: a random subset of their conversations that fits `row_length` tokens, the row's mean loss over the
agents' reply tokens. Opacus's hooks give that row's gradient on its own (the LoRA layers are plain nn.Linear
modules), `DPOptimizer` clips it to `max_grad_norm` (so no customer, however much they wrote, moves a step by
more than that) and adds Gaussian noise of `noise_multiplier x max_grad_norm` to the sum, which is then divided
by the expected number of customers per step. The accountant (PRV, Opacus's default) turns noise, q and steps
into the epsilon spent.

Differences from `trainer.fitting.Fitter`, each for the guarantee: no early stop and no return to a best epoch
(choosing by validation loss would be one more look at data outside the accounting); one process (a torchrun
group would need its noise and sampling shared); no activation checkpointing (Opacus's hooks would see every
layer twice); and randomness (sampling, noise) from the OS unless a seed is given, so an observer who knows the
training seed cannot subtract the noise: a DP run is not bit-for-bit repeatable, by design.
"""

from __future__ import annotations

import math
import random
import secrets
import time
import warnings
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.errors import InputError
from trainer.data import IGNORE, Batch, Example, collate_packed
from trainer.distributed import World
from trainer.fitting import FitConfig, FitResult, evaluate_loss, lr_at, progress_console

ACCOUNTANT = "prv"  # Opacus's default: tighter than RDP (at epsilon 1, 6.0 instead of 6.4 noise on the sample)


@dataclass
class PrivacyConfig:
    """How private a run is: the target (epsilon, delta), the clipping bound and the expected batch of customers."""

    epsilon: float | None  # target epsilon; None: train with `noise_multiplier` as given and report what it spends
    delta: float = 1e-5
    max_grad_norm: float = 1.0  # the most one customer's gradient may weigh in a step (L2)
    customers_per_step: int = 64  # expected customers per step (Poisson sampling makes it vary); DP wants many
    noise_multiplier: float | None = None  # set: this noise instead of the one the target epsilon needs (tests: 0)
    noise_seed: int | None = None  # None: from the OS, as the guarantee needs; a seed only for tests and benchmarks


@dataclass
class PrivacySpent:
    """What the accountant says a finished run spent; recorded in the run and the adapter's manifest."""

    epsilon: float | None  # None: no guarantee (noise 0)
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    customers: int
    customers_per_step: int
    accountant: str = ACCOUNTANT
    unit: str = "customer"

    def as_dict(self) -> dict:
        return asdict(self)


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float | None:
    """The epsilon at `delta` after `steps` Poisson-sampled steps of the Gaussian mechanism; None without noise."""
    from opacus.accountants import create_accountant

    if noise_multiplier <= 0 or steps == 0:
        return None if steps else 0.0
    accountant = create_accountant(mechanism=ACCOUNTANT)
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta=delta))


def noise_for(privacy: PrivacyConfig, sample_rate: float, steps: int) -> float:
    """The noise multiplier the run uses: the one given, else the smallest that keeps epsilon at the target."""
    from opacus.accountants.utils import get_noise_multiplier

    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    if privacy.epsilon is None:
        raise InputError("differential privacy needs a target epsilon (HOUSESTYLE_TRAIN_DP_EPSILON) or a noise level")
    with warnings.catch_warnings():  # PRV's search passes through RDP orders that warn; the result is PRV's
        warnings.simplefilter("ignore")
        return float(get_noise_multiplier(target_epsilon=privacy.epsilon, target_delta=privacy.delta,
                                          sample_rate=sample_rate, steps=steps, accountant=ACCOUNTANT))


def check_privacy(privacy: PrivacyConfig, customers: int) -> None:
    """One-line refusals for settings that would make the guarantee empty or the run impossible."""
    if privacy.epsilon is not None and privacy.epsilon <= 0:
        raise InputError(f"HOUSESTYLE_TRAIN_DP_EPSILON must be above 0, not {privacy.epsilon:g}")
    if not 0 < privacy.delta < 1 / max(customers, 1):
        raise InputError(f"HOUSESTYLE_TRAIN_DP_DELTA {privacy.delta:g} must be above 0 and below 1 / customers "
                         f"(1/{customers}): a larger delta lets one customer's data through outright")
    if privacy.max_grad_norm <= 0 or privacy.customers_per_step < 1:
        raise InputError("HOUSESTYLE_TRAIN_DP_MAX_GRAD_NORM and the customers per step must be above 0")


def customer_row(examples: list[Example], row_length: int, rng: random.Random) -> list[Example]:
    """One row's worth of a customer's conversations, drawn at random: the most one customer adds to a step."""
    order = list(examples)
    rng.shuffle(order)
    row, used = [], 0
    for example in order:
        if used + len(example.input_ids) <= row_length:
            row.append(example)
            used += len(example.input_ids)
    return row or [Example(order[0].input_ids[:row_length], order[0].targets[:row_length])]


def row_losses(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Each row's mean loss over its targets (one customer per row), shape [rows]."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    hidden = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).last_hidden_state
    keep = batch.targets != IGNORE
    rows = keep.nonzero()[:, 0]
    token_loss = F.cross_entropy(head(hidden[keep]).float(), batch.targets[keep], reduction="none")
    sums = torch.zeros(batch.targets.shape[0], device=token_loss.device).index_add(0, rows, token_loss)
    return sums / keep.sum(dim=1).clamp(min=1)


class PrivateFitter:
    """Owns the Opacus-wrapped model and the DP optimiser; `fit` trains on customers' examples."""

    def __init__(self, model: torch.nn.Module, config: FitConfig, privacy: PrivacyConfig, world: World) -> None:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        if world.size > 1:
            raise InputError("differentially private training runs in one process; start it without torchrun")
        self.config, self.privacy, self.world = config, privacy, world
        self.model = model.to(world.device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        seed = privacy.noise_seed if privacy.noise_seed is not None else secrets.randbits(63)
        self.rng = random.Random(seed)
        generator = torch.Generator(device=world.device)
        generator.manual_seed(seed)
        # loss_reduction "sum": each row's gradient is exactly its own mean loss's; the division by the expected
        # batch happens in `step`, once, whatever the micro-batches
        self.wrapped = GradSampleModule(self.model, batch_first=True, loss_reduction="sum", strict=True)
        self.optimizer = DPOptimizer(
            torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99)),
            noise_multiplier=0.0, max_grad_norm=privacy.max_grad_norm, expected_batch_size=privacy.customers_per_step,
            loss_reduction="sum", generator=generator,
        )

    def gradients(self, rows: list[list[Example]]) -> float:
        """Per-customer gradients of `rows` (one customer each) into Opacus's grad_sample; their summed loss."""
        if not rows:  # an empty Poisson batch still takes a (pure noise) step: skipping it would change the accounting
            for parameter in self.trainable:
                parameter.grad_sample = torch.zeros((0, *parameter.shape), device=parameter.device,
                                                    dtype=parameter.dtype)
            return 0.0
        total = 0.0
        size = self.config.micro_batch_size or len(rows)
        for start in range(0, len(rows), size):
            micro = rows[start : start + size]
            # as wide as its longest row, not row_length: one customer rarely fills a row, and padding costs
            width = max(sum(len(example.input_ids) for example in row) for row in micro)
            batch = collate_packed(micro, width).to(self.world.device)
            with self.world.autocast():
                loss = row_losses(self.model, batch).sum()
            with warnings.catch_warnings():  # Opacus's hooks on layers whose inputs are frozen: expected, harmless
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
            total += loss.item()
        return total

    def step(self, lr: float) -> None:
        """Clip each customer's gradient, add the noise, average over the expected batch, update."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.pre_step()
        for parameter in self.trainable:
            parameter.grad /= self.privacy.customers_per_step
        self.optimizer.original_optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def fit(self, customers: list[list[Example]], validation: list[Example] | None = None
            ) -> tuple[FitResult, PrivacySpent]:
        config, privacy = self.config, self.privacy
        check_privacy(privacy, len(customers))
        sample_rate = min(1.0, privacy.customers_per_step / len(customers))
        steps_per_epoch = math.ceil(len(customers) / privacy.customers_per_step)
        total_steps = steps_per_epoch * config.epochs
        noise = noise_for(privacy, sample_rate, total_steps)
        self.optimizer.noise_multiplier = noise
        # DP takes few, large steps (a batch is dozens of customers): a warm-up sized for small batches would
        # cover most of the run, so it is capped at a tenth of it
        config = replace(config, warmup_steps=min(config.warmup_steps, max(1, total_steps // 10)))
        history: list[dict[str, float]] = []
        tokens, step, train_loss = 0, 0, math.nan
        started = time.perf_counter()
        self.model.train()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=progress_console) as progress:
            task = progress.add_task(config.description, total=total_steps, status=f"noise {noise:.2f}")
            for epoch in range(1, config.epochs + 1):
                loss_sum, rows_seen = 0.0, 0
                for _ in range(steps_per_epoch):
                    chosen = [c for c in customers if self.rng.random() < sample_rate]
                    rows = [customer_row(examples, config.row_length, self.rng) for examples in chosen]
                    loss_sum += self.gradients(rows)
                    rows_seen += len(rows)
                    tokens += sum(len(e.input_ids) for row in rows for e in row)
                    self.step(lr_at(step, total_steps, config))
                    step += 1
                    progress.update(task, advance=1, status=f"epoch {epoch} loss {loss_sum / max(rows_seen, 1):.3f} "
                                    f"noise {noise:.2f}")
                train_loss = loss_sum / max(rows_seen, 1)
                record = {"epoch": epoch, "train_loss": train_loss}
                if validation:
                    record["val_loss"] = evaluate_loss(self.model, validation, config, self.world)
                history.append(record)
        self.wrapped.remove_hooks()  # the plain PEFT model again: saved, scored and served like any other
        spent = PrivacySpent(epsilon=epsilon_spent(noise, sample_rate, step, privacy.delta), delta=privacy.delta,
                             noise_multiplier=noise, max_grad_norm=privacy.max_grad_norm, sample_rate=sample_rate,
                             steps=step, customers=len(customers), customers_per_step=privacy.customers_per_step)
        result = FitResult(train_loss=train_loss, val_loss=history[-1].get("val_loss") if history else None,
                           best_epoch=config.epochs, epochs_run=config.epochs, tokens=tokens,
                           seconds=time.perf_counter() - started, history=history)
        return result, spent
