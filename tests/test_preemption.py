"""Preemption: SIGTERM and SIGHUP stop a run like Ctrl-C (a complete checkpoint, a resume hint, exit
75), at any moment, even inside a save, and the resumed run ends bit-exactly where an uninterrupted
one ends; ``--save-every-minutes`` checkpoints by the clock."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
import torch

from cgdistill.train import loop, stopping
from cgdistill.train.config import TeacherConfig
from cgdistill.train.teacher import train_teacher
from cli_processes import latest_step, launch, wait_for_step
from teacher_runs import weights

STEPS = 20


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_stop_signal_saves_a_checkpoint_says_how_to_resume_and_exits_75(toy, home, signum):
    process = launch(home, "--name", "preempted", "--max-steps", "100000")
    run = home / "runs" / "preempted"
    wait_for_step(process, run, 2)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == stopping.RESUMABLE_EXIT == 75, err
    assert f"Stopped by {signal.Signals(signum).name} at step" in " ".join(err.split())
    assert "--name preempted --resume" in " ".join(err.split())
    state = json.loads((run / "state" / "latest.json").read_text())
    assert state["step"] >= 2
    assert not [p for p in (run / "state").iterdir() if p.name.startswith(".tmp")]


def test_a_hangup_after_the_terminal_is_gone_still_saves_and_exits_75(toy, home):
    process = launch(home, "--name", "hup", "--max-steps", "100000", "--save-every", "100000")
    run = home / "runs" / "hup"
    wait_for_step(process, run, 2)
    process.stdout.close()  # writing to a hung-up terminal fails, as writing to a closed pipe does
    process.stderr.close()
    time.sleep(0.5)  # the display writes into the closed pipe at least once
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=120) == 75
    assert latest_step(run) >= 2


def test_signals_at_random_moments_then_resume_end_bit_exactly_where_a_straight_run_ends(toy, home):
    straight = launch(home, "--name", "straight", "--max-steps", str(STEPS))
    _, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err
    # Signals fall within the steps still to run at the straight run's pace (a fixed window of seconds
    # outlasts a run of tiny steps on an idle machine, and no signal would ever arrive).
    clock = [
        json.loads(line)["time"] for line in (home / "runs" / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    step_s = (clock[-1] - clock[0]) / (len(clock) - 1)

    seed = int(time.time())
    rng = random.Random(seed)
    run, stops, resume = home / "runs" / "split", [], []
    for _ in range(20):  # each round: start or resume, signal at a random moment (one or two signals)
        process = launch(home, "--name", "split", "--max-steps", str(STEPS), *resume)
        done_before = latest_step(run) if resume else 0
        wait_for_step(process, run, done_before + 1)
        time.sleep(rng.uniform(0, 0.8 * step_s * max(0, STEPS - done_before - 1)))
        process.send_signal(rng.choice([signal.SIGTERM, signal.SIGHUP]))
        if rng.random() < 0.5:  # a second signal, often while the first one's checkpoint is written
            time.sleep(rng.uniform(0, 0.05))
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
        latest = latest_step(run)
        if process.returncode != stopping.RESUMABLE_EXIT:
            # A signal after the last step's save found the run complete (the default action ends it).
            assert process.returncode == 0 or latest == STEPS, f"seed {seed}: {err}"
            break
        stops.append(latest)
        resume = ["--resume"]
    else:
        pytest.fail(f"seed {seed}: the run did not finish in 20 rounds (stopped at {stops})")
    assert stops, f"seed {seed}: no signal arrived before the run ended"
    a, b = weights(home / "runs" / "straight"), weights(run)
    assert all(torch.equal(a[key], b[key]) for key in a), f"seed {seed}: stopped at {stops}"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1)), f"seed {seed}"


def test_save_every_minutes_checkpoints_when_the_time_has_passed(toy, monkeypatch):
    clock = {"now": 0.0}

    def minute_per_step() -> float:  # each look at the clock finds a minute more
        clock["now"] += 60.0
        return clock["now"]

    saved, real_save = [], loop.save_state
    monkeypatch.setattr(loop, "monotonic", minute_per_step)
    monkeypatch.setattr(loop, "save_state", lambda run_dir, position, **kw: saved.append(position.step) or real_save(run_dir, position, **kw))  # fmt: skip
    config = TeacherConfig(data="toy", blocks=1, ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2,
                           save_every=1000, sample_every=1000, log_every=1000, device="cpu", max_steps=4,
                           save_every_minutes=2.5)  # fmt: skip
    train_teacher(config)
    # The clock is read once before the loop (t=60) and once per step: 120, 180, 240 (due: 180 s
    # since 60 is >= 150 s), then the final step's save. Without the flag only step 4 would be saved.
    assert saved == [3, 4]
