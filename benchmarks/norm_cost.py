"""What float64 norm statistics (nets/norm.py) cost a half-precision forward pass, per model and size.

In one process, batch 1, timed by ``cost.median_ms`` (each variant in blocks after its own warm-up), random-initialised models with the teacher's and the presets'
shapes: the same forward under CPU bf16 autocast with torch's own instance-norm kernel and with
``float64_statistics()`` forced on (the engine turns it on from ``engines.FLOAT64_NORM_PIXELS``).
This is why images under that size keep torch's kernel.

    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/norm_cost.py
    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/norm_cost.py --sizes 256x256 --repeats 15
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext

import torch

from cgdistill.cost import median_ms
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.nets.init import init_weights
from cgdistill.nets.norm import float64_statistics
from cgdistill.train.presets import PRESETS, preset_generator

TEACHER = GeneratorConfig(blocks=9, ngf=64)
MODELS = {"teacher": TEACHER} | {name: preset_generator(p, TEACHER) for name, p in PRESETS.items()}


def forward(generator: torch.nn.Module, float64: bool):
    """One bf16 forward pass with torch's norm kernel or with float64 statistics forced on."""

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16), float64_statistics() if float64 else nullcontext():
            return generator(x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sizes", default="256x256,1024x768", help="WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of each variant (the median is reported)")
    args = parser.parse_args()
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        repeats = args.repeats if width * height < 2**20 else max(3, args.repeats // 3)
        for name in args.models.split(","):
            torch.manual_seed(0)
            generator = ResnetGenerator(MODELS[name]).eval()
            init_weights(generator, generator=torch.Generator().manual_seed(0))
            x = torch.rand(1, 3, height, width) * 2 - 1
            ms = median_ms(
                {False: forward(generator, False), True: forward(generator, True)}, x, repeats=repeats, warmup=1
            )
            torch_ms, float64_ms = ms[False], ms[True]
            row = {"model": name, "size": size, "threads": torch.get_num_threads(), "repeats": repeats}
            row |= {"torch_norm_ms": round(torch_ms, 1), "float64_norm_ms": round(float64_ms, 1)}
            row["cost"] = round(float64_ms / torch_ms - 1, 3)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
