"""Real `cgdistill train-teacher` processes for the tests of signals and of the run lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Tiny teacher runs that checkpoint after every step, so that a signal often lands inside a save.
FLAGS = ["--data", "toy", "--image-size", "24", "--load-size", "28", "--blocks", "1", "--ngf", "4", "--ndf", "4",
         "--pool-size", "2", "--seed", "3", "--device", "cpu", "--log-every", "1", "--save-every", "1",
         "--sample-every", "5"]  # fmt: skip


def cgdistill(home: Path, *args: str) -> subprocess.Popen:
    """``cgdistill ARGS`` in its own process, with the test's home and one thread."""
    env = {**os.environ, "CGDISTILL_HOME": str(home), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "cgdistill", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def launch(home: Path, *args: str) -> subprocess.Popen:
    """``cgdistill train-teacher FLAGS ARGS`` in its own process."""
    return cgdistill(home, "train-teacher", *FLAGS, *args)


def logged_steps(run: Path) -> int:
    """The last step in metrics.jsonl (0 before the first line)."""
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["step"] if lines else 0


def wait_for_step(process: subprocess.Popen, run: Path, step: int, timeout: float = 120) -> None:
    """Until the process has logged ``step`` (its signal handlers are in place then) or ended."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and logged_steps(run) < step:
        time.sleep(0.02)


def latest_step(run: Path) -> int:
    """The step of the run's last complete checkpoint."""
    return json.loads((run / "state" / "latest.json").read_text())["step"]


def first_to_end(
    first: subprocess.Popen, second: subprocess.Popen, timeout: float = 120
) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Of two processes started together, (the one that ended first, the one still running)."""
    deadline = time.time() + timeout
    while time.time() < deadline and first.poll() is None and second.poll() is None:
        time.sleep(0.05)
    return (first, second) if first.poll() is not None else (second, first)
