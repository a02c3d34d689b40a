"""Multi-process training under torchrun: process group set-up and the few collectives the
trainer needs. Without torchrun (no WORLD_SIZE, or 1) everything is a no-op."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar, cast

import torch
import torch.distributed as dist

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0)."""
    return world()[0] == 0


def setup(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes (nccl on CUDA, gloo on the CPU) once, and
    pick this process's GPU; return (rank, world size)."""
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return rank, size


def local_device(device: torch.device) -> torch.device:
    """The device of this process: its own GPU under torchrun, else `device`."""
    if device.type == "cuda" and world()[1] > 1 and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean(values: list[float], device: torch.device) -> list[float]:
    """Each value averaged over the processes (for logs of per-process losses)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _average(tensors: list[torch.Tensor]) -> None:
    """Average `tensors` in place over the processes, in one all-reduce."""
    if not _active() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of `params` over the processes. Parameters without a gradient
    keep none: every process ran the same branches (same Gumbel samples), so the optimiser
    skips the same ones as a single process would."""
    _average([p.grad for p in params if p.grad is not None])


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating buffers (BatchNorm running statistics) over the processes, so every
    process keeps the same model; each process's statistics come from its share of the batch."""
    _average([b for b in module.buffers() if b.is_floating_point()])


def from_main(make: Callable[[], T]) -> T:
    """`make()` run on rank 0 only, its result sent to every process (for work that must
    happen once, such as timing the machine)."""
    if not _active():
        return make()
    box: list[T | None] = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return cast(T, box[0])  # the broadcast filled every rank's box with rank 0's result
