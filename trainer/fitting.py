"""Fitting a model, nanoGPT style: packed batches in, AdamW steps, a validation pass per epoch, early stop.

Used for both the tiny base's pre-training (all parameters) and LoRA fine-tuning (only the adapter's parameters
require grad). Runs on one device, or under torchrun as DDP (gloo on CPU, NCCL on GPUs). A step's rows go through
in micro-batches whose gradients add up (accumulation), so memory follows the micro-batch, not the batch; the loss
never builds full-vocabulary logits (trainer.loss).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trainer.data import IGNORE, Batch, Example, packed_batches
from trainer.distributed import World
from trainer.loss import DEFAULT_CHUNK_TOKENS, CausalLMLoss, batch_loss

progress_console = Console(stderr=True)  # stdout is for results (the version id is its last line)


@dataclass
class FitConfig:
    lr: float
    epochs: int
    batch_size: int
    row_length: int
    seed: int = 0
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    patience: int | None = None  # epochs without a better validation loss before stopping; None: never stop early
    description: str = "training"
    micro_batch_size: int | None = None  # rows per forward/backward (a divisor of batch_size); None: batch_size
    loss_chunk_tokens: int = DEFAULT_CHUNK_TOKENS  # target tokens projected to the vocabulary at once


@dataclass
class FitResult:
    train_loss: float
    val_loss: float | None
    best_epoch: int
    epochs_run: int
    tokens: int  # real (non-pad) tokens processed
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    memory: dict[str, int | bool] = field(default_factory=dict)  # the memory plan and the peak measured

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def micro_batches(batch: Batch, size: int | None) -> list[Batch]:
    """The step's rows in groups of `size` (all of them when None)."""
    rows = batch.input_ids.shape[0]
    size = size or rows
    return [Batch(batch.input_ids[i : i + size], batch.position_ids[i : i + size], batch.targets[i : i + size],
                  0) for i in range(0, rows, size)]


def loss_module(model: torch.nn.Module, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.nn.Module:
    return model if isinstance(model, CausalLMLoss) else CausalLMLoss(model, chunk_tokens)


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, examples: list[Example], config: FitConfig, world: World) -> float:
    """Token-weighted mean loss over `examples`, summed across all processes."""
    loss_model = loss_module(model, config.loss_chunk_tokens)
    loss_model.eval()
    total = torch.zeros(2, dtype=torch.float64)
    for batch in packed_batches(examples, config.row_length, config.batch_size, seed=0, rank=world.rank,
                                world_size=world.size):
        for micro in micro_batches(batch.to(world.device), config.micro_batch_size):
            with world.autocast():
                loss, n = batch_loss(loss_model, micro)
            total[0] += float(loss)
            total[1] += n
    loss_model.train()
    if world.size > 1:
        dist.all_reduce(total)
    return float(total[0] / max(total[1], 1))


def lr_at(step: int, total_steps: int, config: FitConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


class Fitter:
    """Owns the optimiser; `fit` runs the epochs and leaves the model at its best validation loss."""

    def __init__(self, model: torch.nn.Module, config: FitConfig, world: World) -> None:
        self.world = world
        self.config = config
        self.model = model.to(self.world.device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.step_model = self.world.wrap(CausalLMLoss(self.model, config.loss_chunk_tokens))
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay,
                                           betas=(0.9, 0.99))

    def _accumulate(self, batch: Batch) -> tuple[float, int]:
        """Forward and backward each micro-batch; gradients add up to the whole step's mean-loss gradient."""
        targets = int((batch.targets != IGNORE).sum())
        pieces = micro_batches(batch, self.config.micro_batch_size)
        total = 0.0
        for index, micro in enumerate(pieces):
            last = index == len(pieces) - 1
            # DDP all-reduces gradients after the last micro-batch only
            sync = contextlib.nullcontext() if last or self.world.size == 1 else self.step_model.no_sync()
            with sync:
                with self.world.autocast():
                    loss, _ = batch_loss(self.step_model, micro)
                (loss / max(targets, 1)).backward()
            total += loss.item()
        return total, targets

    def fit(self, train: list[Example], validation: list[Example] | None = None) -> FitResult:
        config, world = self.config, self.world
        torch.manual_seed(config.seed)
        steps_per_epoch = len(packed_batches(train, config.row_length, config.batch_size, seed=config.seed,
                                             rank=world.rank, world_size=world.size))
        total_steps = steps_per_epoch * config.epochs
        best_val, best_epoch, best_state, stale = math.inf, 0, None, 0
        history: list[dict[str, float]] = []
        tokens, step, train_loss, epoch = 0, 0, math.nan, 0
        started = time.perf_counter()
        self.step_model.train()
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), console=progress_console, disable=not world.is_main, transient=False,
        ) as progress:
            task = progress.add_task(config.description, total=total_steps, status="")
            for epoch in range(1, config.epochs + 1):
                loss_sum, target_sum = 0.0, 0
                for batch in packed_batches(train, config.row_length, config.batch_size, seed=config.seed + epoch,
                                            rank=world.rank, world_size=world.size):
                    batch = batch.to(world.device)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr_at(step, total_steps, config)
                    loss, n = self._accumulate(batch)
                    torch.nn.utils.clip_grad_norm_(self.trainable, config.grad_clip)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    step += 1
                    tokens += batch.real_tokens * world.size
                    loss_sum, target_sum = loss_sum + loss, target_sum + n
                    elapsed = time.perf_counter() - started
                    progress.update(task, advance=1, status=f"epoch {epoch} loss {loss_sum / max(target_sum, 1):.3f} "
                                    f"{tokens / elapsed:,.0f} tok/s")
                train_loss = loss_sum / max(target_sum, 1)
                record = {"epoch": epoch, "train_loss": train_loss}
                if validation:
                    val_loss = evaluate_loss(self.model, validation, config, world)
                    record["val_loss"] = val_loss
                    if val_loss < best_val:
                        best_val, best_epoch, stale = val_loss, epoch, 0
                        best_state = {id(p): p.detach().clone() for p in self.trainable}
                    else:
                        stale += 1
                history.append(record)
                if config.patience is not None and stale > config.patience:
                    break
            progress.update(task, total=step, completed=step)  # epochs pack into slightly different step counts
        if best_state is not None and best_epoch != epoch:
            with torch.no_grad():
                for parameter in self.trainable:
                    parameter.copy_(best_state[id(parameter)])
        return FitResult(
            train_loss=train_loss,
            val_loss=best_val if validation else None,
            best_epoch=best_epoch or epoch,
            epochs_run=epoch,
            tokens=tokens,
            seconds=time.perf_counter() - started,
            history=history,
        )

