"""Eager against compiled (``compiled.compile_for``), and where an eager pass spends its time.

Usage:
  .venv/bin/python benchmarks/compile_speed.py [--shapes 4x480x640,1x480x640,4x240x320] [--repeats 6]
  .venv/bin/python benchmarks/compile_speed.py --layers [--shapes 1x480x640]
  .venv/bin/python benchmarks/compile_speed.py --profile [--students fastest] [--shapes 4x480x640]

The teacher (9 blocks, ngf 64) at the training step's shape (4 crops of 128 px) and each preset's
student at the given batch x height x width, under the torch engine's bf16 autocast (random weights:
speed does not depend on them), timed by ``cost.median_ms``; the compile time is the first call's.
For half-ends students it also times the compiled model with its closing pixel shuffle left inside the
graph (as before issue 29's fix: inductor then computes a scalar tanh per output value). Run with
TORCHINDUCTOR_CACHE_DIR set to an empty folder for cold compiles.

``--layers`` times each top-level layer of each student alone (eager, median of 10), on the output
of the layer before it. ``--profile`` lists where the eager and the compiled pass spend their time
(torch.profiler over 5 passes, self time per op or generated kernel, ms per image; inductor's kernel
profiler names each fused kernel), and for the eager pass which ops made its copies.
"""

from __future__ import annotations

import argparse
import subprocess
import time

import torch

from cgdistill import cost
from cgdistill.compiled import compile_for
from cgdistill.engines import CpuBf16
from cgdistill.forward import prepare_generator
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.train.presets import PRESETS, preset_generator

CPU = torch.device("cpu")
TEACHER = GeneratorConfig()
STUDENTS = {name: preset_generator(p, TEACHER) for name, p in PRESETS.items() if name != "default"}


def layer_times(config: GeneratorConfig, shape: tuple[int, ...]) -> list[tuple[str, float]]:
    generator = ResnetGenerator(config).eval().requires_grad_(False)
    layers = [("stem", generator.stem), ("down", generator.down)]
    layers += [(f"block {i + 1}", block) for i, block in enumerate(generator.blocks)]
    layers += [("up", generator.up), ("head", generator.head)]
    h, times = torch.rand(*shape) * 2 - 1, []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for name, layer in layers:
            samples = []
            for _ in range(12):
                start = time.perf_counter()
                out = layer(h)
                samples.append((time.perf_counter() - start) * 1000)
            times.append((name, sorted(samples[2:])[5]))
            h = out
    return times


def profile_rows(model, x: torch.Tensor, passes: int = 5) -> tuple[list[tuple[str, float, int]], dict[str, float]]:
    """Self time per op (ms per image, calls per pass), and the copies' time by the op that asked for them."""
    from collections import Counter

    from torch.profiler import profile

    with torch.inference_mode():
        for _ in range(2):
            model(x)
        with profile() as prof:
            for _ in range(passes):
                model(x)
    per_image = passes * x.shape[0] * 1000
    rows = [(e.key, e.self_cpu_time_total / per_image, e.count // passes) for e in prof.key_averages()]
    copies: Counter = Counter()
    for event in prof.events():
        if event.name == "aten::copy_":
            chain, parent = [], event.cpu_parent
            while parent is not None and len(chain) < 3:
                chain.append(parent.name)
                parent = parent.cpu_parent
            copies[" < ".join(chain)] += event.cpu_time_total / per_image
    return sorted(rows, key=lambda row: -row[1]), dict(copies.most_common(4))


def print_profiles(students: list[str], shapes: list[tuple[int, ...]]) -> None:
    import torch._inductor.config as inductor_config

    inductor_config.cpp.enable_kernel_profile = True  # each generated kernel as its own profiler event
    for name in students:
        for batch, height, width in shapes:
            config = TEACHER if name == "teacher" else STUDENTS[name]
            model = CpuBf16(prepare_generator(ResnetGenerator(config), CPU))
            x = torch.rand(batch, 3, height, width) * 2 - 1
            attempt = compile_for(model, x)
            runs = {"eager": model} | ({"compiled": attempt.model} if attempt.model is not None else {})
            for label, runner in runs.items():
                rows, copies = profile_rows(runner, x)
                total = sum(ms for _, ms, _ in rows)
                print(f"{name} {batch}x{height}x{width} {label}: {total:.1f} ms/image")
                for key, ms, calls in rows[:8]:
                    print(f"  {ms:6.2f} ms {100 * ms / total:4.1f}%  x{calls:<3d} {key[:90]}")
                for chain, ms in copies.items() if label == "eager" else ():
                    print(f"  copies {ms:6.2f} ms  made by {chain}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="4x480x640,1x480x640,4x240x320")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--layers", action="store_true")
    parser.add_argument("--profile", action="store_true", help="where each pass spends its time, op by op")
    parser.add_argument(
        "--students", default=",".join(STUDENTS), help="--profile: which presets' students (or teacher)"
    )
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in spec.split("x")) for spec in args.shapes.split(",")]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load: {load}")
    if args.profile:
        print_profiles(args.students.split(","), shapes)
        return
    if args.layers:
        for name, config in STUDENTS.items():
            for batch, height, width in shapes:
                times = layer_times(config, (batch, 3, height, width))
                parts = ", ".join(f"{layer} {ms:.1f}" for layer, ms in times)
                print(
                    f"{name} ({config.ends} ends) {batch}x{height}x{width} eager bf16 ms: {parts}; sum {sum(t for _, t in times):.1f}"
                )
        return
    cases = [("teacher, training step", TEACHER, (4, 3, 128, 128))]
    cases += [(name, config, (b, 3, h, w)) for name, config in STUDENTS.items() for b, h, w in shapes]
    for name, config, shape in cases:
        torch.manual_seed(0)
        model = CpuBf16(prepare_generator(ResnetGenerator(config), CPU))
        x = torch.rand(*shape) * 2 - 1
        attempt = compile_for(model, x)
        if attempt.model is None:
            print(f"{name}: {attempt.failure}")
            continue
        runners = {"eager": model, "compiled": attempt.model}
        if attempt.model.shuffle_after:  # half ends: also the closing shuffle left inside the graph
            inside = compile_for(model, x, shuffle_outside=False).model
            if inside is not None:
                runners["shuffle in graph"] = inside
        ms = cost.median_ms(runners, x, repeats=args.repeats)
        batch = shape[0]
        inside_note = ""
        if "shuffle in graph" in ms:
            inside_note = f"; with the closing shuffle in the graph {ms['shuffle in graph'] / batch:6.1f} ms/image"
        print(
            f"{name:24s} {'x'.join(map(str, shape))}: compile {attempt.seconds:5.1f} s, eager {ms['eager'] / batch:6.1f} "
            f"ms/image, compiled {ms['compiled'] / batch:6.1f} ms/image ({ms['eager'] / ms['compiled']:.2f}x){inside_note}"
        )
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
