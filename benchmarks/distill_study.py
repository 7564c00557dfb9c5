"""The distillation study of docs/distillation.md: student-to-teacher fidelity versus steps.

Runs each variant (copy/random init, with/without the feature loss, a narrower student) from the
same teacher, in chunks of ``--every`` steps (exact resume makes chunks equal to one straight run),
and after each chunk measures PSNR and SSIM of the student's outputs against the teacher's on the
source domain's test images. Prints a markdown table and writes JSON.

    python benchmarks/distill_study.py --home /tmp/study --teacher h2z --direction A2B \
        --data ../shared/data/horse2zebra-mini --image-size 64 --steps 600 --every 150
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cgdistill import paths
from cgdistill.checkpoint import load_generator
from cgdistill.engines import bf16_psnr
from cgdistill.evaluate import count_macs, load_test_set, psnr, run_model, ssim, to_unit
from cgdistill.nets import count_parameters
from cgdistill.train.config import DistillConfig
from cgdistill.train.distill import distill, load_teacher
from cgdistill.translate import prepare_generator

VARIANTS = {
    "copy+feature": dict(init="copy", lambda_feature=1.0),
    "random+feature": dict(init="random", lambda_feature=1.0),
    "copy, no feature": dict(init="copy", lambda_feature=0.0),
    "random, no feature": dict(init="random", lambda_feature=0.0),
    "ngf/2 (adapters)": dict(init="copy", lambda_feature=1.0, width=0.5),
    # Narrow students (the fast presets' widths): the teacher's most-read channels copied, or random.
    "ngf/4, narrow copy": dict(init="copy", width=0.25),
    "ngf/4, random": dict(init="random", width=0.25),
    "ngf/4 separable, narrow copy": dict(init="copy", width=0.25, block="separable"),
    "ngf/4 separable, random": dict(init="random", width=0.25, block="separable"),
    # The same with the output and feature losses alone (no GAN, cycle or identity pull).
    "ngf/4, narrow copy, L1+feature": dict(init="copy", width=0.25, lambda_gan=0.0, lambda_cycle=0.0),
    "ngf/4, random, L1+feature": dict(init="random", width=0.25, lambda_gan=0.0, lambda_cycle=0.0),
    "ngf/4 separable, narrow copy, L1+feature": dict(
        init="copy", width=0.25, block="separable", lambda_gan=0.0, lambda_cycle=0.0
    ),
    "ngf/4 separable, random, L1+feature": dict(
        init="random", width=0.25, block="separable", lambda_gan=0.0, lambda_cycle=0.0
    ),
}


def bf16_fidelity(generator, inputs: torch.Tensor) -> float:
    """PSNR of the bf16-autocast output to the fp32 output on the test images (translate's 40 dB rule)."""
    return bf16_psnr(generator.eval(), to_unit(inputs) * 2 - 1)


def fidelity(student_path: Path, teacher_out: torch.Tensor, inputs: torch.Tensor, device) -> tuple[float, float]:
    student, _ = load_generator(student_path)
    out = run_model(prepare_generator(student, device), inputs, device)
    return psnr(to_unit(out), to_unit(teacher_out)), ssim(to_unit(out), to_unit(teacher_out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--direction", default="A2B")
    parser.add_argument("--data", required=True)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--load-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=150)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="student init, data order and augmentation")
    parser.add_argument("--variants", default=";".join(VARIANTS), help="labels separated by semicolons")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    paths.set_home(args.home)
    device = torch.device("cpu")
    teacher = load_teacher(args.teacher, args.direction)
    tests = load_test_set(Path(args.data), args.direction, args.image_size, limit=args.limit)
    teacher_out = run_model(prepare_generator(teacher.generator, device), tests.inputs, device)
    t_cfg = teacher.generator.config
    results = {
        "teacher": {
            "identity": teacher.identity,
            "blocks": t_cfg.blocks,
            "ngf": t_cfg.ngf,
            "params": count_parameters(teacher.generator),
            "macs": count_macs(t_cfg, args.image_size),
            "bf16_psnr": round(bf16_fidelity(teacher.generator, tests.inputs), 2),
        },
        "settings": vars(args) | {"json": str(args.json)},
        "variants": {},
    }
    for label in args.variants.split(";"):
        options = dict(VARIANTS[label])
        width = options.pop("width", None)
        ngf = max(1, round(t_cfg.ngf * width)) if width else None
        name = "study-" + "".join(c if c.isalnum() else "-" for c in label).strip("-")
        curve = []
        started = time.perf_counter()
        for target in range(args.every, args.steps + 1, args.every):
            config = DistillConfig(
                teacher=args.teacher, direction=args.direction, data=args.data, name=name, blocks=args.blocks,
                ngf=ngf, image_size=args.image_size, load_size=args.load_size or args.image_size + args.image_size // 8,
                max_steps=target, epochs=1000, epochs_decay=0, save_every=10**9, sample_every=10**9,
                log_every=50, eval_every=10**9, seed=args.seed, **options,
            )  # fmt: skip
            run = distill(config, resume=target > args.every, given={"max_steps"})
            p, s = fidelity(run / "G.safetensors", teacher_out, tests.inputs, device)
            curve.append({"step": target, "psnr": round(p, 2), "ssim": round(s, 4)})
            print(f"{label:20s} step {target:5d}  PSNR {p:6.2f} dB  SSIM {s:.4f}", flush=True)
        student, _ = load_generator(run / "G.safetensors")
        results["variants"][label] = {
            "curve": curve,
            "params": count_parameters(student),
            "macs": count_macs(student.config, args.image_size),
            "seconds": round(time.perf_counter() - started, 1),
            "bf16_psnr": round(bf16_fidelity(student, tests.inputs), 2),
        }
    steps = [point["step"] for point in next(iter(results["variants"].values()))["curve"]]
    print()
    print("| variant | params | MACs | " + " | ".join(f"step {s}" for s in steps) + " | bf16 vs fp32 |")
    print("|---|---:|---:|" + "---:|" * (len(steps) + 1))
    for label, variant in results["variants"].items():
        cells = " | ".join(f"{p['psnr']:.2f} / {p['ssim']:.3f}" for p in variant["curve"])
        print(
            f"| {label} | {variant['params']:,} | {variant['macs'] / 1e9:.3f} G | {cells} | {variant['bf16_psnr']:.1f} dB |"
        )
    t = results["teacher"]
    print(
        f"\nTeacher {t['identity']}: {t['blocks']} blocks, ngf {t['ngf']}, {t['params']:,} params, "
        f"{t['macs'] / 1e9:.3f} G MACs; bf16 autocast vs fp32 on the test images {t['bf16_psnr']:.1f} dB"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
