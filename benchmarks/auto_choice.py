"""Does `--engine auto` pick the faster engine for the work in hand? Its pick beside both engines timed
at the work's own shape with more calls.

Usage: .venv/bin/python benchmarks/auto_choice.py [--models teacher,default,fast,fastest]
       [--works 256x256x1,320x240x4,640x480x4,1024x768x1] [--repeats 6] [--threads N]

For each model (the teacher's and the presets' shapes, random weights: speed does not depend on
them) and each work (WIDTHxHEIGHTxBATCH: the first image's or video frame's size and translate's
batch), ``engines.choose_engine(..., "auto", Workload)`` picks as translate does, in a fresh home (so
it times, as a first run does; ``engines.Workload.timing_shape`` caps what it times); then both
engines run the work's full shape, ``--repeats`` timed calls each in blocks (``cost.median_ms``).
"pick / best" is the picked engine's time over the faster one's: the goal is at most 1.05.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

import torch

from cgdistill.cost import median_ms
from cgdistill.engines import Workload, choose_engine, onnxruntime_engine, probe_image, torch_engine
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.train.presets import PRESETS, preset_generator

CPU = torch.device("cpu")
TEACHER = GeneratorConfig(blocks=9, ngf=64)
SHAPES = {"teacher": TEACHER} | {name: preset_generator(p, TEACHER) for name, p in PRESETS.items()}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SHAPES))
    parser.add_argument("--works", default="256x256x1,320x240x4,640x480x4,1024x768x1")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads; load: {uptime()}")
    print(
        f"{'model':>8} {'work':>13} {'auto picks':>17} {'auto s':>7} {'torch ms/img':>13} {'onnxrt ms/img':>14}"
        f" {'pick / best':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.works.split(","):
            width, height, batch = (int(v) for v in spec.split("x"))
            work = Workload(height, width, batch)
            for name in args.models.split(","):
                torch.manual_seed(0)
                generator = ResnetGenerator(SHAPES[name]).eval().requires_grad_(False)
                os.environ["CGDISTILL_HOME"] = os.path.join(tmp, f"{name}-{spec}")  # a first run: auto times
                start = time.perf_counter()
                picked = choose_engine(generator, CPU, "auto", work).name
                choosing = time.perf_counter() - start
                engines = {e.name: e.model for e in (torch_engine(generator, CPU), onnxruntime_engine(generator, CPU))}
                x = probe_image(max(width, height))[..., :height, :width].expand(batch, -1, -1, -1).contiguous()
                ms = {key: value / batch for key, value in median_ms(engines, x, repeats=args.repeats).items()}
                best = min(ms.values())
                torch_name = next(key for key in ms if key.startswith("torch"))
                print(
                    f"{name:>8} {spec:>13} {picked:>17} {choosing:7.1f} {ms[torch_name]:13.1f}"
                    f" {ms['onnxruntime fp32']:14.1f} {ms[picked] / best:12.2f}",
                    flush=True,
                )
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    main()
