"""Training steps per second of the CycleGAN teacher (and the distilled student) on this device.

Usage: .venv/bin/python benchmarks/train_speed.py [--sizes 128 256] [--variants default,fused,unfused]
       [--warmup N --iters N] [--threads N] [--device auto] [--json] [--profile N]

Each variant runs the real recipe's ``train_step`` (both generator and both discriminator updates,
image pools included) on random tensors, so there is no disk I/O or decoding. Like the reference
figure (the authors' implementation: 1.45 s/iteration at 128 px, batch 1, ResNet-9 / PatchGAN,
fp32, on a 2-core machine of this kind), the time per iteration is the slope of wall time between
the end of the warm-up and the last timed iteration: 20 warm-up + 40 timed at 128 px, and 3 + 8 at
256 px and above, to keep the run short (``--warmup``/``--iters`` override both).

Variants: ``default`` is what ``train-teacher`` does on this device; ``fused``/``unfused`` force
``--fuse-passes`` on or off; ``bf16`` adds bf16 autocast; ``channels-last`` the NHWC layout;
``student`` is a 3-block student's distillation step (teacher ResNet-9 frozen, all losses on).
Networks are the published sizes: ResNet-9 generators (ngf 64), 70x70 PatchGANs (ndf 64), batch 1.
On a shared machine other processes slow every variant; report ``uptime``'s load beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from cgdistill.nets import DiscriminatorConfig, GeneratorConfig, PatchDiscriminator, ResnetGenerator, init_weights
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.runtime import Runtime, setup_runtime
from cgdistill.train.teacher import CycleGANRecipe

REFERENCE_S_PER_IT_128 = 1.45  # the authors' implementation, 128 px, fp32, 2 cores (issue 4)
GOAL_S_PER_IT_128 = REFERENCE_S_PER_IT_128 / 1.5
VARIANTS = ("default", "fused", "unfused", "bf16", "channels-last", "student")
# Overrides of TrainConfig fields per variant (None: the device's default, as train-teacher picks it).
SETTINGS: dict[str, dict] = {
    "default": {},
    "fused": {"fuse_passes": True},
    "unfused": {"fuse_passes": False},
    "bf16": {"amp": True},
    "channels-last": {"channels_last": True},
    "student": {},
}


def teacher_step(size: int, device: str, overrides: dict) -> tuple[Callable[[], None], Runtime]:
    config = TeacherConfig(image_size=size, load_size=size, device=device, seed=0, **overrides)
    runtime = setup_runtime(config)
    recipe = CycleGANRecipe(config, runtime, "random")
    batch = random_batch(size, runtime)
    return lambda: recipe.train_step(batch), runtime


def student_step(size: int, device: str, overrides: dict) -> tuple[Callable[[], None], Runtime]:
    """The default distillation (3 of 9 blocks, copy init, every loss) of random teacher networks."""
    from cgdistill.train.distill import DistillRecipe
    from cgdistill.train.teacher_loading import Teacher

    # All losses on (the domain objective), as the figures in docs/benchmarks.md were measured.
    config = DistillConfig(image_size=size, load_size=size, device=device, seed=0, objective="domain", **overrides)
    config = replace(config, **config.objective_weights())
    runtime = setup_runtime(config)
    seed = torch.Generator().manual_seed(0)
    nets = [
        ResnetGenerator(GeneratorConfig()),
        ResnetGenerator(GeneratorConfig()),
        PatchDiscriminator(DiscriminatorConfig()),
    ]
    for net in nets:
        init_weights(net, generator=seed)
    teacher = Teacher(nets[0], "A2B", "random", reverse=nets[1], discriminator=nets[2], dataset="random")
    # Held-out images as the distiller measures fidelity on them: uint8, NHWC, on the CPU.
    held_out = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    recipe = DistillRecipe(config, runtime, teacher, held_out, "random")
    batch = random_batch(size, runtime)
    return lambda: recipe.train_step(batch), runtime


def random_batch(size: int, runtime: Runtime) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {key: runtime.to_device(torch.rand(1, 3, size, size, generator=generator) * 2 - 1) for key in "AB"}


def sync(runtime: Runtime) -> None:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)


def measure(variants: list[str], size: int, device: str, warmup: int, iters: int) -> list[dict]:
    """Seconds per iteration of each variant: its timed iterations' total wall time over their number.

    That is the slope of wall time from the end of warm-up to the last iteration, as in the reference
    figure, except that the variants take turns, one iteration each: on a shared machine, load from
    other processes then slows every variant alike, and their ratios stay meaningful.
    """
    steps = {}
    for variant in variants:
        build = student_step if variant == "student" else teacher_step
        steps[variant] = build(size, device, SETTINGS[variant])
        step, runtime = steps[variant]
        for _ in range(warmup):
            step()
        sync(runtime)
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(iters):
        for variant, (step, runtime) in steps.items():
            start = time.perf_counter()
            step()
            sync(runtime)
            times[variant].append(time.perf_counter() - start)
    results = []
    for variant, (_, runtime) in steps.items():
        slope = sum(times[variant]) / iters
        results.append(
            {
                "variant": variant,
                "size": size,
                "runtime": runtime.describe() + (", fused passes" if runtime.fuse_passes else ""),
                "warmup": warmup,
                "iters": iters,
                "s_per_it": slope,
                "it_per_s": 1 / slope,
                "median_s": statistics.median(times[variant]),
                "min_s": min(times[variant]),
            }
        )
    return results


def profile(variant: str, size: int, device: str, steps: int) -> None:
    """Where a step's time goes: operators by self time (after two warm-up steps)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    step, runtime = (student_step if variant == "student" else teacher_step)(size, device, SETTINGS[variant])
    for _ in range(2):
        step()
    # On a GPU both sides count: kernel time, and the host's time launching them (batch 1 is launch-bound).
    cuda = runtime.device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profiler(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(runtime)
    print(f"{variant}, {size} px, {steps} steps on {runtime.describe()}")
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=20, max_name_column_width=45))


