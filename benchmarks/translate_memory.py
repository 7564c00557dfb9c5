"""Peak memory and time of `cgdistill translate` at full resolution: exact tiles against one pass.

Each case is one `cgdistill translate PHOTO --max-side 0 --engine torch` in its own process, so its
peak RSS is that process's alone (``/usr/bin/time -v`` when present, else the child's ru_maxrss).
Models are random-initialised (``init_weights``, N(0, 0.02)) with the teacher's and the students'
shapes: memory and time depend on the architecture, not on the weights. The photo is synthetic
(smooth colour regions plus noise, JPEG), decoded like any other. Tiled and one-pass outputs of the
same model and size are compared as 8-bit PNGs (max absolute difference in grey levels).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/translate_memory.py            # everything
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/translate_memory.py --models teacher --sizes 12
    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/translate_memory.py --models teacher --ratio 3   # time ratio

``--max-memory`` (default 1.5G) is passed to the tiled runs (``--tile auto``), ``--tile off`` to the
one-pass runs (both ``--engine torch``); ``--default-run`` adds the run a user makes without flags
(engine and tiles ``auto``, no ``--max-memory``). Cases whose one pass cannot fit this machine (50 MP) run tiled only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cgdistill.nets import ResnetGenerator
from cgdistill.nets.init import init_weights
from cgdistill.weights import save_generator

MODELS = {
    "teacher": {"blocks": 9, "ngf": 64},
    "student": {"blocks": 3, "ngf": 64},  # the default student
    "fast": {"blocks": 3, "ngf": 32},  # --preset fast
    "fastest": {"blocks": 3, "ngf": 16},  # --preset fastest
    "ngf16-separable": {"blocks": 3, "ngf": 16, "block": "separable"},  # the fastest preset before issue 19
}
SIZES = {"0.3": (640, 480), "3": (2000, 1500), "12": (4000, 3000), "50": (8000, 6250)}  # width, height
ONE_PASS_LIMIT_MP = 12  # 50 MP in one pass needs ~40 GB for the teacher: not on this machine


def photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3), dtype=np.int16)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def run_case(model: Path, image: Path, out: Path, tile: str | None, max_memory: str | None) -> dict:
    """One translate in a fresh process: peak RSS (MB), the translate seconds it reports, the engine line.

    ``tile`` None is the default run: no ``--engine``, ``--tile`` or ``--max-memory``, only ``--max-side 0``."""
    command = [sys.executable, "-m", "cgdistill", "translate", str(image), "--model", str(model), "--max-side", "0"]
    command += ["-o", str(out)]
    if tile is not None:
        command += ["--engine", "torch", "--tile", tile]
    if max_memory:
        command += ["--max-memory", max_memory]
    timer = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    start = time.perf_counter()
    if timer:
        done = subprocess.run([timer, "-v", *command], capture_output=True, text=True)
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    else:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run(command, capture_output=True, text=True)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if peak_kb <= before:
            peak_kb = -1  # hidden by an earlier, larger child
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:], "wall_s": wall}
    seconds = float(re.search(r"in ([\d.]+) s", done.stderr + done.stdout).group(1))
    engine = re.search(r"with (torch \w+)", done.stderr + done.stdout)
    return {"peak_mb": peak_kb / 1024, "seconds": seconds, "wall_s": wall, "engine": engine and engine.group(1)}


def one_pass_with_torch_norms(model: torch.nn.Module, pixels: np.ndarray) -> torch.Tensor:
    """One pass as images under ``FLOAT64_NORM_PIXELS`` run: torch's own half-precision norm kernel."""
    from cgdistill import engines
    from cgdistill.forward import translate_batch

    threshold, engines.FLOAT64_NORM_PIXELS = engines.FLOAT64_NORM_PIXELS, 2**62
    try:
        return translate_batch(model, torch.from_numpy(pixels)[None], torch.device("cpu"))
    finally:
        engines.FLOAT64_NORM_PIXELS = threshold


