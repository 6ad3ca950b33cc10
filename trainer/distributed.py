"""Where training runs: one device, or one process of a torchrun group (DDP; gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from core.settings import Settings
from trainer import IDLE_THREADS_SLEEP


@dataclass
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process saves, registers and prints results."""
        return self.rank == 0

    @property
    def uses_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on GPUs; plain fp32 on CPU, where bf16 is slow and gains nothing for models this size."""
        if self.uses_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.size == 1:
            return model
        device_ids = [self.device.index] if self.uses_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def broadcast_text(self, text: str | None) -> str:
        """The main process's string, on every process (e.g. the version id or an error)."""
        if self.size == 1:
            return text or ""
        holder = [text]
        dist.broadcast_object_list(holder, src=0)
        return holder[0] or ""


def current_world(settings: Settings) -> World:
    """The world torchrun describes in the environment (initialising the process group once), else one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        use_cpu_threads(settings.cpu_threads)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return World(rank=rank, size=size, device=device)


def cpu_thread_count(setting: int) -> int:
    """HOUSESTYLE_CPU_THREADS, where 0 means one per core, but one alone if idle threads would spin (see trainer)."""
    if setting > 0:
        return setting
    return len(os.sched_getaffinity(0)) if IDLE_THREADS_SLEEP else 1


def use_cpu_threads(setting: int) -> None:
    """Apply HOUSESTYLE_CPU_THREADS to torch's intra-op threads."""
    threads = cpu_thread_count(setting)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
