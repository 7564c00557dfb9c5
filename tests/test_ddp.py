"""`torchrun --nproc_per_node 2 ... train-teacher` on the CPU (gloo): DDP training and resume.

Two ranks with one image each do the mathematics of one process with a batch of two (instance norm
and the losses are per-sample means, DDP averages the gradients, and rank r takes the items r, r + 2,
... of each epoch's order). With the image pools off, a DDP run must therefore end where a
single-process run with ``--batch-size 2`` ends, up to the order of floating-point sums; a run that
lost a rank's gradients, sharded the data wrongly, or let the ranks drift apart would not.

Both runs are pinned to ``--device cpu --no-amp`` and run in float64 (tests/float64_cli.py), so the
tolerance follows from float64 rounding, not from one CPU's kernels (see ``TOLERANCE``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

import float64_cli
from cgdistill.nets import DiscriminatorConfig, GeneratorConfig, PatchDiscriminator, ResnetGenerator
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.student import build_student
from cgdistill.train.teacher import train_teacher
from cgdistill.weights import read_file

# The tiny settings of the teacher tests, pools off so that DDP x2 equals batch 2 in one process.
SETTINGS = dict(
    blocks=2, ngf=4, ndf=4, image_size=24, load_size=28, pool_size=0,
    epochs=1, epochs_decay=1, sample_every=2, log_every=1, seed=3,
)  # fmt: skip
LAUNCHER = Path(float64_cli.__file__)

# How far the DDP and the one-process outputs may differ. The runs differ only in the order of
# float64 sums: gradients agree to ~100 ulps (1e-14 for gradients of order one). Adam's step
# lr * m / (sqrt(v) + eps) moves by at most lr / eps times a gradient difference, so three steps
# part any weight by at most 3 * 2e-4 / 1e-8 * 1e-14 = 6e-10; these tiny networks' outputs move by
# less than 1e3 times their weights' change. (The losses round to fp32, but their inputs differ by
# far less than an fp32 ulp, so both runs round them alike.) Training moves outputs by > 1e-3.
TOLERANCE = 1e-6
MOVED = 1e-3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 float64_cli.py train-teacher ...`` with the tiny SETTINGS."""
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()]
    return launch(home, str(LAUNCHER), "train-teacher", *flags, *args)


