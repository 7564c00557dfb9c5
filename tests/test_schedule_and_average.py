"""The learning-rate schedule under --max-steps, the weight average, and full-epoch source coverage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cgdistill import paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.data.unpaired import UnpairedDataset
from cgdistill.train.ema import WeightAverage
from cgdistill.train.schedule import lr_factor, lr_factor_at


def test_without_max_steps_the_published_epoch_schedule_holds():
    factors = [lr_factor_at(s, steps_per_epoch=10, epochs=2, epochs_decay=2) for s in range(40)]
    assert factors == [lr_factor(s // 10, 2, 2) for s in range(40)]
    assert factors[19] == 1.0 and factors[20] == pytest.approx(2 / 3) and factors[39] == pytest.approx(1 / 3)


def test_max_steps_compresses_the_schedule_onto_the_run():
    # 25 + 25 epochs cut to 600 steps: constant for 300 steps, then down to 1/301 at the last step.
    factors = [lr_factor_at(s, steps_per_epoch=384, epochs=25, epochs_decay=25, max_steps=600) for s in range(600)]
    assert factors[:300] == [1.0] * 300
    assert factors[300] == pytest.approx(300 / 301) and factors[599] == pytest.approx(1 / 301)
    assert all(a > b for a, b in zip(factors[300:], factors[301:], strict=False))


def test_max_steps_beyond_the_epoch_schedule_changes_nothing():
    kwargs = dict(steps_per_epoch=10, epochs=1, epochs_decay=1)
    assert [lr_factor_at(s, **kwargs, max_steps=500) for s in range(20)] == [
        lr_factor_at(s, **kwargs) for s in range(20)
    ]


def test_no_decay_epochs_means_a_constant_lr_under_max_steps():
    assert {lr_factor_at(s, steps_per_epoch=10, epochs=5, epochs_decay=0, max_steps=30) for s in range(30)} == {1.0}


def test_the_loop_logs_the_decaying_lr(home: Path):
    from cgdistill.train.config import TeacherConfig
    from cgdistill.train.teacher import train_teacher

    make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=6, n_test=2)
    config = TeacherConfig(
        data="toy", blocks=1, ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2, epochs=100, epochs_decay=100,
        max_steps=6, save_every=1000, sample_every=1000, log_every=1, lr=1e-3, device="cpu", amp=False,
    )  # fmt: skip
    run = train_teacher(config)
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3 * 3 / 4, 1e-3 * 2 / 4, 1e-3 * 1 / 4])


def test_the_average_warms_up_then_follows_with_the_set_decay():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model)  # d = min(0.5, 1/10) = 0.1: 0.1 * 0 + 0.9 * 1
    assert torch.allclose(average.average.weight, torch.full((1, 2), 0.9))
    for _ in range(20):  # (1+n)/(10+n) passes 0.5 at n = 8: from then on d = 0.5
        average.update(model)
    with torch.no_grad():
        model.weight.fill_(3.0)
    before = average.average.weight.clone()
    average.update(model)
    assert torch.allclose(average.average.weight, 0.5 * before + 0.5 * 3.0)
    assert int(average.updates) == 22


def test_the_average_is_a_copy_that_the_optimizer_never_touches():
    model = nn.Linear(2, 2)
    average = WeightAverage(model, decay=0.9)
    assert all(not p.requires_grad for p in average.parameters())
    assert not any(a is b for a, b in zip(average.average.parameters(), model.parameters(), strict=True))


@pytest.mark.parametrize("primary", ["A", "B"])
def test_every_source_image_is_seen_each_epoch(tmp_path: Path, primary: str):
    root = tmp_path / "data"
    for domain, count in (("A", 3), ("B", 7)):
        (root / f"train{domain}").mkdir(parents=True)
        for i in range(count):
            from PIL import Image

            Image.new("RGB", (32, 32), (i * 30, 0, 0)).save(root / f"train{domain}" / f"{i}.png")
    dataset = UnpairedDataset(root, load_size=32, image_size=32, primary=primary)
    seen = {dataset[(0, i)][f"{primary}_path"] for i in range(len(dataset))}
    assert len(seen) == (3 if primary == "A" else 7)
