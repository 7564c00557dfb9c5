"""One writer per run: a second training, resume, distillation or import of a live run is refused in
one sentence naming the holder; a lock left by a killed process is taken over; readers never wait."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import pytest

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.official import download_pretrained
from cgdistill.runlock import hold_run, lock_path, lock_run
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.distill import distill
from cgdistill.train.teacher import train_teacher
from cli_processes import cgdistill, first_to_end, launch, logged_steps, wait_for_step

REFUSAL = "is being written by process"


def squash(text: str) -> str:
    return " ".join(text.split())


def test_two_trainings_of_one_name_started_together_one_runs_the_other_is_refused(toy, home):
    first, second = (launch(home, "--name", "twin", "--max-steps", "100000") for _ in range(2))
    run = home / "runs" / "twin"
    refused, running = first_to_end(first, second)
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2, err
    assert f"Run 'twin' {REFUSAL} {running.pid}" in squash(err)
    wait_for_step(running, run, 2)
    running.send_signal(signal.SIGTERM)
    running.communicate(timeout=120)
    assert running.returncode == 75
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))  # one writer: every step logged once


def test_resume_of_a_run_that_is_still_training_is_refused_naming_the_process(toy, home):
    live = launch(home, "--name", "live", "--max-steps", "100000")
    wait_for_step(live, home / "runs" / "live", 1)
    second = launch(home, "--name", "live", "--resume")
    _, err = second.communicate(timeout=120)
    live.send_signal(signal.SIGTERM)
    live.communicate(timeout=120)
    assert second.returncode == 2, err
    assert f"Run 'live' {REFUSAL} {live.pid}" in squash(err)
    assert f"kill -TERM {live.pid}" in squash(err)


def test_a_lock_left_by_a_killed_process_is_taken_over_on_resume(toy, home):
    killed = launch(home, "--name", "crashed", "--max-steps", "100000")
    run = home / "runs" / "crashed"
    wait_for_step(killed, run, 2)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert lock_path(run).is_file()  # nobody released it
    step = logged_steps(run)
    resumed = launch(home, "--name", "crashed", "--resume", "--max-steps", str(step + 2))
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert f"was last written by process {killed.pid}" in squash(err)
    assert not lock_path(run).exists()  # a clean release leaves nothing behind


def tiny_teacher(name: str):
    config = TeacherConfig(data="toy", name=name, blocks=1, ngf=4, ndf=4, image_size=24, load_size=28,
                           max_steps=1, device="cpu")  # fmt: skip
    return train_teacher(config)


def test_a_held_lock_refuses_a_new_training_before_it_writes_anything(toy, home):
    run = paths.run_path("held")
    with hold_run(run), pytest.raises(CgdistillError, match=f"Run 'held' {REFUSAL} {os.getpid()}"):
        tiny_teacher("held")
    assert not run.exists()


def test_a_distillation_into_a_held_run_is_refused(toy, home):
    tiny_teacher("teacher")
    config = DistillConfig(teacher="teacher", direction="A2B", data="toy", name="st", blocks=1, image_size=24,
                           load_size=28, max_steps=1, device="cpu")  # fmt: skip
    with hold_run(paths.run_path("st")), pytest.raises(CgdistillError, match=f"Run 'st' {REFUSAL}"):
        distill(config)


def test_two_distillations_of_one_name_started_together_one_runs_the_other_is_refused(toy, home):
    tiny_teacher("teacher")
    flags = ["distill", "--teacher", "teacher", "--direction", "A2B", "--data", "toy", "--name", "st", "--blocks", "1",
             "--image-size", "24", "--load-size", "28", "--epochs", "100000", "--max-steps", "100000", "--device", "cpu",
             "--log-every", "1", "--eval-every", "1000", "--sample-every", "1000"]  # fmt: skip
    first, second = cgdistill(home, *flags), cgdistill(home, *flags)
    refused, running = first_to_end(first, second)
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2, err
    assert f"Run 'st' {REFUSAL} {running.pid}" in squash(err)
    wait_for_step(running, home / "runs" / "st", 1)
    running.send_signal(signal.SIGTERM)
    running.communicate(timeout=120)
    assert running.returncode == 75


def test_a_lock_that_cannot_be_created_says_where_and_what_to_do(home, monkeypatch):
    from cgdistill import runlock

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(runlock, "open", refuse, raising=False)
    with pytest.raises(CgdistillError, match=r"Cannot create the run lock .*\.x\.lock \(Permission denied\); make"):
        lock_run(paths.run_path("x"))


def test_an_import_into_a_held_run_is_refused(toy, home, tmp_path):
    with hold_run(paths.run_path("imported")), pytest.raises(CgdistillError, match=f"Run 'imported' {REFUSAL}"):
        download_pretrained("style_monet", run_name="imported", from_file=tmp_path / "absent.pth")


def test_readers_do_not_wait_for_a_held_run(toy, home, tmp_path):
    run = tiny_teacher("busy")
    image = next((toy / "testA").iterdir())
    env = {**os.environ, "CGDISTILL_HOME": str(home)}
    command = [sys.executable, "-m", "cgdistill", "translate", str(image), "--model", "busy", "--direction", "A2B",
               "--output", str(tmp_path / "out"), "--device", "cpu"]  # fmt: skip
    with hold_run(run):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert any((tmp_path / "out").iterdir())


def test_a_released_lock_lets_the_next_writer_in(home):
    run = paths.run_path("next")
    lock_run(run).release()
    with hold_run(run) as lock:
        assert lock.taken_over is None
