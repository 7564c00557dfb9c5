"""Eager against compiled (``compiled.compile_for``), and where an eager pass spends its time.

Usage:
  .venv/bin/python benchmarks/compile_speed.py [--shapes 4x480x640,1x480x640,4x240x320] [--repeats 6]
  .venv/bin/python benchmarks/compile_speed.py --layers [--shapes 1x480x640]

The teacher (9 blocks, ngf 64) at the training step's shape (4 crops of 128 px) and each preset's
student at the given batch x height x width, under the torch engine's bf16 autocast (random weights:
speed does not depend on them), timed by ``cost.median_ms``; the compile time is the first call's.
``--layers`` times each top-level layer of each student alone (eager, median of 10), on the output
of the layer before it. Run with TORCHINDUCTOR_CACHE_DIR set to an empty folder for cold compiles.
For half-ends students it also times the compiled model with its closing pixel shuffle left inside the
graph (as before issue 29's fix: inductor then computes a scalar tanh per output value).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="4x480x640,1x480x640,4x240x320")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--layers", action="store_true")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in spec.split("x")) for spec in args.shapes.split(",")]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load: {load}")
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
