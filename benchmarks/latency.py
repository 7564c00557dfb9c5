"""Teacher vs student batch-1 latency at 256x256, for several ways of running the same network.

Usage: .venv/bin/python benchmarks/latency.py [--size 256] [--repeats 9] [--threads N] [--variants eager,channels-last,frozen]

Both models run in alternating turns (teacher, student, teacher, ...) so that load from other
processes on a shared machine slows both alike; the ratio is the figure to trust, the absolute
times only on an idle machine. Models are randomly initialised (speed does not depend on weights):
the CycleGAN teacher (9 blocks, ngf 64) and the default student (3 blocks).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from cgdistill.evaluate import count_macs
from cgdistill.nets import GeneratorConfig, ResnetGenerator

Variant = Callable[[nn.Module, torch.Tensor], tuple[nn.Module, torch.Tensor]]


def eager(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    return model, x.contiguous()


def channels_last(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    return copy.deepcopy(model).to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)


def frozen(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """TorchScript trace, freeze and optimize_for_inference: oneDNN layouts and conv+ReLU style fusions."""
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", FutureWarning)  # the TorchScript APIs are deprecated in torch 2.x
        traced = torch.jit.trace(copy.deepcopy(model), x, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval())), x


def compiled(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """torch.compile (inductor's C++ backend): fuses the memory-bound norm/ReLU/pad ops at full resolution."""
    return torch.compile(copy.deepcopy(model), dynamic=False), x


VARIANTS: dict[str, Variant] = {
    "eager": eager,
    "channels-last": channels_last,
    "frozen": frozen,
    "compile": compiled,
}


def measure(variants: list[str], size: int, repeats: int, warmup: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    teacher = ResnetGenerator(GeneratorConfig(blocks=9)).eval().requires_grad_(False)
    student = ResnetGenerator(GeneratorConfig(blocks=3)).eval().requires_grad_(False)
    x = torch.rand(1, 3, size, size) * 2 - 1
    runners = {}
    for name in variants:
        runners[(name, "teacher")] = VARIANTS[name](teacher, x)
        runners[(name, "student")] = VARIANTS[name](student, x)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    with torch.inference_mode():
        for _ in range(warmup):
            for model, inp in runners.values():
                model(inp)
        for _ in range(repeats):
            for key, (model, inp) in runners.items():
                start = time.perf_counter()
                model(inp)
                times[key].append(time.perf_counter() - start)
    out: dict[str, dict[str, float]] = {}
    for name in variants:
        t = statistics.median(times[(name, "teacher")]) * 1000
        s = statistics.median(times[(name, "student")]) * 1000
        out[name] = {"teacher_ms": t, "student_ms": s, "ratio": t / s}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--variants", default="eager,channels-last,frozen")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    mac_ratio = count_macs(GeneratorConfig(blocks=9), args.size) / count_macs(GeneratorConfig(blocks=3), args.size)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size}x{args.size}, batch 1, "
        f"median of {args.repeats}; MAC ratio {mac_ratio:.2f}x"
    )
    print(f"{'variant':15s} {'teacher ms':>11s} {'student ms':>11s} {'speed-up':>9s}")
    for name, row in measure(variants, args.size, args.repeats, args.warmup).items():
        print(f"{name:15s} {row['teacher_ms']:11.1f} {row['student_ms']:11.1f} {row['ratio']:8.2f}x")


if __name__ == "__main__":
    main()
