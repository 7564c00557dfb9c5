"""Batch-1 latency of the teacher and every student preset on every inference engine, and the older
teacher-vs-student comparison of ways to run one network in PyTorch.

Usage:
  .venv/bin/python benchmarks/latency.py [--size 256] [--repeats 9] [--threads N] [--extra "3,32,standard;..."]
  .venv/bin/python benchmarks/latency.py --variants eager,channels-last,frozen[,compile]

The default table: the CycleGAN teacher (9 blocks, ngf 64) and each `distill --preset` for that
teacher, on each engine available here (torch fp32; torch bf16 autocast where the CPU has native
bf16; onnxruntime fp32 when the onnx extra is installed), all timed by ``cost.median_ms``, the loop
compare and ``translate --engine auto`` use: each model on each engine in blocks of its own after its
own warm-up, the order reversed each round, so that no model pays for the one before it and load
from other processes falls on all alike.
Models are randomly initialised: speed does not depend on the weights. ``--extra`` adds shapes
(blocks,ngf,block[,ends]) to the table.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import warnings
from collections.abc import Callable

import torch
from torch import nn

from cgdistill.cost import count_macs, median_ms
from cgdistill.device import cpu_name
from cgdistill.engines import available_engines
from cgdistill.nets import GeneratorConfig, ResnetGenerator, count_parameters
from cgdistill.train.presets import PRESETS, preset_generator

TEACHER = GeneratorConfig(blocks=9, ngf=64)

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


def measure(variants: list[str], size: int, repeats: int, warmup: int, rounds: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    teacher = ResnetGenerator(GeneratorConfig(blocks=9)).eval().requires_grad_(False)
    student = ResnetGenerator(GeneratorConfig(blocks=3)).eval().requires_grad_(False)
    x = torch.rand(1, 3, size, size) * 2 - 1
    runners = {}
    for name in variants:
        for role, network in (("teacher", teacher), ("student", student)):
            model, inp = VARIANTS[name](network, x)
            runners[f"{name}|{role}"] = lambda _x, model=model, inp=inp: model(inp)  # each variant its own input layout
    ms = median_ms(runners, x, repeats=repeats, warmup=warmup, rounds=rounds)
    out: dict[str, dict[str, float]] = {}
    for name in variants:
        t, s = ms[f"{name}|teacher"], ms[f"{name}|student"]
        out[name] = {"teacher_ms": t, "student_ms": s, "ratio": t / s}
    return out


def preset_rows(extra: str) -> dict[str, GeneratorConfig]:
    rows = {"teacher (9 blocks, ngf 64)": TEACHER}
    for name, preset in PRESETS.items():
        config = preset_generator(preset, TEACHER)
        ends = "" if config.ends == "full" else f", {config.ends}-resolution ends"
        rows[f"{name} ({preset.blocks} {preset.block}, ngf {config.ngf}{ends})"] = config
    for item in filter(None, (part.strip() for part in extra.split(";"))):
        blocks, ngf, block, *ends = item.split(",")  # ends: full (default) or half
        config = GeneratorConfig(blocks=int(blocks), ngf=int(ngf), block=block, ends=ends[0] if ends else "full")
        rows[f"{blocks} {block}, ngf {ngf}, {config.ends} ends"] = config
    return rows


def engine_table(rows: dict[str, GeneratorConfig], size: int, repeats: int, warmup: int, rounds: int) -> None:
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    runners: dict[str, nn.Module] = {}
    engines: list[str] = []
    for label, config in rows.items():
        for engine, module in available_engines(ResnetGenerator(config), cpu).items():
            runners[f"{label}|{engine}"] = module
            if engine not in engines:
                engines.append(engine)
    x = torch.rand(1, 3, size, size) * 2 - 1
    ms = median_ms(runners, x, repeats=repeats, warmup=warmup, rounds=rounds)
    teacher = next(iter(rows))
    header = "| generator | params | MACs | " + " | ".join(f"{e} ms (img/s, speed-up)" for e in engines) + " |"
    print(header)
    print("|---|---:|---:|" + "---:|" * len(engines))
    for label, config in rows.items():
        cells = []
        for engine in engines:
            value = ms[f"{label}|{engine}"]
            ratio = ms[f"{teacher}|{engine}"] / value
            cells.append(f"{value:.1f} ({1000 / value:.1f}, {ratio:.1f}x)")
        params = count_parameters(ResnetGenerator(config))
        print(
            f"| {label} | {params / 1e6:.2f} M | {count_macs(config, size) / 1e9:.2f} G | " + " | ".join(cells) + " |"
        )


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each block")
    parser.add_argument(
        "--rounds", type=int, default=3, help="blocks per model; --repeats timed calls spread over them"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--extra", default="", help='more student shapes, "blocks,ngf,block[,ends];..."')
    parser.add_argument("--variants", default="", help="instead: teacher vs default student, ways to run torch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load: {uptime()}")
    if not args.variants:
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}, {args.size}x{args.size}, batch 1, median of {args.repeats} "
            f"timed calls in {args.rounds} rounds of blocks (cost.median_ms)"
        )
        engine_table(preset_rows(args.extra), args.size, args.repeats, args.warmup, args.rounds)
        print(f"load after: {uptime()}")
        return
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
    for name, row in measure(variants, args.size, args.repeats, args.warmup, args.rounds).items():
        print(f"{name:15s} {row['teacher_ms']:11.1f} {row['student_ms']:11.1f} {row['ratio']:8.2f}x")
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    main()
