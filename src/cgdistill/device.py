"""Turning ``--device auto|cpu|cuda|cuda:N|mps`` into a ``torch.device``, with one-sentence errors; and the
precision each device runs natively (:func:`native_amp_dtype`), the one answer training's default
autocast (``train.runtime.choose_amp_dtype``) and inference's engines (``engines``) both ask; and the
names reports give a device (:func:`describe`, :func:`cpu_name`)."""

from __future__ import annotations

import os
import platform
import re
import subprocess

import torch

from cgdistill.errors import CgdistillError
from cgdistill.options import DEVICE_HELP

# bf16 tensor cores arrived with Ampere (compute capability 8.0); older cards emulate bf16 slowly.
NATIVE_BF16_CAPABILITY = (8, 0)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(spec: str | None = "auto", *, local_rank: int | None = None) -> torch.device:
    """The device ``spec`` names; ``auto`` prefers CUDA, then MPS, then the CPU.

    A CUDA device always comes with its index (``cuda:N``, never a bare ``cuda``: ``set_device``,
    DDP and NCCL need one). ``auto`` and ``cuda`` mean the current GPU, or under torchrun (when
    ``local_rank`` is given) the GPU ``cuda:<local_rank>``, one per process on the node.

    Asking for an accelerator that is not there is a user error (exit 2), not a silent CPU fallback:
    a user who typed ``cuda`` wants to know their GPU is not being used.
    """
    text = (spec or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return _cuda_device(spec, None, local_rank)
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
        return _cuda_device(spec, int(index_text) if index_text else None, local_rank)
    raise CgdistillError(f"Device {spec!r} is not valid; use {DEVICE_HELP}")


def _cuda_device(spec: str | None, index: int | None, local_rank: int | None) -> torch.device:
    """``cuda:index``; without an index, the local rank's GPU under torchrun, else the current one."""
    count = torch.cuda.device_count()
    if index is None and local_rank is not None:
        if local_rank >= count:
            raise CgdistillError(
                f"torchrun started local rank {local_rank}, but this machine has {count} CUDA GPU(s); "
                f"use --nproc_per_node {count} or fewer."
            )
        index = local_rank
    if index is None:
        index = torch.cuda.current_device()
    if index >= count:
        raise CgdistillError(
            f"Device {spec!r} does not exist: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}."
        )
    return torch.device("cuda", index)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True on GPUs with bf16 tensor cores (compute capability 8.0 and up: A100, H100, RTX 30xx...).

    Not ``torch.cuda.is_bf16_supported()``: by default it also counts GPUs that merely emulate
    bf16 (V100, T4), where bf16 is slower than fp32; fp16 with loss scaling is the fast choice there.
    """
    return torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY


def cuda_amp_dtype(device: torch.device) -> torch.dtype:
    """The half precision a CUDA GPU runs natively: bf16 from Ampere on, else fp16."""
    return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16 units, where bf16 convolutions beat fp32.

    Elsewhere (e.g. AVX2 only) bf16 is emulated: a teacher step under bf16 autocast was ~40x
    slower than fp32 on our AVX2 build machine, so autocast stays off there by default.
    """
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        supported = getattr(torch.cpu, probe, None)
        if supported is not None and supported():
            return True
    return False


def native_amp_dtype(device: torch.device) -> torch.dtype | None:
    """The half precision ``device`` runs natively, or None where only full precision is fast.

    bf16 on Ampere and newer GPUs, fp16 on older ones (:func:`cuda_amp_dtype`); bf16 on CPUs with
    AMX or AVX512-BF16 (:func:`cpu_has_fast_bf16`); None on other CPUs and on MPS. Training runs
    under this autocast by default; inference on CUDA always does, on the CPU only where the
    bf16 output also passes the fidelity probe (``engines.torch_engine``).
    """
    if device.type == "cuda":
        return cuda_amp_dtype(device)
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def describe(device: torch.device) -> str:
    """A short human name for reports: ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        from cgdistill import threads

        following = ", more or fewer as the load changes" if threads.adapting() else ""
        return f"cpu ({torch.get_num_threads()} threads{following})"
    return str(device)


def cpu_name() -> str:
    """The CPU's model name as ``lscpu`` states it (``Intel(R) Xeon(R) Processor``), for the benchmarks'
    reports: a speed means little without the machine. The platform's own word where ``lscpu`` is missing."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    match = re.search(r"^Model name:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or platform.machine() or "?"


def available_memory(device: torch.device) -> int:
    """Memory free for tensors now: MemAvailable on the CPU (/proc/meminfo), the free CUDA memory on a GPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30  # no /proc (macOS, Windows): assume a modest machine


def memory_in_use(device: torch.device) -> int:
    """What this process already holds where the tensors go: resident memory, or allocated CUDA memory."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096)
    except (OSError, ValueError, IndexError):
        return 0