def launch(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 ARGS --data toy --device cpu --no-amp`` with the test's home, one
    thread per rank."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               *args, "--data", "toy", "--device", "cpu", "--no-amp"]  # fmt: skip
    env = {**os.environ, "CGDISTILL_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def float64_network(path: Path) -> torch.nn.Module:
    """The network in a model file, with its float64 weights kept float64."""
    tensors, info = read_file(path)
    if info.kind == "generator":
        network = ResnetGenerator(GeneratorConfig(**info.config))
    else:
        network = PatchDiscriminator(DiscriminatorConfig(**info.config))
    network.double().load_state_dict(tensors)
    assert all(t.dtype == torch.float64 for t in tensors.values()), path
    return network.eval()


def outputs(run: Path) -> dict[str, torch.Tensor]:
    """What the four trained networks compute on one fixed input.

    Functions, not weights: a conv bias that feeds a (non-affine) instance norm has no effect and a
    gradient that is zero up to rounding.
    """
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        out = {name: float64_network(run / f"G_{name}.safetensors")(x) for name in ("A2B", "B2A")}
        out.update({name: float64_network(run / f"D_{name}.safetensors")(x) for name in ("A", "B")})
    return out


def test_two_cpu_ranks_train_resume_and_match_one_process_with_batch_two(toy, home, monkeypatch):
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

    monkeypatch.setattr(float64_cli.Runtime, "prepare", float64_cli.prepare)
    monkeypatch.setattr(float64_cli.Runtime, "to_device", float64_cli.to_device)
    cpu = dict(device="cpu", amp=False)
    # Split as the DDP run was: a run's learning rates follow its --max-steps (the schedule is compressed
    # onto it), so steps 1-2 ran with the lr of a 2-step run and step 3 with that of a 3-step run.
    single = TeacherConfig(data="toy", name="single", batch_size=2, **cpu, **SETTINGS)
    train_teacher(replace(single, max_steps=2))
    single = train_teacher(replace(single, max_steps=3), resume=True)
    ddp, one = outputs(run), outputs(single)
    for name in ddp:
        torch.testing.assert_close(ddp[name], one[name], rtol=0, atol=TOLERANCE, msg=name)
    # ... and training moved every network's output far more than that tolerance.
    start = outputs(train_teacher(TeacherConfig(data="toy", name="start", max_steps=1, lr=0.0, **cpu, **SETTINGS)))
    assert min((ddp[name] - start[name]).abs().max().item() for name in ddp) > MOVED


def test_an_existing_run_is_refused_by_every_rank_without_hanging(toy, home):
    (home / "runs" / "taken").mkdir(parents=True)
    (home / "runs" / "taken" / "config.json").write_text("{}")
    (home / "runs" / "taken" / "G_A2B.safetensors").write_bytes(b"")  # work that a new run would destroy
    result = torchrun(home, "--name", "taken", "--max-steps", "1")
    assert result.returncode != 0
    text = " ".join(result.stderr.split())
    assert "Error: Run 'taken' already exists" in text
    assert "Error (rank 1): Run 'taken' already exists" in text


def test_a_narrower_student_without_the_feature_loss_has_no_adapters():
    teacher = ResnetGenerator(GeneratorConfig(blocks=2, ngf=8))
    student, notes = build_student(DistillConfig(blocks=1, ngf=4, lambda_feature=0), teacher, torch.Generator())
    assert list(student.adapters.parameters()) == []
    assert not any("adapters" in note for note in notes)


def test_ddp_distills_a_narrower_student_without_the_feature_loss(toy, home):
    # Adapter weights that no loss uses get no gradient, and DDP refuses such a step.
    teacher = dict(SETTINGS, blocks=1, max_steps=1, sample_every=1000, device="cpu", amp=False)
    train_teacher(TeacherConfig(data="toy", name="t", **teacher))
    flags = ("--teacher", "t", "--direction", "B2A", "--name", "s", "--blocks", "1", "--ngf", "2", "--lambda-feature", "0",
             "--image-size", "24", "--load-size", "28", "--ndf", "4", "--max-steps", "3",
             "--sample-every", "1000")  # fmt: skip
    result = launch(home, "-m", "cgdistill", "distill", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DDP x2" in result.stderr and (home / "runs" / "s" / "G.safetensors").is_file()


def test_a_held_run_is_refused_by_every_rank_without_hanging(toy, home):
    from cgdistill import paths
    from cgdistill.runlock import hold_run

    with hold_run(paths.run_path("held")):
        result = torchrun(home, "--name", "held", "--max-steps", "1")
    assert result.returncode != 0
    text = " ".join(result.stderr.split())
    assert f"Error: Run 'held' is being written by process {os.getpid()}" in text
    assert "Error (rank 1): Run 'held' is being written by another process" in text


def test_sigterm_to_one_rank_stops_every_rank_at_one_saved_step(toy, home):
    """Rank 1 alone gets the signal; rank 0 learns of it at the next logged step and saves that step."""
    import signal
    import time

    from cli_processes import latest_step, logged_steps

    flags = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items() if key != "log_every"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "cgdistill", "train-teacher", *flags, "--log-every", "3",
               "--name", "term", "--max-steps", "100000", "--data", "toy", "--device", "cpu", "--no-amp"]  # fmt: skip
    env = {**os.environ, "CGDISTILL_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    agent = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = home / "runs" / "term"
    deadline = time.time() + 180
    while time.time() < deadline and agent.poll() is None and logged_steps(run) < 3:
        time.sleep(0.05)
    children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
    rank1 = next(pid for pid in children if b"RANK=1\0" in Path(f"/proc/{pid}/environ").read_bytes())
    os.kill(int(rank1), signal.SIGTERM)
    _, err = agent.communicate(timeout=180)
    text = " ".join(err.split())
    step = latest_step(run)
    # Said by rank 0, which got no signal itself; it saved the step the ranks agreed on.
    assert f"Stopped by another rank's signal at step {step}" in text, err[-3000:]
    assert step >= 3
    resumed = torchrun(home, "--name", "term", "--resume", "--max-steps", str(step + 1))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming term at step {step}" in resumed.stderr
