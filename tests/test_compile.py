"""--compile compiles once: nothing after the first step, though later steps log, sample and evaluate.

A recompilation is decided by Dynamo's guards (shapes, dtypes, requires_grad, grad mode, autocast)
before any backend runs, so the tests count Dynamo's graphs with a cheap backend that runs the captured
graphs as they are (and counts those runs); inductor would count the same graphs and spend minutes
generating C++ for them on this CPU. A compiled run's first step is checked (train/compile_check.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch._dynamo.utils import counters

from cgdistill.errors import CgdistillError
from cgdistill.plots import read_metrics
from cgdistill.runs import METRICS_FILE, STUDENT_FILE
from cgdistill.train import distill as distill_module
from cgdistill.train import teacher as teacher_module
from cgdistill.train.compile_check import MESSAGE, all_finite, restore, save
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.loop import Observer
from cgdistill.train.runtime import setup_runtime
from cgdistill.weights import read_file

SETTINGS = dict(
    data="toy", ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2, epochs=2, epochs_decay=0,
    log_every=1, sample_every=2, seed=3, device="cpu", amp=False, compile=True,
)  # fmt: skip


@pytest.fixture
def eager_compile(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """torch.compile whose graphs run as Dynamo captured them (no code generation); returns the options
    the trainers asked for (``asked``) and how many times a captured graph ran (``graph_runs``)."""
    real, spy = torch.compile, SimpleNamespace(asked=[], graph_runs=0)

    def run_as_captured(graph, example_inputs):
        def run(*args):
            spy.graph_runs += 1
            return graph(*args)

        return run

    def compile_eagerly(model, **options):
        spy.asked.append(options)
        return real(model, backend=run_as_captured, dynamic=options.get("dynamic"))

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    torch._dynamo.reset()
    counters.clear()
    yield spy
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
    assert all(options == {"dynamic": False, "mode": "default"} for options in eager_compile.asked)


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


class Messages(Observer):
    def __init__(self) -> None:
        self.said: list[str] = []

    def message(self, text: str) -> None:
        self.said.append(text)


def distill_with_a_first_step(monkeypatch, spy: SimpleNamespace, poison: bool) -> tuple[Messages, list[int], object]:
    """A compiled distillation whose first compiled step leaves NaN weights (``poison``), as the
    miscompiled kernel did; returns what it said and the compiled graphs run by each step."""
    teacher = teacher_module.train_teacher(
        TeacherConfig(blocks=2, max_steps=1, name="t", **dict(SETTINGS, compile=False))
    )
    real, graph_runs = distill_module.DistillRecipe.train_step, []

    def step(self, batch):
        before = spy.graph_runs
        losses = real(self, batch)
        graph_runs.append(spy.graph_runs - before)
        if poison and len(graph_runs) == 1:
            with torch.no_grad():
                for p in self.student.parameters():
                    p.fill_(float("nan"))
        return losses

    monkeypatch.setattr(distill_module.DistillRecipe, "train_step", step)
    said = Messages()
    config = DistillConfig(teacher=teacher.name, direction="B2A", blocks=1, max_steps=3, batch_size=2, **SETTINGS)
    run = distill_module.distill(config, observer=said)
    return said, graph_runs, run


def test_a_first_compiled_step_that_leaves_nan_weights_is_undone_and_the_run_goes_on_eager(
    toy, monkeypatch, eager_compile
):
    said, graph_runs, run = distill_with_a_first_step(monkeypatch, eager_compile, poison=True)
    assert MESSAGE in said.said
    # The poisoned compiled step, then the same step again and the two after it with no compiled graph.
    assert graph_runs[0] > 0 and graph_runs[1:] == [0, 0, 0]
    tensors, _ = read_file(run / STUDENT_FILE)
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert [row["step"] for row in read_metrics(run / METRICS_FILE) if "output" in row][-1] == 3


def test_a_finite_first_compiled_step_is_kept_and_the_run_stays_compiled(toy, monkeypatch, eager_compile):
    said, graph_runs, _ = distill_with_a_first_step(monkeypatch, eager_compile, poison=False)
    assert MESSAGE not in said.said
    assert len(graph_runs) == 3 and all(runs > 0 for runs in graph_runs)


def test_undoing_a_step_restores_weights_optimizer_state_pools_and_grad_scalers_and_empties_caches():
    from cgdistill.train.pool import ImagePool

    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    discarded: list[bool] = []
    recipe = SimpleNamespace(
        modules={"G": net},
        optimizers={"G": optimizer},
        pools={"B": ImagePool(2, seed=1)},
        discard_caches=lambda: discarded.append(True),  # e.g. the teacher outputs the undone step computed
    )
    scalers = {"G": torch.amp.GradScaler("cpu", init_scale=8.0)}
    scalers["G"].scale(torch.ones(()))  # the scale exists before the step
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    saved = save(recipe, scalers)
    net(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    recipe.pools["B"].query(torch.zeros(1, 3, 4, 4))
    scalers["G"].update(new_scale=2.0)
    assert optimizer.state and recipe.pools["B"].images and scalers["G"].get_scale() == 2.0
    restore(recipe, scalers, saved)
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())
    assert not optimizer.state_dict()["state"] and not recipe.pools["B"].images
    assert scalers["G"].get_scale() == 8.0 and discarded == [True]
    assert not all_finite(recipe, {"loss": torch.tensor(float("nan"))})
    assert all_finite(recipe, {"loss": torch.tensor(1.0)})
