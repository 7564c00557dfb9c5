"""`make gpu-check`: the documented workflow on a CUDA GPU, end to end, with its speed, in minutes.

Usage: .venv/bin/python benchmarks/gpu_check.py [DATA] [--image-size 256] [--output DIR]
       [--skip STAGE,...] [--steps N] [--device cuda|cpu]

DATA is a dataset folder with trainA/ trainB/ testA/ testB/ (a small real one, e.g. a few hundred
horse2zebra images); without it, the toy dataset is generated offline at --image-size. Every stage
runs the real CLI in a subprocess, as a user would, with its own cgdistill home inside --output:

  teacher      train-teacher at --image-size, batch 1 (the issue's goal: >= 25 it/s on an H100)
  resume       train-teacher --resume continues the teacher where it stopped
  teacher-b8   train-teacher at batch 8: images/s
  distill      distill the teacher's B2A generator into a 3-block student
  translate    the student over testB (images/s, as translate prints it)
  compare      teacher vs student: latency, speed-up, fidelity
  compile      train-teacher --compile
  cuda-graphs  train-teacher --compile-mode reduce-overhead
  torchrun     torchrun --standalone --nproc_per_node 1 -m cgdistill train-teacher

Training rates come from each run's metrics.jsonl: the steps of the logged intervals after the
first two (which hold start-up, warm-up and compilation) over their time. Each stage also checks
what it should leave behind (model files, the device it ran on, the step it resumed at), and the
script exits 1 if any stage failed. Without a CUDA GPU it refuses in one sentence; `--device cpu`
runs the same stages on the CPU to check the script itself (with a small --image-size and --steps,
and `--skip compile,cuda-graphs`): its figures say nothing about any GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

STAGES = ("teacher", "resume", "teacher-b8", "distill", "translate", "compare", "compile", "cuda-graphs", "torchrun")
# Steps per stage: enough logged intervals past warm-up for a rate, few enough for minutes in all.
STEPS = {"teacher": 300, "resume": 100, "teacher-b8": 60, "distill": 300, "compile": 150, "torchrun": 150}
LOG_EVERY = 25
GOAL_IT_S = 25.0  # issue 10: 2.7x the authors' 9.1 it/s at 256 px, batch 1, on an H100


@dataclass
class Stage:
    name: str
    ok: bool = False
    seconds: float = 0.0
    rate: str = ""
    notes: list[str] = field(default_factory=list)


class Check:
    """Runs the CLI in subprocesses with one home, and keeps what each stage found."""

    def __init__(self, output: Path, device: str, image_size: int, data: Path, steps: dict[str, int]) -> None:
        self.output, self.device, self.image_size, self.data, self.steps = output, device, image_size, data, steps
        self.home = output / "home"
        self.stages: list[Stage] = []
        self.env = {**os.environ, "CGDISTILL_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}

    def run(self, stage: Stage, args: list[str], launcher: list[str] | None = None) -> subprocess.CompletedProcess:
        command = (launcher or [sys.executable, "-m", "cgdistill"]) + args
        log = self.output / f"{stage.name}.log"
        start = time.perf_counter()
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=900)
        stage.seconds = time.perf_counter() - start
        log.write_text(f"$ {' '.join(command)}\n\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
        if result.returncode != 0:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise StageFailed(f"exit {result.returncode}: {tail} (full output in {log})")
        return result

    def training_flags(self, name: str, steps: int, batch: int = 1) -> list[str]:
        return ["--data", str(self.data), "--name", name, "--max-steps", str(steps), "--device", self.device,
                "--image-size", str(self.image_size), "--load-size", str(load_size(self.image_size)),
                "--batch-size", str(batch), "--log-every", str(LOG_EVERY), "--save-every", str(steps),
                "--sample-every", str(steps)]  # fmt: skip

    def expect_device(self, result: subprocess.CompletedProcess) -> None:
        expected = "cuda:0" if self.device == "cuda" else "cpu"
        if f"on {expected}" not in " ".join(result.stderr.split()):
            raise StageFailed(f"the run did not say it trains on {expected}")

    def run_dir(self, name: str) -> Path:
        return self.home / "runs" / name


class StageFailed(Exception):
    pass


def load_size(image_size: int) -> int:
    """The recipe's 286 for 256, scaled: resize a little larger, then crop."""
    return image_size + image_size // 8 + (2 if image_size >= 256 else 0)


