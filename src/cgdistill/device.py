"""Turning ``--device auto|cpu|cuda|cuda:N|mps`` into a ``torch.device``, with one-sentence errors."""

from __future__ import annotations

import torch

from cgdistill.errors import CgdistillError

DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(spec: str | None = "auto") -> torch.device:
    """The device ``spec`` names; ``auto`` prefers CUDA, then MPS, then the CPU.

    Asking for an accelerator that is not there is a user error (exit 2), not a silent CPU fallback:
    a user who typed ``cuda`` wants to know their GPU is not being used.
    """
    text = (spec or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise CgdistillError("Device 'mps' was requested but Apple MPS is not available here; use --device cpu.")
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise CgdistillError(f"Device {spec!r} is not valid; use {DEVICE_HELP}")
        if not torch.cuda.is_available():
            raise CgdistillError(f"Device {spec!r} was requested but no CUDA GPU is available; use --device cpu.")
        index = int(index_text) if index_text else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise CgdistillError(
                f"Device {spec!r} does not exist: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}."
            )
        return torch.device("cuda", index)
    raise CgdistillError(f"Device {spec!r} is not valid; use {DEVICE_HELP}")


def describe(device: torch.device) -> str:
    """A short human name for reports: ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)
