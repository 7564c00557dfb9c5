"""--norm batch: samples, held-out evaluation and the wiring probe leave the running statistics alone.

They run the networks in eval mode and put every module's mode back, so a run that writes samples
and measures every step ends bitwise where a run that does neither ends: in train mode the sample
and probe batches would have moved the running means and variances.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cgdistill import paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.nets import GeneratorConfig, ResnetGenerator, evaluating
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.distill import distill
from cgdistill.train.student import build_student, check_wiring
from cgdistill.train.teacher import train_teacher

SETTINGS = dict(
    data="toy", ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2, epochs=2, epochs_decay=0,
    log_every=1, save_every=1000, seed=3, device="cpu", amp=False,
)  # fmt: skip


@pytest.fixture
def toy(home: Path) -> Path:
    return make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=6, n_test=3)


def state(run: Path, *names: str) -> dict[str, torch.Tensor]:
    return {f"{name}/{k}": v for name in names for k, v in load_file(str(run / f"{name}.safetensors")).items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert any("running_mean" in key for key in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_teacher_samples_leave_the_running_statistics_alone(toy):
    config = dict(SETTINGS, blocks=1, norm="batch", max_steps=4)
    sampled = train_teacher(TeacherConfig(name="sampled", sample_every=1, **config))
    quiet = train_teacher(TeacherConfig(name="quiet", sample_every=1000, **config))
    assert len(list((sampled / "samples").iterdir())) == 4
    names = ("G_A2B", "G_B2A", "D_A", "D_B")
    assert_same(state(sampled, *names), state(quiet, *names))


def test_distillation_evaluation_and_samples_leave_the_running_statistics_alone(toy):
    teacher = train_teacher(TeacherConfig(name="t", blocks=2, norm="batch", max_steps=1, sample_every=1000, **SETTINGS))
    config = dict(SETTINGS, teacher=teacher.name, direction="B2A", blocks=1, max_steps=4)
    measured = distill(DistillConfig(name="measured", eval_every=1, sample_every=1, **config))
    quiet = distill(DistillConfig(name="quiet", eval_every=1000, sample_every=1000, **config))
    assert_same(state(measured, "G"), state(quiet, "G"))


def test_the_wiring_probe_leaves_the_running_statistics_and_the_modes_alone():
    teacher = ResnetGenerator(GeneratorConfig(blocks=2, ngf=4, norm="batch")).eval()
    student, _ = build_student(DistillConfig(blocks=1), teacher, torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    check_wiring(student, torch.optim.Adam(student.parameters()), teacher, torch.device("cpu"))
    assert student.training and not teacher.training
    assert_same(before, student.state_dict())


def test_evaluating_restores_each_submodules_own_mode():
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3))
    net[1].eval()  # a frozen part stays frozen afterwards
    with evaluating(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == [True, True, False]
