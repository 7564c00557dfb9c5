"""The teacher trainer: files it leaves, exact resume, Ctrl-C, refusal to overwrite, the NaN stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from cgdistill.errors import CgdistillError, WorkFailed
from cgdistill.train.config import TeacherConfig
from cgdistill.train.stopping import TrainingInterrupted
from cgdistill.train.teacher import train_teacher
from cgdistill.weights import load_generator
from teacher_runs import MODEL_FILES, weights


def tiny(**overrides) -> TeacherConfig:
    settings = dict(
        data="toy", blocks=2, ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2,
        epochs=1, epochs_decay=1, save_every=1000, sample_every=3, log_every=1, seed=3,
        device="cpu",  # bitwise resume is a CPU promise (docs/training.md)
    )  # fmt: skip
    settings.update(overrides)
    return TeacherConfig(**settings)


def test_a_short_run_writes_the_four_models_state_samples_and_metrics(toy):
    run = train_teacher(tiny(max_steps=4))
    for name in MODEL_FILES:
        assert (run / name).is_file()
    assert (run / "state" / "latest.json").is_file()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000003.png", "step_0000004.png"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert list(records[0])[:5] == ["step", "epoch", "lr", "steps_per_s", "time"]
    assert list(records[0])[5:] == ["D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B"]
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "teacher" and config["settings"]["blocks"] == 2


def test_the_generators_carry_their_direction_and_dataset(toy):
    run = train_teacher(tiny(max_steps=1))
    generator, info = load_generator(run / "G_B2A.safetensors")
    assert (info.direction, info.dataset, info.step, info.image_size) == ("B2A", "toy", 1, 24)
    assert generator.config.blocks == 2


def test_training_changes_the_weights(toy):
    run = train_teacher(tiny(max_steps=1, name="one"))
    before = weights(run)
    run = train_teacher(tiny(max_steps=3, name="one"), resume=True)
    after = weights(run)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_resuming_is_bitwise_exact(toy, interrupt_after):
    straight = train_teacher(tiny(max_steps=7, name="straight"))
    with pytest.raises(TrainingInterrupted):
        train_teacher(tiny(max_steps=7, name="split"), observer=interrupt_after(4))
    split = train_teacher(tiny(max_steps=7, name="split"), resume=True)
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The resumed run's log continues where it stopped, without duplicate lines.
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 8))


def test_resume_crosses_an_epoch_boundary_exactly(toy, interrupt_after):
    # 6 training images: epoch 1 is steps 1-6, so stopping at 5 and resuming runs into epoch 2.
    straight = train_teacher(tiny(max_steps=9, name="straight"))
    with pytest.raises(TrainingInterrupted):
        train_teacher(tiny(max_steps=9, name="split"), observer=interrupt_after(5))
    split = train_teacher(tiny(max_steps=9, name="split"), resume=True)
    a, b = weights(straight), weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_existing_run_is_never_overwritten(toy):
    train_teacher(tiny(max_steps=1, name="mine"))
    with pytest.raises(CgdistillError, match="pass --resume"):
        train_teacher(tiny(max_steps=1, name="mine"))


def test_resuming_a_missing_run_names_it(toy):
    with pytest.raises(CgdistillError, match="no run named 'ghost'"):
        train_teacher(tiny(max_steps=1, name="ghost"), resume=True)


def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(toy, monkeypatch):
    run = train_teacher(tiny(max_steps=2, name="nan"))
    good = weights(run)
    import cgdistill.train.teacher as teacher

    calls = {"n": 0}
    real = teacher.cycle_loss

    def poisoned(a, b):
        calls["n"] += 1
        return real(a, b) * (float("nan") if calls["n"] > 2 else 1.0)

    monkeypatch.setattr(teacher, "cycle_loss", poisoned)
    with pytest.raises(WorkFailed, match="diverged at step 4"):
        train_teacher(tiny(max_steps=6, name="nan", save_every=1), resume=True, given={"save_every", "max_steps"})
    after = weights(run)
    # Step 3 was good and saved (save_every=1); step 4 diverged and wrote nothing.
    assert json.loads((run / "state" / "latest.json").read_text())["step"] == 3
    assert any(not torch.equal(good[k], after[k]) for k in good)


def test_the_cli_trains_and_refuses_to_overwrite(cli, toy):
    args = ["train-teacher", "--data", "toy", "--max-steps", "2", "--image-size", "24", "--load-size", "28",
            "--blocks", "1", "--ngf", "4", "--ndf", "4", "--name", "cli-run"]  # fmt: skip
    first = cli(*args)
    assert first.code == 0, first.err
    second = cli(*args)
    assert second.code == 2
    assert "pass --resume to continue it, or another --name" in second.err_text


def test_a_missing_dataset_names_the_download_command(cli):
    result = cli("train-teacher", "--data", "monet2photo", "--max-steps", "1")
    assert result.code == 2
    assert "cgdistill download monet2photo" in result.err_text


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(toy, home):
    env = {**os.environ, "CGDISTILL_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "cgdistill", "train-teacher", "--data", "toy", "--image-size", "24",
            "--load-size", "28", "--blocks", "1", "--ngf", "4", "--ndf", "4", "--name", "stopped",
            "--max-steps", "100000", "--log-every", "1"]  # fmt: skip
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = home / "runs" / "stopped" / "metrics.jsonl"
    import time

    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "--name stopped --resume" in " ".join(err.split())
    state = json.loads((home / "runs" / "stopped" / "state" / "latest.json").read_text())
    assert state["step"] >= 3
    generator, info = load_generator(home / "runs" / "stopped" / "G_A2B.safetensors")
    assert info.step == state["step"]


def test_an_image_size_that_is_not_a_multiple_of_4_is_refused(cli, toy):
    result = cli("train-teacher", "--data", "toy", "--image-size", "30", "--load-size", "32", "--max-steps", "1")
    assert result.code == 2
    assert "--image-size 30 is not a multiple of 4" in result.err_text


def test_a_crop_too_small_for_the_patchgan_is_a_usage_error(cli, toy):
    assert cli("train-teacher", "--data", "toy", "--image-size", "16", "--max-steps", "1").code == 2
