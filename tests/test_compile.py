"""--compile compiles once: nothing after the first step, though later steps log, sample and evaluate.

A recompilation is decided by Dynamo's guards (shapes, dtypes, requires_grad, grad mode, autocast)
before any backend runs, so the tests count Dynamo's graphs with the cheap ``eager`` backend (it
captures graphs and runs them as they are); inductor would count the same graphs and spend minutes
generating C++ for them on this CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from cgdistill.errors import CgdistillError
from cgdistill.train import distill as distill_module
from cgdistill.train import teacher as teacher_module
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.runtime import setup_runtime

SETTINGS = dict(
    data="toy", ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2, epochs=2, epochs_decay=0,
    log_every=1, sample_every=2, seed=3, device="cpu", amp=False, compile=True,
)  # fmt: skip


@pytest.fixture
def eager_compile(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """torch.compile with the eager backend; returns the options the trainers asked for."""
    real, asked = torch.compile, []

    def compile_eagerly(model, **options):
        asked.append(options)
        return real(model, backend="eager", dynamic=options.get("dynamic"))

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    torch._dynamo.reset()
    counters.clear()
    yield asked
    torch._dynamo.reset()


def graphs_per_step(monkeypatch: pytest.MonkeyPatch, recipe_class) -> list[int]:
    """Dynamo's graph count before the first step, then after each step."""
    counts: list[int] = []
    real = recipe_class.train_step

    def counted(self, batch):
        if not counts:
            counts.append(counters["stats"]["unique_graphs"])
        losses = real(self, batch)
        counts.append(counters["stats"]["unique_graphs"])
        return losses

    monkeypatch.setattr(recipe_class, "train_step", counted)
    return counts


def test_a_compiled_teacher_compiles_in_its_first_step_and_never_again(toy, monkeypatch, eager_compile):
    counts = graphs_per_step(monkeypatch, teacher_module.CycleGANRecipe)
    run = teacher_module.train_teacher(TeacherConfig(blocks=2, max_steps=6, **SETTINGS))
    assert counts[0] == 0 and counts[1] > 0
    assert counts[1:] == [counts[1]] * 6  # steps 2, 4 and 6 also wrote samples
    assert len(list((run / "samples").iterdir())) == 3
    assert all(options == {"dynamic": False, "mode": "default"} for options in eager_compile)


def test_a_compiled_distillation_compiles_nothing_for_its_probe_evaluation_or_samples(toy, monkeypatch, eager_compile):
    teacher = teacher_module.train_teacher(
        TeacherConfig(blocks=2, max_steps=1, name="t", **dict(SETTINGS, compile=False))
    )
    counts = graphs_per_step(monkeypatch, distill_module.DistillRecipe)
    # A batch size that divides the 6 images: a smaller last batch would compile once more (documented).
    config = DistillConfig(
        teacher=teacher.name, direction="B2A", blocks=1, max_steps=5, eval_every=1, batch_size=2, **SETTINGS
    )
    distill_module.distill(config)
    assert counts[0] == 0  # the wiring probe and the held-out teacher outputs ran uncompiled
    assert counts[1] > 0 and counts[1:] == [counts[1]] * 5


def test_cuda_graphs_need_a_gpu():
    with pytest.raises(CgdistillError, match="reduce-overhead records CUDA graphs and needs a CUDA device"):
        setup_runtime(TeacherConfig(device="cpu", compile_mode="reduce-overhead"))


def test_naming_a_compile_mode_compiles():
    rt = setup_runtime(TeacherConfig(device="cpu", compile_mode="default"))
    assert rt.compile and rt.compile_mode == "default"
