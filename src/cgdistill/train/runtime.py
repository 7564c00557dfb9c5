"""Where and how a training job runs: device, mixed precision, channels-last, compile, DDP.

DDP follows torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); rank 0 alone writes
files and draws progress. Everything here is decided once, from the config, and logged.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from cgdistill import threads
from cgdistill.device import describe, native_amp_dtype
from cgdistill.errors import CgdistillError
from cgdistill.options import AMP_DTYPES
from cgdistill.processes import join_process_group, process_device
from cgdistill.train.config import TrainConfig

# --amp-dtype's choices (options.AMP_DTYPES) as torch dtypes.
TORCH_AMP_DTYPES = dict(zip(AMP_DTYPES, (torch.bfloat16, torch.float16), strict=True))


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    compile: bool
    fuse_passes: bool
    workers: int
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    compile_mode: str = "default"
    deterministic: bool = False
    scalers: dict[str, torch.amp.GradScaler] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        amp = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + grad scaling"}
        parts = [describe(self.device), amp[self.amp_dtype]]
        if self.channels_last:
            parts.append("channels-last")
        if self.compile:
            parts.append("torch.compile" + ("" if self.compile_mode == "default" else f" ({self.compile_mode})"))
        if self.deterministic:
            parts.append("deterministic")
        if self.distributed:
            parts.append(f"DDP x{self.world_size}")
        return ", ".join(parts)

    def autocast(self):
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, module: nn.Module, *, trainable: bool = True) -> nn.Module:
        """Move to the device and memory format; compile and wrap in DDP as configured."""
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.compile:
            # Static shapes: a step's shapes are few and fixed (batch, crop, the fused passes' 2x and
            # 3x batches), and each compiles once; evaluation and samples run uncompiled (eager()).
            module = torch.compile(module, dynamic=False, mode=self.compile_mode)
        if trainable and self.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # Buffers (batch-norm running stats only; instance norm has none) follow rank 0's.
            module = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
        return module

    def eager(self):
        """Run compiled modules as plain PyTorch for a while: samples, evaluation, probes.

        They run under ``no_grad``, in eval mode, at other sizes than the steps; compiled, each of
        them would cost one more compilation for code that runs a handful of times.
        """
        if not self.compile:
            return contextlib.nullcontext()
        return torch.compiler.set_stance("force_eager")

    def begin_step(self) -> None:
        """Tell CUDA graphs (``--compile-mode reduce-overhead``) that a new step starts, so that
        outputs of the last one may be overwritten."""
        if self.compile and self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        if self.device.type == "cpu":
            threads.tick()  # a clock read; every few seconds, a look at the load (no device sync)

    def synchronize(self) -> None:
        """Wait for the device's queued work (CUDA runs ahead of the host), so that a clock read after
        it times what the device did."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def from_main(self, count: int) -> int:
        """Rank 0's ``count`` on every rank (itself in a single process): a decision all ranks act on alike."""
        if not self.distributed:
            return count
        counted = torch.tensor([count], device=self.device)
        dist.broadcast(counted, src=0)
        return int(counted.item())

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def scaler(self, name: str) -> torch.amp.GradScaler | None:
        """A grad scaler per optimizer under fp16; None otherwise."""
        if self.amp_dtype != torch.float16:
            return None
        if name not in self.scalers:
            self.scalers[name] = torch.amp.GradScaler(self.device.type)
        return self.scalers[name]

    def step(self, name: str, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward ``loss`` and step ``optimizer``, with loss scaling under fp16."""
        optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler(name)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    @staticmethod
    def pack(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """A step's losses as one tensor on the device; reading it waits for the device, so the loop
        keeps these and reads them only at :meth:`all_reduce_losses_and_stop` (logging, checkpoints, samples)."""
        return torch.stack([value.detach().float().reshape(()) for value in losses.values()])

    def all_reduce_losses_and_stop(self, pending: list[torch.Tensor], stop: bool) -> tuple[list[list[float]], bool]:
        """The packed losses of the steps since the last call, averaged over ranks, and whether any rank
        was asked to stop: one all-reduce and one host sync for all of them.

        Every rank must leave the loop at the same step (a Ctrl-C reaches each process at its own
        moment), or one would wait in a collective that the other never joins; and a loss that is not
        finite on one rank is not finite in the average, so all ranks stop together.
        """
        history = torch.stack(pending)
        flag = torch.full((1,), float(stop), device=history.device)
        packed = torch.cat([history.flatten(), flag])
        if self.distributed:
            dist.all_reduce(packed)
            packed[:-1] /= self.world_size
        values = packed.tolist()
        width = history.shape[1]
        return [values[i * width : (i + 1) * width] for i in range(len(pending))], values[-1] > 0


def broadcast_from_main(value: bool) -> bool:
    """Rank 0's ``value`` on every rank (a no-op in a single process).

    For decisions about the run folder: rank 0 alone writes it, so its view is the one that counts,
    and every rank then acts alike (all refuse, or none does) instead of one waiting forever.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    flag = torch.tensor([int(value)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def choose_amp_dtype(amp: bool | None, requested: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision.

    ``amp`` None means on where the device runs a half precision natively (``device.native_amp_dtype``:
    CUDA, CPUs with bf16 units); naming a dtype (``requested``) turns it on too, unless ``amp`` is
    False. Unnamed, the dtype is the one the hardware runs natively: bf16 on Ampere and newer GPUs and
    on the CPU, fp16 (with loss scaling) on older GPUs; forced on elsewhere, bf16 on the CPU, else fp16.
    """
    named = TORCH_AMP_DTYPES[requested] if requested is not None else None
    native = native_amp_dtype(device)
    if amp is None:
        amp = requested is not None or native is not None
    if not amp:
        return None
    if named is not None:
        return named
    if native is not None:
        return native
    return torch.bfloat16 if device.type == "cpu" else torch.float16


def use_deterministic_algorithms() -> None:
    """Deterministic kernels for the rest of the process (``--deterministic``).

    cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` when it first sets up, so it is set before any CUDA
    work. ``warn_only``: PyTorch has no deterministic backward for ReflectionPad2d on CUDA (the
    published generator pads with it); that op warns instead of stopping the run.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def setup_runtime(config: TrainConfig) -> Runtime:
    """Decide device and precision from the config (``None`` fields take the device's best default)."""
    if config.deterministic:
        use_deterministic_algorithms()
    rank, world_size, local_rank = join_process_group(config.device)
    device = process_device(config.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not config.deterministic  # autotuning may pick other kernels each run
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device.type == "cpu":
        threads.configure(config.threads, follow_load=not config.deterministic)
    amp_dtype = choose_amp_dtype(config.amp, config.amp_dtype, device)
    channels_last = config.channels_last if config.channels_last is not None else cuda
    fuse_passes = config.fuse_passes_choice
    fuse = fuse_passes if fuse_passes is not None else cuda
    workers = config.workers if config.workers is not None else (4 if cuda else 0)
    compile_mode = config.compile_mode or "default"
    if compile_mode == "reduce-overhead" and not cuda:
        raise CgdistillError(
            f"--compile-mode reduce-overhead records CUDA graphs and needs a CUDA device, not {device}; "
            "use --compile alone."
        )
    return Runtime(
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        compile=config.compile or config.compile_mode is not None,
        compile_mode=compile_mode,
        deterministic=config.deterministic,
        fuse_passes=fuse,
        workers=workers,
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
    )


def teardown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
