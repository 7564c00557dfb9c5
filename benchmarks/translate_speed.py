"""End-to-end translate rate for a folder of 256x256 JPEGs, beside the model's own batch throughput.

Usage: .venv/bin/python benchmarks/translate_speed.py [--folder DIR] [--limit 12] [--batch-size 4] [--repeats 2]

The folder rate (decode, translate, encode and write PNGs, as `cgdistill translate` does) should be
at least 90% of the model's rate (forward passes alone on the same batch size and device): decoding
and encoding are meant to hide behind compute. Teacher and student turns alternate so that load
from other processes affects both alike. Images come from ../shared/data/horse2zebra-mini/testA
when present, else generated JPEGs of the same size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cgdistill.data.images import list_images
from cgdistill.device import describe, pick_device
from cgdistill.engines import torch_model
from cgdistill.forward import use_channels_last
from cgdistill.imagefiles import translate_files
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.policy import Runner
from cgdistill.worklist import plan_outputs

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "horse2zebra-mini" / "testA"


def generated_folder(root: Path, count: int, size: int = 256) -> Path:
    """Smooth random JPEGs (compress like photos, unlike white noise)."""
    folder = root / "generated"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BICUBIC)
        image.save(folder / f"{i:04d}.jpg", quality=90)
    return folder


def model_rate(model: torch.nn.Module, batches: int, batch_size: int, size: int, device: torch.device) -> float:
    """Images/s of forward passes alone (input already on the device in the model's memory format)."""
    fmt = torch.channels_last if use_channels_last(device) else torch.contiguous_format
    x = (torch.rand(batch_size, 3, size, size, device=device) * 2 - 1).contiguous(memory_format=fmt)
    with torch.inference_mode():
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--limit", type=int, default=12, help="images per pass (a multiple of --batch-size)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        files = list_images(args.folder)[: args.limit] if args.folder.is_dir() else []
        source = str(args.folder)
        if len(files) < args.limit:
            files = list_images(generated_folder(tmp_path, args.limit))
            source = "generated 256x256 JPEGs"
        with Image.open(files[0]) as first:
            size = first.size[0]
        torch.manual_seed(0)
        models = {
            "teacher": ResnetGenerator(GeneratorConfig(blocks=9)),
            "student": ResnetGenerator(GeneratorConfig(blocks=3)),
        }
        prepared = {name: torch_model(m, device) for name, m in models.items()}  # autocast on CUDA
        folder_rates: dict[str, list[float]] = {name: [] for name in models}
        model_rates: dict[str, list[float]] = {name: [] for name in models}
        batches = max(1, len(files) // args.batch_size)
        for rep in range(args.repeats + 1):  # the first round warms up oneDNN and the thread pools
            for name in models:
                rate = model_rate(prepared[name], batches, args.batch_size, size, device)
                outputs, _ = plan_outputs(files, tmp_path / f"out-{name}", "A2B")
                (tmp_path / f"out-{name}").mkdir(exist_ok=True)
                runner = Runner.for_model(prepared[name], device)
                result = translate_files(runner, files, outputs, batch_size=args.batch_size)
                if result.failures:
                    raise SystemExit(f"translate failed: {result.failures[0][1]}")
                if rep:
                    model_rates[name].append(rate)
                    folder_rates[name].append(result.images_per_s)
    print(
        f"torch {torch.__version__}, {describe(device)}, {len(files)} images from {source}, "
        f"batch {args.batch_size}, median of {args.repeats}"
    )
    print(f"{'model':8s} {'model img/s':>12s} {'folder img/s':>13s} {'folder/model':>13s}")
    for name in models:
        m, f = statistics.median(model_rates[name]), statistics.median(folder_rates[name])
        print(f"{name:8s} {m:12.2f} {f:13.2f} {f / m:12.0%}")


if __name__ == "__main__":
    main()
