"""Output folders are checked before any work, inputs are what they claim, and compare says what it compares."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgdistill import paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.nets import ResnetGenerator
from cgdistill.weights import save_generator


def _save(path: Path, *, blocks: int = 1, teacher: str | None = None) -> Path:
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_generator(ResnetGenerator(blocks=blocks, ngf=8), path, direction="A2B", dataset="toy", image_size=32,
                   teacher=teacher)  # fmt: skip
    return path


@pytest.fixture
def student(home: Path) -> Path:
    return _save(paths.run_path("stud") / "G.safetensors", teacher="teach")


@pytest.fixture
def pair(home: Path, student: Path) -> None:
    make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=1, n_test=3)
    _save(paths.run_path("teach") / "G_A2B.safetensors", blocks=2)


def _images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths_ = []
    for index in range(count):
        pixels = np.random.default_rng(index).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        paths_.append(folder / f"{index}.png")
    return paths_


def _count_translations(monkeypatch) -> list[int]:
    from cgdistill import policy

    calls: list[int] = []
    real = policy.translate_batch

    def counting(model, images, device):
        calls.append(images.shape[0])
        return real(model, images, device)

    monkeypatch.setattr(policy, "translate_batch", counting)
    return calls


def test_a_file_as_output_folder_is_refused_before_translating(cli, student, tmp_path, monkeypatch):
    calls = _count_translations(monkeypatch)
    inputs = _images(tmp_path / "in", 3)
    target = tmp_path / "taken"
    target.write_text("mine")
    result = cli("translate", *inputs, "-o", target)
    assert result.code == 2
    assert f"{target}" in result.err_text and "--output" in result.err_text
    assert calls == [] and target.read_text() == "mine"


def test_a_read_only_output_folder_is_refused_before_translating(cli, student, tmp_path, monkeypatch):
    calls = _count_translations(monkeypatch)
    inputs = _images(tmp_path / "in", 3)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes into read-only folders: let the folder refuse as it would for a user
        from cgdistill import fsutil

        def refuse(*_args, **_kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(fsutil.tempfile, "mkstemp", refuse)
    try:
        result = cli("translate", *inputs, "-o", locked)
    finally:
        locked.chmod(0o755)
    assert result.code == 2 and calls == []
    assert "Permission denied" in result.err_text and "--output" in result.err_text


def test_the_input_folder_is_not_also_the_output_folder(cli, student, tmp_path):
    folder = tmp_path / "photos"
    _images(folder, 1)
    result = cli("translate", folder, "-o", folder)
    assert result.code == 2
    assert "--output" in result.err_text
    assert sorted(p.name for p in folder.iterdir()) == ["0.png"]
    # Nor a folder inside it when subfolders are read.
    result = cli("translate", folder, "--recursive", "-o", folder / "out")
    assert result.code == 2
    assert not (folder / "out").exists()


@pytest.mark.parametrize("special", ["fifo", "/dev/null"])
def test_an_input_that_is_not_a_regular_file_says_so(cli, student, tmp_path, special):
    if special == "fifo":
        special = tmp_path / "pipe"
        os.mkfifo(special)
    result = cli("translate", special, "-o", tmp_path / "out")
    assert result.code == 2
    assert "not a regular file" in result.err_text and "does not exist" not in result.err_text


def test_compare_refuses_a_file_as_report_folder_before_measuring(cli, pair, tmp_path, monkeypatch):
    def never(*_args, **_kwargs):
        raise AssertionError("measured before checking the report folder")

    monkeypatch.setattr("cgdistill.compare_command.compare_models", never)
    report = tmp_path / "report.html"
    report.write_text("mine")
    result = cli("compare", "--report", report)
    assert result.code == 2 and "--report" in result.err_text
    assert report.read_text() == "mine"


@pytest.mark.parametrize(("flag", "value"), [("--grid", "-1"), ("--image-size", "0"), ("--limit", "0")])
def test_compare_refuses_bad_numbers_before_measuring(cli, pair, monkeypatch, flag, value):
    from cgdistill import compare

    def never(*_args, **_kwargs):
        raise AssertionError("measured before checking the options")

    monkeypatch.setattr(compare, "compare", never)
    result = cli("compare", flag, value)
    assert result.code == 2
    assert flag in result.err_text


def test_compare_refuses_a_model_against_itself(cli, pair):
    result = cli("compare", "--teacher", paths.run_path("stud") / "G.safetensors", "--student", "stud")
    assert result.code == 2
    assert "same model" in result.err_text


def test_compare_refuses_a_student_run_as_the_teacher(cli, pair):
    result = cli("compare", "--teacher", "stud", "--student", "stud")
    assert result.code == 2
    assert "Run 'stud' is a student, not a teacher" in result.err_text


def test_compare_says_when_the_student_is_a_teacher(cli, pair):
    result = cli("compare", "--teacher", "teach", "--student", paths.run_path("teach") / "G_A2B.safetensors")
    assert result.code == 2
    assert "same model" in result.err_text
    _save(paths.run_path("other") / "G_A2B.safetensors", blocks=1)
    result = cli("compare", "--teacher", "teach", "--student", "other", "--json")
    assert result.code == 0, result.err
    assert "is a teacher" in result.err_text
