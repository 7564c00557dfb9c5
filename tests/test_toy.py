"""The embedded toy dataset: deterministic, laid out like the published ones, with true pairs for testing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cgdistill.data import toy
from cgdistill.data.toy import TOY_FOLDERS, make_toy_dataset, toy_a2b
from toy_truth import toy_b2a

SMALL = {"size": 16, "n_train": 6, "n_test": 3}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_same_seed_builds_byte_identical_files(tmp_path: Path) -> None:
    first = files(make_toy_dataset(tmp_path / "one", seed=3, **SMALL))
    second = files(make_toy_dataset(tmp_path / "two", seed=3, **SMALL))
    assert first == second
    assert len(first) == 2 * 6 + 4 * 3


def test_different_seeds_build_different_images(tmp_path: Path) -> None:
    first = files(make_toy_dataset(tmp_path / "one", seed=0, **SMALL))
    second = files(make_toy_dataset(tmp_path / "two", seed=1, **SMALL))
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first)


def test_layout_has_every_folder_with_the_requested_counts_and_size(tmp_path: Path) -> None:
    root = make_toy_dataset(tmp_path / "toy", size=20, n_train=7, n_test=4)
    assert sorted(p.name for p in root.iterdir()) == sorted(TOY_FOLDERS)
    for folder in TOY_FOLDERS:
        images = sorted((root / folder).glob("*.png"))
        assert len(images) == (7 if folder.startswith("train") else 4)
        assert all(pixels(p).shape == (20, 20, 3) for p in images)
    for a, b in (("testA", "testA_gt"), ("testB", "testB_gt")):
        assert [p.name for p in sorted((root / a).iterdir())] == [p.name for p in sorted((root / b).iterdir())]


def test_ground_truth_is_the_true_translation_of_each_test_image(tmp_path: Path) -> None:
    root = make_toy_dataset(tmp_path / "toy", **SMALL)
    for name in sorted(p.name for p in (root / "testA").iterdir()):
        assert np.array_equal(toy_a2b(pixels(root / "testA" / name)), pixels(root / "testA_gt" / name))
        assert np.array_equal(toy_b2a(pixels(root / "testB" / name)), pixels(root / "testB_gt" / name))


def test_train_domains_come_from_independent_scenes(tmp_path: Path) -> None:
    root = make_toy_dataset(tmp_path / "toy", **SMALL)
    for name in sorted(p.name for p in (root / "trainA").iterdir()):
        assert not np.array_equal(toy_a2b(pixels(root / "trainA" / name)), pixels(root / "trainB" / name))


def test_mapping_is_an_exact_bijection_on_8_bit_colours() -> None:
    every = np.stack(np.meshgrid(*[np.arange(0, 256, 5, dtype=np.uint8)] * 3, indexing="ij"), -1).reshape(-1, 3)
    mapped = toy_a2b(every)
    assert len(np.unique(mapped, axis=0)) == len(every)
    assert np.array_equal(toy_b2a(mapped), every)


def test_mapping_changes_pixels_enough_that_the_identity_baseline_scores_low(tmp_path: Path) -> None:
    root = make_toy_dataset(tmp_path / "toy", size=32, n_train=1, n_test=8)
    scores = [psnr(pixels(p), pixels(root / "testA_gt" / p.name)) for p in sorted((root / "testA").iterdir())]
    assert np.mean(scores) < 10.0


def test_test_images_do_not_depend_on_the_train_count(tmp_path: Path) -> None:
    few = make_toy_dataset(tmp_path / "few", size=16, n_train=2, n_test=2)
    many = make_toy_dataset(tmp_path / "many", size=16, n_train=9, n_test=2)
    assert files(few / "testA") == files(many / "testA")
    assert files(few / "trainB")["0001.png"] == files(many / "trainB")["0001.png"]


def test_build_leaves_no_temporary_folder_and_replaces_an_existing_dataset(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    root.mkdir()
    (root / "stale.txt").write_text("old")
    make_toy_dataset(root, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]
    assert not (root / "stale.txt").exists()


def test_interrupted_build_leaves_the_previous_dataset_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_toy_dataset(tmp_path / "toy", seed=0, **SMALL)
    before = files(root)
    calls = {"n": 0}
    real_save = toy._save_png

    def failing_save(array: np.ndarray, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        real_save(array, path)

    monkeypatch.setattr(toy, "_save_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        make_toy_dataset(root, seed=1, **SMALL)
    assert files(root) == before
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]
