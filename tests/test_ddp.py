"""`torchrun --nproc_per_node 2 -m cgdistill train-teacher` on the CPU (gloo): DDP training and resume.

Two ranks with one image each do the mathematics of one process with a batch of two (instance norm
and the losses are per-sample means, DDP averages the gradients, and rank r takes the items r, r + 2,
... of each epoch's order). With the image pools off, a DDP run must therefore end where a
single-process run with ``--batch-size 2`` ends, up to the order of floating-point sums; a run that
lost a rank's gradients, sharded the data wrongly, or let the ranks drift apart would not.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cgdistill import paths
from cgdistill.checkpoint import load_discriminator, load_generator
from cgdistill.data.toy import make_toy_dataset
from cgdistill.train.config import TeacherConfig
from cgdistill.train.teacher import train_teacher

# The tiny settings of the teacher tests, pools off so that DDP x2 equals batch 2 in one process.
SETTINGS = dict(
    blocks=2, ngf=4, ndf=4, image_size=24, load_size=28, pool_size=0,
    epochs=1, epochs_decay=1, sample_every=2, log_every=1, seed=3,
)  # fmt: skip


@pytest.fixture
def toy(home: Path) -> Path:
    return make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=6, n_test=2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m cgdistill train-teacher ...`` with the test's home, one thread per rank."""
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "cgdistill", "train-teacher", "--data", "toy", *flags, *args]  # fmt: skip
    env = {**os.environ, "CGDISTILL_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def outputs(run: Path) -> dict[str, torch.Tensor]:
    """What the four trained networks compute on one fixed input.

    Functions, not weights: a conv bias that feeds a (non-affine) instance norm has no effect and a
    gradient that is zero up to rounding, which Adam turns into steps of +-lr in either direction.
    """
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        out = {name: load_generator(run / f"G_{name}.safetensors")[0](x) for name in ("A2B", "B2A")}
        out.update({name: load_discriminator(run / f"D_{name}.safetensors")[0](x) for name in ("A", "B")})
    return out


def test_two_cpu_ranks_train_resume_and_match_one_process_with_batch_two(toy, home):
    first = torchrun(home, "--name", "ddp", "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "DDP x2" in first.stderr
    resumed = torchrun(home, "--name", "ddp", "--max-steps", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming ddp at step 2" in resumed.stderr

    run = home / "runs" / "ddp"
    # Rank 0 alone writes: one result line per launch, one log line per step, one checkpoint.
    assert resumed.stdout.count("Run ddp is in") == 1
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert [p.name for p in (run / "state").iterdir() if p.is_dir()] == ["step_0000003"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000002.png", "step_0000003.png"]
    assert json.loads((run / "config.json").read_text())["settings"]["pool_size"] == 0

    single = train_teacher(TeacherConfig(data="toy", name="single", batch_size=2, max_steps=3, **SETTINGS))
    ddp, one = outputs(run), outputs(single)
    for name in ddp:
        torch.testing.assert_close(ddp[name], one[name], rtol=0, atol=1e-5, msg=name)
    # ... and training moved every network's output far more than that tolerance.
    start = outputs(train_teacher(TeacherConfig(data="toy", name="start", max_steps=1, lr=0.0, **SETTINGS)))
    assert min((ddp[name] - start[name]).abs().max().item() for name in ddp) > 1e-3


def test_an_existing_run_is_refused_by_every_rank_without_hanging(toy, home):
    (home / "runs" / "taken").mkdir(parents=True)
    (home / "runs" / "taken" / "config.json").write_text("{}")
    (home / "runs" / "taken" / "G_A2B.safetensors").write_bytes(b"")  # work that a new run would destroy
    result = torchrun(home, "--name", "taken", "--max-steps", "1")
    assert result.returncode != 0
    text = " ".join(result.stderr.split())
    assert "Error: Run 'taken' already exists" in text
    assert "Error (rank 1): Run 'taken' already exists" in text
