"""``distill --time-budget``: a wall time becomes a step count, fixed once and kept on resume."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.train import budget as budget_module
from cgdistill.train.budget import StepBudget, parse_duration, steps_within
from cgdistill.train.distill import distill
from cgdistill.train.loop import Observer
from cgdistill.train.stopping import TrainingInterrupted
from test_distill import teacher_run, tiny  # noqa: F401  (the fixture is used by name)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("2.5m", 150), ("45", 45)]
)
def test_durations_read_as_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["15x", "m", "", "0s", "-5", "1h 5", "nan"])
def test_a_bad_duration_is_refused_in_one_sentence(text):
    with pytest.raises(CgdistillError, match="--time-budget"):
        parse_duration(text)


def test_the_steps_that_fit_leave_room_for_every_evaluation():
    # 100 s left, 1 s a step, an evaluation of 5 s every 10 steps and one after the last:
    # k steps cost k + 5 * k / 10 + 5 <= 100, so k = 63.
    assert steps_within(100.0, 1.0, 5.0, 10) == 63
    assert steps_within(100.0, 1.0, 0.0, 0) == 100
    assert steps_within(3.0, 1.0, 5.0, 10) == 0


def test_the_budget_waits_for_timed_steps_before_fixing_the_count():
    budget = StepBudget(seconds=1000.0)
    assert not budget.ready(1)
    budget.start_timing(1)
    assert not budget.ready(3)  # too few steps timed, whatever the clock says


class StopAfterTheCountIsFixed(Observer):
    """Presses Ctrl-C once the run has said how many steps its budget buys."""

    def __init__(self) -> None:
        self.fixed = self.pressed = False
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)
        self.fixed = self.fixed or text.startswith("Time budget")

    def update(self, report) -> None:
        if self.fixed and not self.pressed:  # once: the count may be fixed a second time before the stop lands
            self.pressed = True
            os.kill(os.getpid(), signal.SIGINT)


def _settings(name: str) -> dict:
    return json.loads((paths.run_path(name) / "config.json").read_text())["settings"]


class Ticks:
    """A machine where every reading of the budget's clock is ``tick`` seconds after the last one, so the
    count a budget buys does not depend on how busy the test machine is."""

    def __init__(self, tick: float) -> None:
        self.t, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


def test_a_budget_fixes_the_step_count_stores_it_and_resumes_bit_exactly(teacher_run, monkeypatch):  # noqa: F811
    monkeypatch.setattr(budget_module, "_clock", Ticks(0.5))
    # A long schedule (the budget, not the epochs, ends the run).
    long = dict(teacher="teacher", direction="B2A", epochs=100, epochs_decay=100)
    stopper = StopAfterTheCountIsFixed()
    with pytest.raises(TrainingInterrupted):
        distill(tiny(name="budgeted", time_budget="20s", **long), observer=stopper)
    told = [line for line in stopper.lines if line.startswith("Time budget 20s")]
    assert told and "this run trains" in told[0]
    fixed = _settings("budgeted")["budget_steps"]
    assert fixed is not None and fixed > 6 and _settings("budgeted")["max_steps"] == fixed

    resumed = distill(tiny(name="budgeted"), resume=True)
    assert _settings("budgeted")["budget_steps"] == fixed
    assert json.loads((resumed / "metrics.jsonl").read_text().splitlines()[-1])["step"] == fixed

    # The run is the run a plain --max-steps of that count gives: the timed steps ran at the schedule's flat start.
    straight = distill(tiny(name="straight", max_steps=fixed, **long))
    a, b = load_file(str(resumed / "G.safetensors")), load_file(str(straight / "G.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_max_steps_caps_a_budget(teacher_run, monkeypatch):  # noqa: F811
    long = dict(teacher="teacher", direction="B2A", epochs=100, epochs_decay=100, time_budget="1h")
    run = distill(tiny(name="capped", max_steps=9, **long))
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 9

    # Once the count is fixed it is at most --max-steps too.
    monkeypatch.setattr(StepBudget, "ready", lambda self, done: done == 7)
    monkeypatch.setattr(StepBudget, "fix_total", lambda self, done, flat_share: 10_000)
    distill(tiny(name="capped-later", max_steps=12, **long))
    assert _settings("capped-later")["budget_steps"] == 12


def test_the_cli_refuses_a_bad_budget_in_one_sentence(cli, teacher_run):  # noqa: F811
    result = cli("distill", "--teacher", "teacher", "--direction", "B2A", "--time-budget", "15 minutes")
    assert result.code == 2
    assert "--time-budget '15 minutes' is not a duration" in result.err_text


def test_the_count_is_fixed_again_past_the_slow_first_steps(monkeypatch):
    """First steps at 2 s, the rest at 1 s: the second count, from the later steps alone, buys more."""
    clock = [0.0]
    monkeypatch.setattr(budget_module, "_clock", lambda: clock[0])
    budget = StepBudget(seconds=1000.0, started=0.0, flat_share=0.5)
    budget.start_timing(1)
    done = 1
    while not budget.ready(done):
        clock[0] += 2.0
        done += 1
    first = budget.fix(done, cap=10_000)
    assert budget.pending and first == done + steps_within(980.0 - clock[0], 2.0, 0.0, 0)
    count, fixes = first, 1
    while budget.pending:  # every 15% of the budget, while the lr is flat; the loop passes the current count
        while not budget.ready(done):
            clock[0] += 1.0
            done += 1
        count, fixes = budget.fix(done, cap=count), fixes + 1
    assert fixes == 4 and 0.45 <= clock[0] / 1000.0 < 0.5  # at 3%, 18%, 33% and 48% of the budget
    assert count == done + steps_within(980.0 - clock[0], 1.0, 0.0, 0) > first
    assert f"trains {count} steps (stored" in budget.report() and f"first steps alone said {first})" in budget.report()
    # --max-steps still caps the second count.
    capped = StepBudget(seconds=1000.0, started=0.0, flat_share=0.5)
    clock[0] = 0.0
    capped.start_timing(1)
    clock[0] = 30.0
    capped.fix(20, cap=400)
    clock[0] = 200.0
    assert capped.fix(200, cap=300) == 400


def test_a_small_first_count_is_fixed_again_before_its_lr_would_decay(monkeypatch):
    """A first count made from slow first steps (a compile) must not end the flat lr part, or the run,
    before the second count replaces it."""
    clock = [0.0]
    monkeypatch.setattr(budget_module, "_clock", lambda: clock[0])
    budget = StepBudget(seconds=1000.0, started=0.0, flat_share=0.5)
    budget.start_timing(1)
    clock[0] = 30.0
    first = budget.fix(6, cap=10_000)  # 29 s for 5 steps: the compile
    done = 6
    while not budget.ready(done):
        clock[0] += 0.1
        done += 1
    assert clock[0] < budget_module.REFINE_SHARE * 1000.0 and done == first // 2
    second = budget.fix(done, cap=first)
    assert second > first and budget.pending and "for now" in budget.report()  # still early: for now
    count = second
    while budget.pending:
        while not budget.ready(done):
            clock[0] += 0.1
            done += 1
        count = budget.fix(done, cap=count)
    assert count > first and clock[0] >= budget_module.REFINE_SHARE * 1000.0
