"""No host sync inside a training step: the loop reads losses from the device only when it logs,
samples or saves, and then checks every step since the last read for a non-finite loss.

On a GPU a read (``.item()``, ``.tolist()``, ``bool(tensor)``, ``.cpu()``) waits until every queued
kernel has run, so Python cannot queue the next step meanwhile. The CPU has no queue, so these tests
count the reads instead of timing them.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from cgdistill.errors import WorkFailed
from cgdistill.train import distill as distill_module
from cgdistill.train import teacher as teacher_module
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.ema import WeightAverage
from cgdistill.train.runtime import Runtime

# Tensor methods that make the host wait for the device.
READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "nonzero"}


def _reads_adams_step_counter() -> bool:
    """torch.optim reads its per-parameter step counts with ``.item()``; they stay on the CPU even
    when the parameters are on a GPU (unless ``capturable``), so these reads never wait for it."""
    caller = sys._getframe(2).f_code
    return caller.co_name == "_get_value" and f"torch{os.sep}optim" in caller.co_filename


class CountReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS and not _reads_adams_step_counter():
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


# The pools off: their coin flips read a CPU generator's tensor (no device involved), and a test on
# the CPU could not tell those reads from the ones that would wait for a GPU.
SETTINGS = dict(
    data="toy", ngf=4, ndf=4, image_size=24, load_size=28, pool_size=0, epochs=2, epochs_decay=0,
    sample_every=100, save_every=100, seed=3, device="cpu", amp=False,
)  # fmt: skip


def reads_per_step(monkeypatch, recipe_class) -> list[list[str]]:
    steps: list[list[str]] = []
    real = recipe_class.train_step

    def counted(self, batch):
        with CountReads() as mode:
            losses = real(self, batch)
        steps.append(mode.reads)
        return losses

    monkeypatch.setattr(recipe_class, "train_step", counted)
    return steps


def loss_reads(monkeypatch) -> list[int]:
    """How many steps each of the loop's reads covered."""
    calls: list[int] = []
    real = Runtime.all_reduce_losses_and_stop

    def counted(self, pending, stop):
        calls.append(len(pending))
        return real(self, pending, stop)

    monkeypatch.setattr(Runtime, "all_reduce_losses_and_stop", counted)
    return calls


def test_a_teacher_step_never_reads_from_the_device(toy, monkeypatch):
    steps = reads_per_step(monkeypatch, teacher_module.CycleGANRecipe)
    teacher_module.train_teacher(TeacherConfig(blocks=2, max_steps=3, log_every=1, **SETTINGS))
    assert steps == [[], [], []]


@pytest.mark.parametrize("objective", ["fidelity", "domain"])
def test_a_distillation_step_never_reads_from_the_device(toy, monkeypatch, objective):
    # Both objectives with the weight average on: fidelity (the default, student alone) and domain
    # (discriminator, GAN, cycle and identity losses too).
    run = teacher_module.train_teacher(TeacherConfig(blocks=2, max_steps=1, name="t", **SETTINGS))
    steps = reads_per_step(monkeypatch, distill_module.DistillRecipe)
    updates = []
    real_update = WeightAverage.update
    monkeypatch.setattr(WeightAverage, "update", lambda self, model: updates.append(real_update(self, model)))
    config = DistillConfig(
        teacher=run.name, direction="B2A", blocks=1, max_steps=3, objective=objective, ema_decay=0.9, **SETTINGS
    )
    run_dir = distill_module.distill(config)
    assert steps == [[], [], []]
    echo = json.loads((run_dir / "config.json").read_text())["settings"]["echo"]  # updates per step
    assert len(updates) == 3 * echo


def test_the_weight_average_keeps_every_tensor_on_the_weights_device():
    # On the meta device any read of a value fails, and the counter must live there too: a counter on
    # the CPU would be copied to the GPU at each update, a copy that waits for the GPU.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).to("meta")
    average = WeightAverage(model, 0.99)
    with CountReads() as mode:
        average.update(model)
        average.update(model)
    assert mode.reads == []
    assert {t.device.type for t in [*average.parameters(), *average.buffers()]} == {"meta"}


def test_the_loop_reads_losses_only_when_it_logs(toy, monkeypatch):
    calls = loss_reads(monkeypatch)
    run = teacher_module.train_teacher(TeacherConfig(blocks=1, max_steps=10, log_every=4, **SETTINGS))
    # Steps 1, 4, 8 and the last (10) are logged; each read covers every step since the one before.
    assert calls == [1, 3, 4, 2]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 4, 8, 10]


def test_a_non_finite_loss_between_logs_is_caught_with_its_step_before_any_save(toy, monkeypatch):
    config = dict(SETTINGS, save_every=5, log_every=5)
    run = teacher_module.train_teacher(TeacherConfig(blocks=1, max_steps=2, name="nan", **config))
    calls = {"n": 0}
    real = teacher_module.cycle_loss

    def poisoned(a, b):
        calls["n"] += 1  # two cycle losses a step: steps 3 and 4 after the resume, NaN from step 4
        return real(a, b) * (float("nan") if calls["n"] > 2 else 1.0)

    monkeypatch.setattr(teacher_module, "cycle_loss", poisoned)
    with pytest.raises(WorkFailed, match="diverged at step 4: the cycle_A loss is nan"):
        teacher_module.train_teacher(TeacherConfig(blocks=1, max_steps=8, name="nan", **config), resume=True)
    # Found at step 5, before step 5's checkpoint: the one of step 2 is still the latest.
    assert json.loads((run / "state" / "latest.json").read_text())["step"] == 2


def test_a_compiled_half_precision_run_on_a_cpu_is_told_to_try_without_compile_first():
    from types import SimpleNamespace

    from cgdistill.train.loop import divergence_hint

    def runtime(compile: bool, amp, device: str):
        return SimpleNamespace(compile=compile, amp_dtype=amp, device=torch.device(device))

    assert divergence_hint(runtime(True, torch.bfloat16, "cpu")).startswith("try without --compile")
    assert divergence_hint(runtime(False, torch.bfloat16, "cpu")) == "try a lower --lr"
    assert divergence_hint(runtime(True, None, "cpu")) == "try a lower --lr"
