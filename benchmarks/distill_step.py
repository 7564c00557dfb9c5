"""Where a distillation step's time goes: the teacher's pass, the student's update, with and without
the shared (frozen) encoder, at the default crops (4 x 128 px) under the CPU's autocast.

The per-lever "equal time" step counts in docs/distillation.md come from these figures: a step is a
teacher pass plus ``echo`` student updates (plus loading and the weight average, a few per cent).

    python benchmarks/distill_step.py --teacher RUNS/vintage/G_A2B.safetensors [--ngf 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from cgdistill.device import cpu_has_fast_bf16
from cgdistill.nets import ResnetGenerator
from cgdistill.weights import load_generator


def median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--ngf", type=int, default=None, help="student width (default: the teacher's)")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    teacher, _ = load_generator(args.teacher)
    teacher.eval().requires_grad_(False)
    student = ResnetGenerator(replace(teacher.config, blocks=args.blocks, ngf=args.ngf or teacher.config.ngf))
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-4)
    x = torch.rand(args.batch, 3, args.side, args.side) * 2 - 1
    dtype = torch.bfloat16 if cpu_has_fast_bf16() else None

    def autocast():
        return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)

    with torch.no_grad(), autocast():
        encoded = teacher.encode(x)

    def teacher_pass() -> None:
        with torch.no_grad(), autocast():
            teacher(x, return_features=True)

    def update(inputs: torch.Tensor, shared: bool) -> None:
        with autocast():
            out, features = student(inputs, return_features=True, encoded=shared)
            loss = out.float().abs().mean() + sum(f.float().square().mean() for f in features)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    figures = {
        "teacher pass": median_s(teacher_pass, args.repeats),
        "student update": median_s(lambda: update(x, False), args.repeats),
    }
    if student.config.ngf == teacher.config.ngf:
        student.stem.requires_grad_(False)
        student.down.requires_grad_(False)
        figures["student update, shared encoder"] = median_s(lambda: update(encoded, True), args.repeats)
    print(f"{torch.get_num_threads()} threads, autocast {dtype}, batch {args.batch} x {args.side} px")
    for name, seconds in figures.items():
        print(f"{name:32s} {seconds:.3f} s")


if __name__ == "__main__":
    main()
