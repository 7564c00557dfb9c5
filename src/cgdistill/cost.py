"""What a generator costs to run: compute counted in two conventions, and time measured on a device.

``count_macs`` is exact convolution arithmetic as ``torch.utils.flop_counter`` counts it (MACs =
FLOPs / 2; a transposed conv costs in_pixels x C_in x C_out x k^2); ``count_macs_paper`` counts every
conv, transposed ones included, on its output grid, as the compression papers' tables do (49.55 G
and 56.8 G for the 9-block teacher at 256x256).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cgdistill.forward import use_channels_last
from cgdistill.nets import GeneratorConfig, ResnetGenerator


def _meta_generator(config: GeneratorConfig) -> ResnetGenerator:
    with torch.device("meta"):
        return ResnetGenerator(config)


def count_macs(config: GeneratorConfig, image_size: int) -> int:
    """Multiply-accumulates of one forward pass at ``image_size`` square, by conv arithmetic.

    Counted by ``torch.utils.flop_counter`` on the meta device (shapes only, no arithmetic runs).
    """
    model = _meta_generator(config)
    x = torch.empty(1, config.in_channels, image_size, image_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def count_macs_paper(config: GeneratorConfig, image_size: int) -> int:
    """MACs with every conv counted on its output grid: out_pixels x C_out x C_in/groups x k^2.

    For a plain conv this is the exact count; a stride-2 transposed conv is charged four times its
    real cost. This is the convention of the published tables (56.8 G for the CycleGAN teacher).
    """
    model = _meta_generator(config)
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = math.prod(module.kernel_size)
        in_per_group = module.in_channels // module.groups
        total += output.numel() * in_per_group * kernel

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    try:
        model(torch.empty(1, config.in_channels, image_size, image_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return total


# ---------------------------------------------------------------------------------------------
# Speed


@dataclass
class Speed:
    """One model's measured speed on one device."""

    latency_ms: float  # median batch-1 forward time
    throughput_ips: float  # images per second at ``batch``
    batch: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def default_throughput_batch(device: torch.device) -> int:
    """The batch throughput is timed at: large enough to fill a GPU, small enough for a CPU's memory."""
    return 16 if device.type == "cuda" else 4


Clock = Callable[[], float]


def sample_ms(
    models: Mapping[str, Callable[[torch.Tensor], object]],
    x: torch.Tensor,
    *,
    repeats: int,
    warmup: int = 1,
    rounds: int = 2,
    clock: Clock = time.perf_counter,
) -> dict[str, list[list[float]]]:
    """Wall time of each timed call of ``model(x)``, in milliseconds, block by block: each model timed in
    blocks of its own, one block a round.

    A block is ``warmup`` untimed calls, then timed ones: no timed call pays for what the model before
    it left behind (another engine's threads still spinning, caches full of another network's
    weights), which is what timing models in alternating single turns charged them
    (docs/benchmarks.md, "The timing loop"). The ``repeats`` timed calls per model are spread over
    ``rounds`` rounds with the order of the models reversed every round, so a spell of load from
    another process falls on all of them. ``clock`` is read around each timed call (seconds).
    """
    rounds = max(1, min(rounds, repeats))
    per_block = -(-repeats // rounds)
    names = list(models)
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    with torch.inference_mode():
        for turn in range(rounds):
            for name in names if turn % 2 == 0 else reversed(names):
                model, block = models[name], []
                for _ in range(warmup):
                    model(x)
                _sync(x.device)
                for _ in range(per_block):
                    start = clock()
                    model(x)
                    _sync(x.device)
                    block.append((clock() - start) * 1000.0)
                times[name].append(block)
    return times


def median_ms(
    models: Mapping[str, Callable[[torch.Tensor], object]],
    x: torch.Tensor,
    *,
    repeats: int,
    warmup: int = 1,
    rounds: int = 2,
    clock: Clock = time.perf_counter,
) -> dict[str, float]:
    """Median wall time of ``model(x)`` for each model, in milliseconds (:func:`sample_ms`): the one timing
    loop of ``compare``, ``translate --engine auto`` and the latency benchmarks."""
    return medians_ms(sample_ms(models, x, repeats=repeats, warmup=warmup, rounds=rounds, clock=clock))


def medians_ms(samples: Mapping[str, list[list[float]]]) -> dict[str, float]:
    """Each model's median over all its blocks of :func:`sample_ms`: for callers that also look at the rounds."""
    return {name: statistics.median(value for block in blocks for value in block) for name, blocks in samples.items()}


def measure_speed(
    models: dict[str, nn.Module],
    image_size: int,
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 7,
    throughput_batch: int | None = None,
    throughput_repeats: int = 3,
) -> dict[str, Speed]:
    """Batch-1 latency and larger-batch throughput of each model (:func:`median_ms`).

    Models must already be prepared for ``device`` and run as they are: an engine's model carries its
    precision (``engines.torch_model``, ``engines.Autocast``).
    """
    batch = throughput_batch or default_throughput_batch(device)
    fmt = torch.channels_last if use_channels_last(device) else torch.contiguous_format

    def make(n: int) -> torch.Tensor:
        return torch.rand(n, 3, image_size, image_size, device=device).mul_(2).sub_(1).contiguous(memory_format=fmt)

    single, many = make(1), make(batch)
    latency = median_ms(models, single, repeats=repeats, warmup=warmup)
    per_batch = median_ms(models, many, repeats=throughput_repeats, warmup=1, rounds=1)
    return {
        name: Speed(
            latency_ms=latency[name],
            throughput_ips=batch / (per_batch[name] / 1000.0),
            batch=batch,
        )
        for name in models
    }
