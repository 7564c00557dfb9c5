"""Property: bad metadata, names and paths fed through the commands give exit 2, one line, no
traceback, and nothing written outside the home or the output folder.

The cases are generated (a fixed seed, so a failure reproduces): every schema entry of a model file
gets values it must refuse, and the naming and path options get the names and paths people and
scripts get wrong.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cgdistill import paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.metadata import COMMON_FIELDS, DISCRIMINATOR_FIELDS, GENERATOR_FIELDS
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.weights import save_generator

SEED = 15
ODD_TEXT = ["", " ", "-1", "0", "1.5", "1e9", "9" * 30, "three", "/../../x", "..", "[/]", "[bold]x", "X2Y", "a2b",
            "{", "[]", "null", '{"a": 1}', "a\nb", "\x1b[2J", "a" * 2000, "ünïcødé", "٣"]  # fmt: skip
SCHEMA = {**COMMON_FIELDS, **GENERATOR_FIELDS, "ndf": DISCRIMINATOR_FIELDS["ndf"]}


def refused(key: str, value: str) -> bool:
    """Whether the schema entry ``key`` must refuse ``value``."""
    try:
        SCHEMA[key].parse(value)
    except ValueError:
        return True
    return False


def metadata_cases() -> list[tuple[str, str]]:
    rng = random.Random(SEED)
    cases = []
    for key in sorted(set(SCHEMA) - {"ndf"}):
        bad = [value for value in ODD_TEXT if refused(key, value)]
        cases += [(key, value) for value in rng.sample(bad, min(3, len(bad)))]
    return cases


BAD_NAMES = ["", " ", "a/b", "../escape", ".hidden", "x" * 300, "tab\there", "new\nline"]


@pytest.fixture
def world(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A working folder (the cwd), an input image, a good model file and a toy dataset."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    image = tmp_path / "inputs" / "in.png"
    image.parent.mkdir()
    Image.new("RGB", (16, 16), (120, 30, 200)).save(image)
    model = tmp_path / "models" / "good.safetensors"
    model.parent.mkdir()
    save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), model, direction="A2B", dataset="toy")
    make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=2, n_test=1)
    return {"root": tmp_path, "image": image, "model": model, "out": tmp_path / "out"}


def snapshot(root: Path, *allowed: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` outside ``allowed``: (size, mtime in ns)."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if any(here == a or a in here.parents for a in allowed):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = here / name
            if any(path == a for a in allowed):
                continue
            info = path.lstat()
            seen[str(path)] = (info.st_size, info.st_mtime_ns)
    return seen


def assert_refused(cli, world: dict[str, Path], *args: object) -> None:
    allowed = (paths.home(), world["out"])
    before = snapshot(world["root"], *allowed)
    result = cli(*args)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2, (args, result.err)
    assert "Traceback" not in result.err
    assert len(lines) == 1, result.err
    assert lines[0].startswith("Error: ")
    assert snapshot(world["root"], *allowed) == before, "something was written outside the home and output folder"


def hostile_model(world: dict[str, Path], key: str, value: str) -> Path:
    with safe_open(str(world["model"]), "pt") as handle:
        meta = dict(handle.metadata())
    meta[key] = value
    path = world["root"] / "models" / "hostile.safetensors"
    save_file(load_file(str(world["model"])), str(path), metadata=meta)
    return path


@pytest.mark.parametrize(("key", "value"), metadata_cases())
def test_bad_metadata_is_refused_by_every_command_that_reads_models(cli, world, key, value):
    hostile = hostile_model(world, key, value)
    assert_refused(cli, world, "translate", world["image"], "--model", hostile, "-o", world["out"] / "deep")
    assert_refused(cli, world, "compare", "--teacher", world["model"], "--student", hostile, "--data", "toy")
    assert_refused(cli, world, "distill", "--teacher", hostile, "--data", "toy", "--max-steps", "1")
    assert not (world["root"] / "x.png").exists() and not (world["root"] / "out" / "x.png").exists()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_run_names_are_refused(cli, world, name):
    tiny = ["--data", "toy", "--image-size", "24", "--load-size", "28", "--blocks", "1", "--ngf", "4", "--ndf", "4",
            "--max-steps", "1", "--device", "cpu", "--no-amp", "--workers", "0"]  # fmt: skip
    assert_refused(cli, world, "train-teacher", *tiny, "--name", name)
    assert_refused(cli, world, "train-teacher", *tiny, "--name", name, "--resume")
    if name.strip():  # an empty --model means "pick one", which is not an error
        assert_refused(cli, world, "translate", world["image"], "--model", name, "-o", world["out"])
        assert_refused(cli, world, "distill", "--teacher", name, "--max-steps", "1")


def _bad_paths(world: dict[str, Path]) -> list[tuple[str, ...]]:
    root = world["root"]
    a_file = root / "inputs" / "plain.txt"
    a_file.write_text("not a folder")
    fifo = root / "inputs" / "pipe"
    os.mkfifo(fifo)
    image, model = str(world["image"]), str(world["model"])
    return [
        ("--home", str(a_file), "translate", image, "--model", model),
        ("translate", image, "--model", model, "-o", str(a_file)),
        ("translate", str(fifo), "--model", model, "-o", str(world["out"])),
        ("translate", "/dev/null", "--model", model, "-o", str(world["out"])),
        ("translate", str(root / ("long" * 80)), "--model", model, "-o", str(world["out"])),
        ("translate", str(root / "missing[/]x.png"), "--model", model, "-o", str(world["out"])),
        ("translate", image, "--model", str(root / "missing.safetensors"), "-o", str(world["out"])),
        ("translate", image, "--model", str(fifo), "-o", str(world["out"])),
        ("translate", str(world["image"].parent), "--model", model, "-o", str(world["image"].parent)),
        ("compare", "--teacher", model, "--student", model, "--data", "toy"),
        ("compare", "--teacher", model, "--student", str(a_file), "--data", "toy"),
        ("compare", "--report", str(a_file), "--teacher", model, "--student", model),
        ("compare", "--grid", "-1", "--teacher", model, "--student", model),
        ("train-teacher", "--data", str(root / "no-such-data"), "--max-steps", "1"),
        ("train-teacher", "--data", str(a_file), "--max-steps", "1"),
        ("download", "--pretrained", "x", "--from-file", str(fifo)),
        ("download", "--pretrained", "x", "--from-file", str(a_file)),
    ]


def test_bad_paths_are_refused(cli, world):
    for args in _bad_paths(world):
        assert_refused(cli, world, *args)
