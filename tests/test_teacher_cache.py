"""The teacher cache: each input's teacher targets computed once, served after, and never wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgdistill.errors import CgdistillError
from cgdistill.train import teacher_cache
from cgdistill.train.config import DistillConfig
from cgdistill.train.distill import DistillRecipe, distill
from cgdistill.train.teacher_cache import TeacherCache, TeacherTargets, cache_limit
from teacher_runs import tiny_teacher_run

CPU = torch.device("cpu")


def fake_teacher(calls: list[int]):
    """A stand-in teacher whose targets are a known function of each input (and count its batches)."""

    def compute(images: torch.Tensor) -> TeacherTargets:
        calls.append(images.shape[0])
        return TeacherTargets(None, images.tanh(), [images * 2, images.mean(1, keepdim=True)])

    return compute


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_each_input_is_computed_once_and_served_as_computed():
    cache, calls = TeacherCache(2**20), []
    first = images(4, 0)
    got = cache.targets(first, fake_teacher(calls), CPU)
    again = cache.targets(first.clone(), fake_teacher(calls), CPU)
    assert calls == [4]  # the second batch is the same four inputs: no teacher pass
    for targets in (got, again):
        assert torch.equal(targets.output, first.tanh())
        assert torch.equal(targets.features[0], first * 2) and torch.equal(targets.features[1], first.mean(1, True))
    assert (cache.hits, cache.misses) == (4, 4)


def test_a_batch_of_old_and_new_inputs_runs_the_teacher_on_the_new_ones_alone():
    cache, calls = TeacherCache(2**20), []
    old, new = images(3, 0), images(2, 1)
    cache.targets(old, fake_teacher(calls), CPU)
    mixed = torch.cat([new[:1], old[1:], new[1:], old.flip(-1)[:1]])  # a flipped image is another input
    got = cache.targets(mixed, fake_teacher(calls), CPU)
    assert calls == [3, 3]
    assert torch.equal(got.output, mixed.tanh()) and torch.equal(got.features[0], mixed * 2)


def test_a_mirrored_cache_computes_each_new_inputs_mirror_image_in_the_same_pass():
    cache, calls = TeacherCache(2**20, mirrored=True), []
    batch = images(3, 0)
    cache.targets(torch.cat([batch, batch[:1].flip(-1)]), fake_teacher(calls), CPU)  # one mirror already in it
    assert calls == [6]  # 4 inputs and the mirrors of the 2 whose mirror the batch lacks
    got = cache.targets(batch.flip(-1), fake_teacher(calls), CPU)
    assert calls == [6] and torch.equal(got.output, batch.flip(-1).tanh())
    assert torch.equal(got.features[0], batch.flip(-1) * 2)


def test_a_full_cache_keeps_what_it_has_and_computes_the_rest_each_time():
    calls: list[int] = []
    per_input = TeacherCache(2**20).targets(images(1, 0), fake_teacher(calls), CPU).nbytes
    cache = TeacherCache(2 * per_input)
    batch = images(4, 2)
    for _ in range(2):
        got = cache.targets(batch, fake_teacher(calls), CPU)
        assert torch.equal(got.output, batch.tanh())
    assert cache.full and len(cache.entries) == 2 and cache.nbytes <= cache.limit
    assert calls[1:] == [4, 2]  # the two it could not keep are computed again


def test_kept_targets_do_not_hold_their_whole_batch():
    cache = TeacherCache(2**20)
    cache.targets(images(4, 0), fake_teacher([]), CPU)
    entry = next(iter(cache.entries.values()))
    assert entry.output.untyped_storage().nbytes() == entry.output.numel() * entry.output.element_size()


@pytest.mark.parametrize(
    ("setting", "repeat", "expected"),
    [("off", True, 0), ("auto", False, 0), ("2M", False, 2 * 2**20), ("1.5g", True, 3 * 2**29), (" Auto ", False, 0)],
)
def test_the_size_follows_the_flag_and_auto_needs_inputs_that_repeat(setting, repeat, expected):
    assert cache_limit(DistillConfig(teacher_cache=setting).teacher_cache_setting(), repeat) == expected


def test_auto_takes_a_quarter_of_the_free_memory_when_inputs_repeat(monkeypatch):
    monkeypatch.setattr(teacher_cache, "available_memory", lambda device: 8 * 2**30)
    assert cache_limit("auto", True) == 2 * 2**30


def test_a_size_that_is_not_one_is_refused_by_the_config():
    with pytest.raises(CgdistillError, match="--teacher-cache 'lots' is not a size"):
        DistillConfig(teacher_cache="lots").check()


@pytest.fixture
def teacher_run(home: Path) -> Path:
    return tiny_teacher_run()


def recording_recipes(monkeypatch) -> list[DistillRecipe]:
    """The recipe of each training step that runs from now on (to look at its cache after the run)."""
    recipes: list[DistillRecipe] = []
    original = DistillRecipe.train_step

    def keeping(self, batch):
        recipes.append(self)
        return original(self, batch)

    monkeypatch.setattr(DistillRecipe, "train_step", keeping)
    return recipes


def whole_images(**overrides) -> DistillConfig:
    """Each crop the whole 28-px image: 6 images x 2 flips = 12 inputs that come back every epoch."""
    settings = dict(
        teacher="teacher", direction="A2B", blocks=2, image_size=28, load_size=28, ndf=4, batch_size=4, epochs=2,
        epochs_decay=2, sample_every=1000, save_every=1000, log_every=1, eval_every=1000, seed=1, device="cpu",
        amp=False,
    )  # fmt: skip
    settings.update(overrides)
    return DistillConfig(**settings)


@pytest.mark.parametrize("ngf", [None, 4], ids=["shared encoder", "narrow student"])
def test_a_distillation_of_whole_images_serves_later_epochs_from_the_cache_with_the_teachers_own_targets(
    teacher_run, monkeypatch, ngf
):
    used: list[tuple[DistillRecipe, torch.Tensor, TeacherTargets]] = []
    original = DistillRecipe._teacher_targets

    def recording(self, x):
        targets = original(self, x)
        used.append((self, x.clone(), targets))
        return targets

    monkeypatch.setattr(DistillRecipe, "_teacher_targets", recording)
    distill(whole_images(ngf=ngf, name=f"cached-{ngf}"))
    recipe = used[0][0]
    assert recipe.teacher_cache is not None and recipe.teacher_cache.hits > 0
    assert len(recipe.teacher_cache.entries) <= 12
    # Every step's targets are the teacher's on that very batch: fp32 throughout, so a cached value differs
    # from a fresh pass only by the order its convolutions summed in (another batch): far below 1e-4 on
    # outputs in [-1, 1] and on the unit-scale normalised hidden states.
    for _, x, targets in used:
        fresh = recipe._teacher_pass(x)
        assert torch.allclose(targets.output, fresh.output, atol=1e-4, rtol=0)
        for kept, computed in zip(targets.features, fresh.features, strict=True):
            assert torch.allclose(kept, computed, atol=1e-4, rtol=1e-4)
        if fresh.start is not None:
            assert torch.allclose(targets.start, fresh.start, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "overrides", [{"load_size": 32}, {"teacher_cache": "off"}], ids=["random crops", "--teacher-cache off"]
)
def test_random_crops_keep_no_cache_and_off_turns_it_off(teacher_run, monkeypatch, overrides):
    recipes = recording_recipes(monkeypatch)
    distill(whole_images(name="uncached", max_steps=1, **overrides))
    assert recipes[0].teacher_cache is None


def test_an_undone_step_leaves_an_empty_cache(teacher_run, monkeypatch):
    recipes = recording_recipes(monkeypatch)
    distill(whole_images(name="undone", max_steps=2))
    recipe = recipes[0]
    assert recipe.teacher_cache.entries
    recipe.discard_caches()
    assert not recipe.teacher_cache.entries and recipe.teacher_cache.limit > 0


def test_the_cli_says_when_the_cache_is_on_and_when_it_is_full(cli, teacher_run):
    args = ("distill", "--teacher", "teacher", "--direction", "A2B", "--image-size", "28", "--load-size", "28",
            "--ndf", "4", "--device", "cpu", "--no-amp", "--max-steps", "2", "--teacher-cache", "1K")  # fmt: skip
    result = cli(*args)
    assert result.code == 0, result.err
    text = result.out + result.err_text
    assert "Teacher cache: on, up to 0.0 GiB" in text and "The teacher cache is full (0.00 GiB, 0 inputs)" in text
    refused = cli(*args[:-1], "plenty")
    assert refused.code != 0 and "--teacher-cache 'plenty' is not a size" in refused.err_text
