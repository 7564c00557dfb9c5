"""The distillation study of docs/distillation.md: fidelity to the teacher versus steps, per variant.

Each variant is one straight ``distill`` run per seed (the learning-rate schedule depends on the run's
length, so a run is never assembled from chunks). The curve is the run's own ``psnr_to_teacher`` /
``ssim_to_teacher`` (held-out images, measured every ``--eval-every`` steps); the final figure is
``compare``'s fidelity on the whole test split at ``--compare-size``. Prints markdown tables
(mean ± std over seeds) and writes JSON.

    python benchmarks/distill_study.py --home /tmp/study --teacher m2p --direction B2A \\
        --data ../shared/data/monet2photo-mini --variants "seed method;default" --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from cgdistill import paths
from cgdistill.forward import prepare_generator
from cgdistill.metrics import fidelity
from cgdistill.plots import read_metrics
from cgdistill.runs import METRICS_FILE
from cgdistill.testset import Images, load_test_set, run_model
from cgdistill.train.config import DistillConfig
from cgdistill.train.distill import distill
from cgdistill.train.teacher_loading import load_teacher
from cgdistill.weights import load_generator

# Each variant: DistillConfig overrides on top of the command's defaults.
VARIANTS: dict[str, dict] = {
    # What `distill --max-steps N` did before the faithful-students work: GAN, cycle and identity losses,
    # constant lr under --max-steps (epochs_decay=0 reproduces it), raw weights, one crop per step.
    "seed method": dict(objective="domain", init="copy-outer", ema_decay=0.0, epochs_decay=0, batch_size=1),
    "default": dict(),
    "default, 1 crop per step": dict(batch_size=1),
    "default, no weight average": dict(ema_decay=0.0),
    "default, constant lr": dict(epochs_decay=0),
    "default, fresh blocks (copy-outer)": dict(init="copy-outer"),
    "default, domain objective": dict(objective="domain"),
    "default, lr 6e-4": dict(lr=6e-4),
    # The fast presets' quarter-width students: started from the teacher's most-read channels
    # (train/student_init.py), or from scratch.
    "fast": dict(preset="fast"),
    "fast, random init": dict(preset="fast", init="random"),
    "fastest": dict(preset="fastest"),
    "fastest, random init": dict(preset="fastest", init="random"),
    # Half the teacher's width: between the default and the fast presets, in cost and in fidelity.
    "half width": dict(blocks=3, ngf=32),
    "half width, separable": dict(blocks=3, ngf=32, block="separable"),
}


def final_fidelity(run: Path, teacher_out: Images, inputs: Images) -> tuple[float, float]:
    student, _ = load_generator(run / "G.safetensors")
    measured = fidelity(
        run_model(prepare_generator(student, torch.device("cpu")), inputs, torch.device("cpu")), teacher_out
    )
    return measured.psnr, measured.ssim


def mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--direction", default="B2A")
    parser.add_argument("--data", required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--compare-size", type=int, default=256, help="shorter side of each test image (px)")
    parser.add_argument("--limit", type=int, default=50, help="test images for the final fidelity")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default="seed method;default", help="labels separated by semicolons")
    parser.add_argument("--prefix", default="study")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    paths.set_home(args.home)
    seeds = [int(s) for s in args.seeds.split(",")]
    labels = args.variants.split(";")
    unknown = [label for label in labels if label not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    teacher = load_teacher(args.teacher, args.direction)
    tests = load_test_set(Path(args.data), args.direction, args.compare_size, limit=args.limit)
    teacher_out = run_model(
        prepare_generator(teacher.generator, torch.device("cpu")), tests.inputs, torch.device("cpu")
    )
    results: dict = {"settings": vars(args) | {"json": str(args.json)}, "variants": {}}
    for label in labels:
        runs = []
        for seed in seeds:
            name = f"{args.prefix}-{label.replace(' ', '').replace(',', '-').replace('+', 'plus')}-s{seed}"
            config = DistillConfig(
                teacher=args.teacher, direction=args.direction, data=args.data, name=name,
                image_size=args.image_size, max_steps=args.steps, seed=seed, save_every=10**9,
                sample_every=10**9, log_every=50, eval_every=args.eval_every, **VARIANTS[label],
            )  # fmt: skip
            started = time.perf_counter()
            run = distill(config)
            seconds = time.perf_counter() - started
            curve = [
                {"step": r["step"], "psnr": r["psnr_to_teacher"], "ssim": r.get("ssim_to_teacher")}
                for r in read_metrics(run / METRICS_FILE)
                if "psnr_to_teacher" in r and r["step"] % args.eval_every == 0
            ]
            p, s = final_fidelity(run, teacher_out, tests.inputs)
            best = max(point["psnr"] for point in curve)
            runs.append({"seed": seed, "seconds": seconds, "curve": curve, "psnr": p, "ssim": s,
                         "best_minus_final": best - curve[-1]["psnr"]})  # fmt: skip
            print(f"{label:28s} seed {seed}  {seconds:6.0f} s  PSNR {p:6.2f} dB  SSIM {s:.4f}  "
                  f"curve {[pt['psnr'] for pt in curve]}", flush=True)  # fmt: skip
        results["variants"][label] = runs
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

    steps = [point["step"] for point in results["variants"][labels[0]][0]["curve"]]
    print(f"\nFinal fidelity on {len(tests.names)} test images at {args.compare_size} px, seeds {args.seeds}:\n")
    print("| variant | wall time | PSNR to teacher | SSIM to teacher | best - final (held-out curve) |")
    print("|---|---:|---:|---:|---:|")
    for label, runs in results["variants"].items():
        print(
            f"| {label} | {mean_std([r['seconds'] for r in runs], 0)} s | {mean_std([r['psnr'] for r in runs], 2)} dB "
            f"| {mean_std([r['ssim'] for r in runs], 3)} | {mean_std([r['best_minus_final'] for r in runs], 2)} dB |"
        )
    print("\nPSNR to teacher (dB) on the held-out curve images, by step:\n")
    print("| variant | " + " | ".join(f"{s}" for s in steps) + " |")
    print("|---|" + "---:|" * len(steps))
    for label, runs in results["variants"].items():
        cells = [mean_std([r["curve"][i]["psnr"] for r in runs], 2) for i in range(len(steps))]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