def time_ratio(name: str, megapixels: str, repeats: int) -> dict:
    """In one process, alternating: one pass, tiles with the bottleneck in memory, tiles spilled to files.

    Alternating turns share the machine's load alike, so the ratios hold where absolute times do not.
    """
    from cgdistill.engines import Autocast, torch_engine
    from cgdistill.forward import translate_batch
    from cgdistill.policy import TileDecider
    from cgdistill.tiling.plan import TilePlan, plan_tiles

    torch.manual_seed(0)
    generator = ResnetGenerator(**MODELS[name])
    init_weights(generator, generator=torch.Generator().manual_seed(0))
    engine = torch_engine(generator, torch.device("cpu"))
    width, height = SIZES[megapixels]
    with tempfile.TemporaryDirectory() as tmp:
        pixels = np.array(Image.open(photo(Path(tmp) / "p.jpg", width, height)).convert("RGB"))
    decider = TileDecider(engine.model, torch.device("cpu"), tile=256)
    plan = plan_tiles(height, width, generator.config, 2, 0, tile=256)
    runs = {
        "one pass": lambda: translate_batch(engine.model, torch.from_numpy(pixels)[None], torch.device("cpu")),
        "tiled": lambda: decider.translate(pixels, plan),
        "tiled, spilled": lambda: decider.translate(pixels, TilePlan(plan.tile, plan.strip, 0, 0, 0, True)),
    }
    if isinstance(engine.model, Autocast):  # what float64 norm statistics cost one pass (nets/norm.py)
        runs["one pass, torch's norm kernel"] = lambda: one_pass_with_torch_norms(engine.model, pixels)
    times: dict[str, list[float]] = {key: [] for key in runs}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            out = run()
            times[key].append(time.perf_counter() - start)
            outputs[key] = np.asarray(out[0] if isinstance(out, torch.Tensor) else out, dtype=np.int16)
    medians = {key: float(np.median(values)) for key, values in times.items()}
    row = {
        "model": name,
        "size": f"{width}x{height}",
        "engine": engine.name,
        "threads": torch.get_num_threads(),
        "seconds": medians,
        "ratio": {key: value / medians["one pass"] for key, value in medians.items()},
    }
    diff = np.abs(outputs["tiled"] - outputs["one pass"])
    row["tiled_vs_one_pass"] = {"max": int(diff.max()), "mean": float(diff.mean())}
    if engine.name == "torch bf16":  # how far bf16 itself is from fp32, for scale
        fp32 = translate_batch(engine.model.generator, torch.from_numpy(pixels)[None], torch.device("cpu"))[0]
        fp32 = fp32.numpy().astype(np.int16)
        diff = np.abs(outputs["tiled"] - outputs["one pass, torch's norm kernel"])
        row["tiled_vs_one_pass_torch_norms"] = {"max": int(diff.max()), "mean": float(diff.mean())}
        for key in ("one pass", "tiled", "one pass, torch's norm kernel"):
            diff = np.abs(outputs[key] - fp32)
            row[f"{key}_vs_fp32"] = {"max": int(diff.max()), "mean": float(diff.mean())}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--sizes", default="3,12,50", help="megapixels, comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--max-memory", default="1.5G", help="--max-memory of the tiled runs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--tiled-only", action="store_true", help="skip the one-pass runs")
    parser.add_argument(
        "--default-run", action="store_true", help="also the default run: translate PHOTO --max-side 0, nothing else"
    )
    parser.add_argument(
        "--ratio", metavar="MP", help="instead: time one pass vs tiles in one process, interleaved, at this size"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved turns for --ratio")
    args = parser.parse_args()
    if args.ratio:
        for name in args.models.split(","):
            print(json.dumps(time_ratio(name, args.ratio, args.repeats)), flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["CGDISTILL_HOME"] = str(root / "home")
        for name in args.models.split(","):
            torch.manual_seed(0)
            generator = ResnetGenerator(**MODELS[name])
            init_weights(generator, generator=torch.Generator().manual_seed(0))
            model = save_generator(generator, root / f"{name}.safetensors", direction="A2B", dataset="synthetic")
            for size in args.sizes.split(","):
                width, height = SIZES[size]
                image = photo(root / f"photo-{size}.jpg", width, height)
                row = {"model": name, "size": f"{width}x{height}", "mp": float(size)}
                if args.default_run:
                    row["default"] = run_case(model, image, root / "default", None, None)
                    print(json.dumps({"model": name, "size": row["size"], "default": row["default"]}), flush=True)
                row["tiled"] = run_case(model, image, root / "tiled", "auto", args.max_memory)
                print(json.dumps({"model": name, "size": row["size"], "tiled": row["tiled"]}), flush=True)
                if float(size) <= ONE_PASS_LIMIT_MP and not args.tiled_only:
                    row["one_pass"] = run_case(model, image, root / "whole", "off", None)
                    if "error" not in row["tiled"] and "error" not in row["one_pass"]:
                        a = np.asarray(Image.open(root / "tiled" / f"{image.stem}_A2B.png"), dtype=np.int16)
                        b = np.asarray(Image.open(root / "whole" / f"{image.stem}_A2B.png"), dtype=np.int16)
                        row["max_grey_diff"] = int(np.abs(a - b).max())
                        row["share_differing"] = float((a != b).mean())
                        row["time_ratio"] = row["tiled"]["seconds"] / row["one_pass"]["seconds"]
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
