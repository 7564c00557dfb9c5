"""When exact tiles are faster than one pass: time of one image through translate's two plans, by size.

Usage: .venv/bin/python benchmarks/tile_speed.py [--models teacher,fastest] [--sizes 1024x768,2000x1500]
       [--precision bf16|fp32] [--repeats 2] [--tiles 256,128] [--threads N]

For each model and size, in one process: one pass (``forward.translate_batch``, as ``--tile off``
runs it), and exact tiles of each ``--tiles`` side (default ``MAX_TILE``) with the 1/4-resolution
activations in memory and spilled to temporary files (the plan a small ``--max-memory`` takes);
in brackets each time over one pass's. Each plan is timed by ``cost.median_ms``
(a warm-up call, then ``--repeats`` timed calls, the plans one after the other), so no plan pays for
the memory another left behind. ``--precision bf16`` is the torch bf16 engine (float64 norm
statistics from 1 MP, as translate runs it); ``fp32`` the plain generator, as on a CPU without
native bf16. Models are random-initialised with the teacher's and the presets' shapes: time depends on
the architecture, not the weights. The image is the synthetic photo of translate_memory.py.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from auto_choice import SHAPES, uptime
from cgdistill.cost import median_ms
from cgdistill.engines import CpuBf16, torch_model
from cgdistill.forward import translate_batch
from cgdistill.nets import ResnetGenerator
from cgdistill.nets.init import init_weights
from cgdistill.policy import TileDecider
from cgdistill.tiling.plan import MAX_TILE, TilePlan, plan_tiles
from translate_memory import photo

CPU = torch.device("cpu")


def minor_faults(run) -> int:
    """Minor page faults of one more call: pages the allocator took fresh from the kernel (zeroed on first touch)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.inference_mode():
        run(None)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="teacher,fastest")
    parser.add_argument("--sizes", default="1024x768,1448x1086,2000x1500")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--tiles", default=str(MAX_TILE), help="tile sides, comma-separated: each in memory and spilled"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--faults", action=argparse.BooleanOptionalAction, default=True, help="one more call each, counting page faults"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, {args.precision}; load: {uptime()}")
    timing = {"repeats": args.repeats, "warmup": 1, "rounds": 1}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            generator = ResnetGenerator(SHAPES[name])
            init_weights(generator, generator=torch.Generator().manual_seed(0))
            model = torch_model(generator.eval().requires_grad_(False), CPU)
            model = CpuBf16(model) if args.precision == "bf16" else model
            decider = TileDecider(model, CPU, tile=MAX_TILE)
            for spec in args.sizes.split(","):
                width, height = (int(v) for v in spec.split("x"))
                pixels = np.array(Image.open(photo(Path(tmp) / "p.jpg", width, height)).convert("RGB"))
                runs = {"one pass": lambda _x, p=pixels, m=model: translate_batch(m, torch.from_numpy(p)[None], CPU)}
                for side in (int(v) for v in args.tiles.split(",")):
                    plan = plan_tiles(height, width, generator.config, 2, 0, tile=side)
                    for spill in (False, True):
                        plan = TilePlan(plan.tile, plan.strip, 0, 0, 0, spill)
                        label = f"{side} px{', spilled' if spill else ''}"
                        runs[label] = lambda _x, p=pixels, plan=plan, d=decider: d.translate(p, plan)
                seconds = {key: value / 1000 for key, value in median_ms(runs, torch.zeros(1), **timing).items()}
                one = seconds["one pass"]
                cells = ", ".join(f"{key} {value:.2f} s ({value / one:.2f})" for key, value in seconds.items())
                print(f"{name:>8} {spec:>10} {width * height / 1e6:5.2f} MP: {cells}", flush=True)
                if args.faults:
                    faults = ", ".join(f"{key} {minor_faults(run) * 4 / 1024:.0f} MB" for key, run in runs.items())
                    print(f"{'':>8} {'':>10} fresh pages a call (minor faults x 4 KiB): {faults}", flush=True)
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    main()
