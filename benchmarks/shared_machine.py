"""Two jobs on one machine: how much slower each runs than alone, with and without adaptive threads.

Usage: .venv/bin/python benchmarks/shared_machine.py [--jobs teacher,distill,translate,demo]
       [--teacher-steps 60] [--distill-steps 60] [--images 40] [--modes adaptive,fixed] [--json FILE]

For each job and each mode, the job runs once alone and then twice at the same moment (two
processes, each with its own run name); the figure that matters is ``together / alone`` (the slower
of the two, against the one alone): two jobs
that share the cores take about 2x (one after the other), two that fight over them took 9.4x here
(issue 21). Modes: ``adaptive`` is what the commands do now (threads from the free cores, re-chosen
every few seconds); ``fixed`` is the old behaviour, one thread per usable core whatever the load
(``CGDISTILL_ADAPT_THREADS=0``). OMP_NUM_THREADS is removed from the jobs' environment, since it
would fix the count in both modes.

Jobs (each a real command on the embedded toy data, in a fresh temporary home):
``teacher``  train-teacher --blocks 3 --image-size 64 --ngf 32 --ndf 32 --max-steps N (the issue's run)
``distill``  distill a 2-block student from such a teacher, --image-size 64, --max-steps N
``translate`` translate a folder of N toy test scenes enlarged to 256x256 with that teacher
``demo``     cgdistill demo (minutes alone; left out by default)

Other processes on the machine disturb both figures; the script prints ``uptime`` before and after,
so run it on an idle machine for the figures in docs/benchmarks.md. Each process's CPU time (user +
system) is printed too: threads that spin while waiting for a descheduled partner burn it, so it
shows the fight even where the wall times are disturbed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

MODES = {"adaptive": {}, "fixed": {"CGDISTILL_ADAPT_THREADS": "0"}}
JOBS = ("teacher", "distill", "translate", "demo")
SMALL = ["--blocks", "3", "--image-size", "64", "--ngf", "32", "--ndf", "32"]


def cgdistill(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cgdistill", "--home", str(home), *args]


def job_command(job: str, home: Path, work: Path, copy: str, args: argparse.Namespace) -> list[str]:
    """The command of one process of ``job``; ``copy`` keeps two processes' outputs apart."""
    if job == "teacher":
        return cgdistill(home, "train-teacher", "--data", "toy", "--name", f"t-{copy}", *SMALL,
                         "--max-steps", str(args.teacher_steps), "--save-every", "100000", "--sample-every", "100000")  # fmt: skip
    if job == "distill":
        return cgdistill(home, "distill", "--teacher", "base", "--direction", "A2B", "--name", f"s-{copy}",
                         "--blocks", "2", "--image-size", "64", "--max-steps", str(args.distill_steps),
                         "--eval-every", "100000", "--save-every", "100000", "--sample-every", "100000")  # fmt: skip
    if job == "translate":
        return cgdistill(home, "translate", str(work / "big"), "--model", "base", "--direction", "A2B",
                         "--max-side", "0", "-o", str(work / f"out-{copy}"))  # fmt: skip
    if job == "demo":
        return cgdistill(home, "demo", "-o", str(work / f"demo-{copy}"))
    raise ValueError(job)


def prepare(home: Path, work: Path, args: argparse.Namespace, env: dict) -> None:
    """The toy data, a teacher run ``base`` for distill and translate, and a folder of 256 px scenes."""
    subprocess.run(cgdistill(home, "download", "toy"), env=env, check=True, capture_output=True)
    base = cgdistill(home, "train-teacher", "--data", "toy", "--name", "base", *SMALL, "--max-steps", "20")
    subprocess.run(base, env=env, check=True, capture_output=True)
    big = work / "big"
    big.mkdir()
    scenes = sorted((home / "datasets" / "toy" / "testA").glob("*.png"))
    for index in range(args.images):
        image = Image.open(scenes[index % len(scenes)]).convert("RGB").resize((256, 256), Image.BICUBIC)
        image.save(big / f"{index:04d}.png")


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one process: spinning threads show in the second."""
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime


def clean(job: str, home: Path, work: Path) -> None:
    """Remove the outputs of a measurement, so that the next starts as this one did."""
    for path in [*home.joinpath("runs").glob("t-*"), *home.joinpath("runs").glob("s-*"), *work.glob("out-*"),
                 *work.glob("demo-*")]:  # fmt: skip
        shutil.rmtree(path)


def measure(job: str, mode: str, home: Path, work: Path, args: argparse.Namespace, env: dict) -> dict:
    """One alone, then two together, of ``job`` under ``mode``."""
    env = {**env, **MODES[mode]}
    clean(job, home, work)
    alone, alone_cpu = timed(job_command(job, home, work, "alone", args), env)
    clean(job, home, work)
    with ThreadPoolExecutor(2) as pool:
        pair = list(pool.map(lambda copy: timed(job_command(job, home, work, copy, args), env), ("a", "b")))
    clean(job, home, work)
    return {"job": job, "mode": mode, "alone_s": round(alone, 2), "alone_cpu_s": round(alone_cpu, 2),
            "together_s": [round(wall, 2) for wall, _ in pair], "together_cpu_s": [round(cpu, 2) for _, cpu in pair],
            "ratio": round(max(wall for wall, _ in pair) / alone, 2)}  # fmt: skip


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="teacher,distill,translate", help=f"comma-separated, of {', '.join(JOBS)}")
    parser.add_argument("--modes", default="fixed,adaptive", help="comma-separated, of adaptive, fixed")
    parser.add_argument("--teacher-steps", type=int, default=60)
    parser.add_argument("--distill-steps", type=int, default=60)
    parser.add_argument("--images", type=int, default=40, help="256 px images that translate translates")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1] / "src"))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    print(f"{cpu}, {os.cpu_count()} CPUs, usable {len(os.sched_getaffinity(0))}; python {platform.python_version()}")
    print(f"before: {uptime()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cgdistill-shared-") as tmp:
        home, work = Path(tmp) / "home", Path(tmp) / "work"
        work.mkdir()
        prepare(home, work, args, env)
        for job in args.jobs.split(","):
            for mode in args.modes.split(","):
                row = measure(job, mode, home, work, args, env)
                rows.append(row)
                wall, cpu = row["together_s"], row["together_cpu_s"]
                print(f"{job:9s} {mode:8s} alone {row['alone_s']:6.1f} s (cpu {row['alone_cpu_s']:6.1f} s)   "
                      f"together {wall[0]:6.1f} / {wall[1]:6.1f} s (cpu {cpu[0]:6.1f} / {cpu[1]:6.1f} s)   "
                      f"ratio {row['ratio']:5.2f}x   ({uptime()})", flush=True)  # fmt: skip
    print(f"after: {uptime()}")
    if args.json is not None:
        args.json.write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