def steady_rate(run: Path, after_step: int = 0) -> float:
    """Steps per second over the logged intervals after the first two past ``after_step``."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if r["step"] > after_step]
    steps = seconds = 0.0
    for previous, record in list(zip(records, records[1:], strict=False))[1:]:
        span = record["step"] - previous["step"]
        steps += span
        seconds += span / record["steps_per_s"]
    if not seconds:
        raise StageFailed(f"{run / 'metrics.jsonl'} has too few logged steps to measure a rate")
    return steps / seconds


def last_step(run: Path) -> int:
    return json.loads((run / "state" / "latest.json").read_text())["step"]


def stage_teacher(check: Check, stage: Stage) -> None:
    steps = check.steps["teacher"]
    result = check.run(stage, ["train-teacher", *check.training_flags("teacher", steps)])
    check.expect_device(result)
    run = check.run_dir("teacher")
    missing = [f for f in ("G_A2B", "G_B2A", "D_A", "D_B") if not (run / f"{f}.safetensors").is_file()]
    if missing or last_step(run) != steps:
        raise StageFailed(f"the teacher run is incomplete (missing {missing}, step {last_step(run)})")
    rate = steady_rate(run)
    goal = "meets" if rate >= GOAL_IT_S else "misses"
    stage.rate = f"{rate:.1f} it/s"
    stage.notes.append(f"{goal} the {GOAL_IT_S:g} it/s goal (meant for 256 px, batch 1, an H100)")


def stage_resume(check: Check, stage: Stage) -> None:
    start = check.steps["teacher"]
    total = start + check.steps["resume"]
    flags = ["--name", "teacher", "--resume", "--max-steps", str(total), "--device", check.device]
    result = check.run(stage, ["train-teacher", *flags])
    if f"Resuming teacher at step {start}" not in " ".join(result.stderr.split()):
        raise StageFailed("the run did not say it resumed at the last checkpoint")
    if last_step(check.run_dir("teacher")) != total:
        raise StageFailed(f"the resumed run did not reach step {total}")
    stage.rate = f"{steady_rate(check.run_dir('teacher'), after_step=start):.1f} it/s"


def stage_teacher_b8(check: Check, stage: Stage) -> None:
    result = check.run(
        stage, ["train-teacher", *check.training_flags("teacher-b8", check.steps["teacher-b8"], batch=8)]
    )
    check.expect_device(result)
    rate = steady_rate(check.run_dir("teacher-b8"))
    stage.rate = f"{rate:.2f} it/s = {rate * 8:.1f} images/s"


def stage_distill(check: Check, stage: Stage) -> None:
    flags = check.training_flags("student", check.steps["distill"])
    result = check.run(stage, ["distill", "--teacher", "teacher", "--direction", "B2A", "--eval-every", "100", *flags])
    check.expect_device(result)
    run = check.run_dir("student")
    if not (run / "G.safetensors").is_file():
        raise StageFailed("the student run has no G.safetensors")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    fidelity = [r["psnr_to_teacher"] for r in records if "psnr_to_teacher" in r]
    stage.rate = f"{steady_rate(run):.1f} it/s"
    stage.notes.append(f"student-to-teacher PSNR {fidelity[0]:.2f} -> {fidelity[-1]:.2f} dB")


def stage_translate(check: Check, stage: Stage) -> None:
    inputs = check.data / "testB"
    out = check.output / "translated"
    result = check.run(stage, ["translate", str(inputs), "--model", "student", "--output", str(out),
                               "--device", check.device])  # fmt: skip
    found = re.search(r"Translated (\d+) of (\d+) images .*\(([\d.]+) images/s\)", " ".join(result.stdout.split()))
    if not found or found[1] != found[2] or found[1] == "0":
        raise StageFailed(f"translate did not translate every image: {result.stdout.strip()[-200:]}")
    stage.rate = f"{float(found[3]):.1f} images/s ({found[1]} images, decoding and writing included)"


def stage_compare(check: Check, stage: Stage) -> None:
    args = ["compare", "--teacher", "teacher", "--student", "student", "--data", str(check.data), "--limit", "20",
            "--json", "--device", check.device]  # fmt: skip
    result = json.loads(check.run(stage, args).stdout)
    teacher, student = result["teacher"], result["student"]
    stage.rate = f"teacher {teacher['latency_ms']:.2f} ms, student {student['latency_ms']:.2f} ms"
    stage.notes.append(
        f"speed-up {result['speedup']:.2f}x, fidelity {result['fidelity']['psnr']:.2f} dB PSNR on {result['device']}"
    )


def compiled_stage(mode: str | None):
    def stage_compile(check: Check, stage: Stage) -> None:
        name = "compiled" if mode is None else "cuda-graphs"
        flags = ["--compile"] if mode is None else ["--compile-mode", mode]
        check.env["TORCH_LOGS"] = "recompiles"
        try:
            result = check.run(stage, ["train-teacher", *check.training_flags(name, check.steps["compile"]), *flags])
        finally:
            del check.env["TORCH_LOGS"]
        check.expect_device(result)
        stage.rate = f"{steady_rate(check.run_dir(name)):.1f} it/s"
        recompiles = result.stderr.count("Recompiling function")
        stage.notes.append(f"{recompiles} recompilations logged (all belong in the first step)")

    return stage_compile


def stage_torchrun(check: Check, stage: Stage) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                "-m", "cgdistill"]  # fmt: skip
    result = check.run(stage, ["train-teacher", *check.training_flags("torchrun", check.steps["torchrun"])], launcher)
    check.expect_device(result)
    stage.rate = f"{steady_rate(check.run_dir('torchrun')):.1f} it/s"


RUNNERS = {
    "teacher": stage_teacher,
    "resume": stage_resume,
    "teacher-b8": stage_teacher_b8,
    "distill": stage_distill,
    "translate": stage_translate,
    "compare": stage_compare,
    "compile": compiled_stage(None),
    "cuda-graphs": compiled_stage("reduce-overhead"),
    "torchrun": stage_torchrun,
}
NEEDS = {"resume": "teacher", "distill": "teacher", "translate": "distill", "compare": "distill"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, help="dataset folder (default: the toy dataset, generated)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--output", type=Path, help="folder for the runs and logs (default: a new temporary one)")
    parser.add_argument("--skip", default="", help=f"comma-separated stages to leave out: {', '.join(STAGES)}")
    parser.add_argument("--steps", type=int, help="training steps of every training stage (default: each its own)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu-check needs a CUDA GPU and this machine has none that torch can use "
            "(torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU.",
            file=sys.stderr,
        )
        return 2
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    unknown = skip - set(STAGES)
    if unknown:
        print(
            f"--skip {', '.join(sorted(unknown))}: no such stage; the stages are {', '.join(STAGES)}.", file=sys.stderr
        )
        return 2
    if args.output is not None and args.output.exists() and any(args.output.iterdir()):
        print(f"--output {args.output} is not empty; pass a new or empty folder.", file=sys.stderr)
        return 2
    output = args.output or Path(tempfile.mkdtemp(prefix="cgdistill-gpu-check-"))
    output.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        from cgdistill.data.toy import make_toy_dataset

        data = make_toy_dataset(output / "toy", size=args.image_size, n_train=100, n_test=20)
    data = data.resolve()
    if args.device == "cuda":
        name = torch.cuda.get_device_name(0)
        print(f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        print(f"CPU ({os.cpu_count()} cores), torch {torch.__version__}: a check of this script, not of a GPU")
    print(f"data {data}, {args.image_size} px; runs and logs in {output}", flush=True)

    steps = {name: args.steps or count for name, count in STEPS.items()}
    check = Check(output, args.device, args.image_size, data, steps)
    started = time.perf_counter()
    for name in STAGES:
        if name in skip:
            continue
        stage = Stage(name)
        check.stages.append(stage)
        needed = NEEDS.get(name)
        if needed and not any(s.name == needed and s.ok for s in check.stages):
            stage.notes.append(f"skipped: needs the {needed} stage")
            print(f"{name:<12} skipped (needs {needed})", flush=True)
            continue
        try:
            RUNNERS[name](check, stage)
            stage.ok = True
        except (StageFailed, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as exc:
            stage.notes.append(f"FAILED: {exc}")
        status = "ok" if stage.ok else "FAILED"
        print(f"{name:<12} {status:<6} {stage.seconds:6.1f} s  {stage.rate}", flush=True)
        for line in stage.notes:
            print(f"{'':<12} {line}", flush=True)
    total = time.perf_counter() - started
    failed = [s.name for s in check.stages if not s.ok]
    print(f"total {total / 60:.1f} min; " + (f"FAILED: {', '.join(failed)}" if failed else "every stage passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
