"""Processes started by ``torchrun``: which one this is, its device, the process group, and gathering
small results on every rank.

Training (DDP) and ``translate`` on several processes share these; launched without torchrun,
every function here describes a single process and does nothing collective.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from cgdistill.device import pick_device
from cgdistill.errors import CgdistillError

T = TypeVar("T")


def torchrun_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0"))


def process_device(device_spec: str) -> torch.device:
    """This process's device: under torchrun, ``auto`` and ``cuda`` give each rank ``cuda:<LOCAL_RANK>``."""
    _, world_size, local_rank = torchrun_ranks()
    if world_size <= 1:
        return pick_device(device_spec)
    device = pick_device(device_spec, local_rank=local_rank)
    on_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type == "cuda" and ":" in device_spec and on_node > 1:
        raise CgdistillError(
            f"--device {device_spec} would put all {on_node} processes torchrun started on this machine on one GPU; "
            "use --device cuda (each process then takes cuda:<LOCAL_RANK>)."
        )
    return device


def join_process_group(device_spec: str, device: torch.device | None = None) -> tuple[int, int, int]:
    """Join torchrun's process group (once; later calls only read it); returns (rank, world size, local rank).

    NCCL where the work runs on CUDA (``device``, else what ``device_spec`` gives this process), gloo
    otherwise. Launched without torchrun this is a single process: (0, 1, 0).
    """
    rank, world_size, local_rank = torchrun_ranks()
    if world_size > 1 and not dist.is_initialized():
        device = device or process_device(device_spec)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL collectives run on the current device
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, local_rank


def gather(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` in a single process).

    For the small summaries a command prints once: file lists, counts, sentences. Objects travel
    between this command's own processes only (torch's object collectives), never through a file.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    values: list[T | None] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values  # type: ignore[return-value]


def from_main(compute: Callable[[], T]) -> T:
    """The value ``compute()`` gives on rank 0, on every rank (computed on rank 0 only; a single process
    computes it). For a choice every process must share: the engine ``auto`` picked, say."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return compute()
    value = [compute() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(value, src=0)
    return value[0]  # type: ignore[return-value]


def is_main_process() -> bool:
    """Whether this process speaks for the command: rank 0 under torchrun, and any process launched alone."""
    return torchrun_ranks()[0] == 0


def leave_process_group() -> None:
    """Leave the process group a command joined (a no-op when it did not)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
