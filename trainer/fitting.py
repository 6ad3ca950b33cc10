"""Fitting a model, nanoGPT style: packed batches in, AdamW steps, a validation pass per epoch, early stop.

Used for both the tiny base's pre-training (all parameters) and LoRA fine-tuning (only the adapter's parameters
require grad). Runs on one device, or under torchrun as DDP (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trainer.data import IGNORE, Batch, Example, packed_batches
from trainer.distributed import World

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


@dataclass
class FitResult:
    train_loss: float
    val_loss: float | None
    best_epoch: int
    epochs_run: int
    tokens: int  # real (non-pad) tokens processed
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def packed_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's targets, and how many targets there were."""
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    loss = F.cross_entropy(
        logits.float().view(-1, logits.size(-1)), batch.targets.view(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((batch.targets != IGNORE).sum())


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, examples: list[Example], config: FitConfig, world: World) -> float:
    """Token-weighted mean loss over `examples`, summed across all processes."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64)
    for batch in packed_batches(examples, config.row_length, config.batch_size, seed=0, rank=world.rank,
                                world_size=world.size):
        with world.autocast():
            loss, n = packed_loss(model, batch.to(world.device))
        total[0] += float(loss)
        total[1] += n
    model.train()
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
        self.step_model = self.world.wrap(self.model)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay,
                                           betas=(0.9, 0.99))

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
                    with world.autocast():
                        loss, n = packed_loss(self.step_model, batch)
                    (loss / max(n, 1)).backward()
                    torch.nn.utils.clip_grad_norm_(self.trainable, config.grad_clip)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    step += 1
                    tokens += batch.real_tokens * world.size
                    loss_sum, target_sum = loss_sum + loss.item(), target_sum + n
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