def iterations(size: int, args: argparse.Namespace) -> tuple[int, int]:
    warmup, iters = (20, 40) if size <= 128 else (3, 8)
    return (args.warmup if args.warmup is not None else warmup), (args.iters if args.iters is not None else iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--variants", default="default,fused,student", help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 20 at 128 px, 3 above)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default 40 at 128 px, 8 above)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--profile", type=int, default=0, help="instead: torch.profiler table of N steps per variant")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; use {', '.join(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.profile:
        for size in args.sizes:
            for variant in variants:
                profile(variant, size, args.device, args.profile)
        return
    results = []
    for size in args.sizes:
        warmup, iters = iterations(size, args)
        for result in measure(variants, size, args.device, warmup, iters):
            results.append(result)
            if not args.json:
                print(
                    f"{size:>4} px  {result['variant']:<14} {result['s_per_it']:7.3f} s/it  "
                    f"{result['it_per_s']:6.3f} it/s  (median {result['median_s']:.3f}, min {result['min_s']:.3f}; "
                    f"{warmup}+{iters} it; {result['runtime']})",
                    flush=True,
                )
    load = os.getloadavg()
    summary = {
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_after": [round(x, 2) for x in load],
        "reference_s_per_it_128": REFERENCE_S_PER_IT_128,
        "goal_s_per_it_128": round(GOAL_S_PER_IT_128, 3),
        "results": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"load average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch {torch.__version__}")
        best = [r for r in results if r["size"] == 128 and r["variant"] != "student"]
        if best:
            fastest = min(best, key=lambda r: r["s_per_it"])
            print(
                f"128 px teacher: {fastest['s_per_it']:.3f} s/it ({fastest['variant']}) against the reference "
                f"{REFERENCE_S_PER_IT_128} s/it: {REFERENCE_S_PER_IT_128 / fastest['s_per_it']:.2f}x "
                f"(goal 1.5x, at most {GOAL_S_PER_IT_128:.2f} s/it)"
            )


if __name__ == "__main__":
    main()
