"""An ONNX file from `cgdistill export` is a model: translate runs it on onnxruntime; what needs torch refuses it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgdistill import engines, export, paths
from cgdistill.errors import CgdistillError
from cgdistill.nets import GeneratorConfig, ResnetGenerator, init_weights
from cgdistill.runs import resolve_generator
from cgdistill.weights import load_generator, save_generator
from cgdistill.worklist import collect_inputs
from translating import translate_folder

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def _generator_file(path: Path, direction: str, teacher: str | None, seed: int = 0) -> Path:
    """A tiny generator whose weights are large enough that every layer shapes the output."""
    g = ResnetGenerator(GeneratorConfig(blocks=1, ngf=8))
    init_weights(g, gain=0.3, generator=torch.Generator().manual_seed(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_generator(g, path, direction=direction, dataset="toy", teacher=teacher, step=5)


def _student_run(direction: str = "A2B") -> Path:
    return _generator_file(paths.run_path("stud") / "G.safetensors", direction, teacher="teach")


def _export(source: Path, target: Path) -> Path:
    generator, info = load_generator(source)
    return export.export_onnx(generator, target, info=info).path


@pytest.fixture
def student_onnx(tmp_path) -> Path:
    return _export(_student_run(), tmp_path / "student.onnx")


def _image(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


# ---------------------------------------------------------------------------------------------
# The resolver reads the file's metadata


def test_an_exported_student_resolves_to_its_direction_role_and_dataset(student_onnx):
    resolved = resolve_generator(str(student_onnx))
    assert (resolved.direction, resolved.role, resolved.run, resolved.is_onnx) == ("A2B", "student", None, True)
    assert (resolved.info.dataset, resolved.info.teacher, resolved.info.step) == ("toy", "teach", 5)
    assert resolved.info.config == load_generator(paths.run_path("stud") / "G.safetensors")[1].config


def test_an_exported_teacher_generator_is_a_teacher(tmp_path):
    source = _generator_file(tmp_path / "G_B2A.safetensors", "B2A", teacher=None)
    resolved = resolve_generator(str(_export(source, tmp_path / "teacher.onnx")))
    assert (resolved.direction, resolved.role) == ("B2A", "teacher")


def test_direction_is_checked_against_the_file(cli, student_onnx, tmp_path):
    assert resolve_generator(str(student_onnx), "A2B").direction == "A2B"
    image = _image(tmp_path / "a.png", 16, 20)
    result = cli("translate", image, "--model", student_onnx, "--direction", "B2A", "-o", tmp_path / "out")
    assert result.code == 2 and f"{student_onnx} translates A2B, not B2A; pass --direction A2B" in result.err_text
    assert not (tmp_path / "out").exists()


def test_an_export_from_before_format_version_was_recorded_still_reads(student_onnx):
    model = onnx.load(str(student_onnx))
    kept = [entry for entry in model.metadata_props if entry.key != "format_version"]
    assert len(kept) == len(model.metadata_props) - 1  # exports record it now
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(student_onnx))
    assert resolve_generator(str(student_onnx)).direction == "A2B"


def test_an_export_from_a_newer_model_format_asks_for_a_newer_cgdistill(student_onnx):
    model = onnx.load(str(student_onnx))
    next(entry for entry in model.metadata_props if entry.key == "format_version").value = "99"
    onnx.save(model, str(student_onnx))
    with pytest.raises(CgdistillError, match="model format version 99, newer than this cgdistill"):
        resolve_generator(str(student_onnx))


# ---------------------------------------------------------------------------------------------
# translate runs it, like the torch model it came from


def test_translate_with_the_onnx_file_matches_the_torch_model_through_the_whole_pipeline(cli, student_onnx, tmp_path):
    photos = tmp_path / "photos"
    _image(photos / "a.png", 37, 50, seed=1)  # not a multiple of 4: padded and cropped back
    _image(photos / "b.png", 37, 50, seed=2)  # same size as a: one batch
    _image(photos / "c.png", 90, 60, seed=3)  # over --max-side: shrunk
    _image(photos / "sub" / "a.png", 20, 28, seed=4)  # same stem, with --recursive: a-2 style name
    result = cli(
        "translate", photos, "--model", student_onnx, "--recursive", "--max-side", "64", "--batch-size", "2",
        "-o", tmp_path / "ort",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "student.onnx (student, 1 standard blocks, ngf 8), A2B" in result.err_text
    assert "with onnxruntime fp32 (an ONNX file runs on onnxruntime)" in result.err_text

    # The same pipeline in fp32 PyTorch with the weights the file was exported from.
    generator, _ = load_generator(paths.run_path("stud") / "G.safetensors")
    files = collect_inputs([photos], recursive=True)
    expected = translate_folder(generator, files, tmp_path / "torch", max_side=64, batch_size=2)
    names = sorted(p.name for p in (tmp_path / "ort").iterdir())
    assert names == sorted(out.name for _, out in expected.written) and len(names) == 4
    assert Image.open(tmp_path / "ort" / "c_A2B.png").size == (43, 64)
    for _, reference in expected.written:
        got, want = _pixels(tmp_path / "ort" / reference.name), _pixels(reference)
        assert got.shape == want.shape and want.std() > 10
        # Export checked onnxruntime against PyTorch to PARITY_TOLERANCE (1e-4 on [-1, 1]); the same
        # fp32 graph differs here only by kernel rounding, below 1e-4 * 127.5 = 0.013 of a grey level,
        # so after rounding to uint8 a pixel is at most one level apart.
        assert np.abs(got - want).max() <= 1


def test_the_library_gives_an_onnx_file_its_engine_and_the_generators_multiple(student_onnx):
    runner = engines.engine_for_file(student_onnx, torch.device("cpu"), "onnxruntime")
    assert runner.name == "onnxruntime fp32" and isinstance(runner.model, engines.OnnxRuntimeGenerator)
    assert runner.model.multiple == 4 and runner.model.config.ngf == 8


def test_engine_torch_with_an_onnx_file_is_refused_before_any_work(cli, student_onnx, tmp_path):
    image = _image(tmp_path / "a.png", 16, 20)
    result = cli("translate", image, "--model", student_onnx, "--engine", "torch", "-o", tmp_path / "out")
    assert result.code == 2 and not (tmp_path / "out").exists()
    assert f"{student_onnx} is an ONNX file, which runs on onnxruntime, not torch" in result.err_text


def test_an_onnx_file_runs_on_the_cpu_and_auto_means_the_cpu_for_it(student_onnx, monkeypatch):
    monkeypatch.setattr(engines, "process_device", lambda spec: torch.device("cuda", 0))  # as on a GPU machine
    assert engines.device_for_model(student_onnx, "auto") == torch.device("cpu")
    assert engines.device_for_model(Path("G.safetensors"), "auto") == torch.device("cuda", 0)
    with pytest.raises(CgdistillError, match="onnxruntime runs on the CPU, not cuda:0; pass --device cpu"):
        engines.check_model_engine("auto", student_onnx, torch.device("cuda", 0))


# ---------------------------------------------------------------------------------------------
# Files that are not a cgdistill export


def test_an_onnx_file_without_cgdistill_metadata_is_refused(cli, tmp_path):
    generator, _ = load_generator(_student_run())
    bare = tmp_path / "other.onnx"
    bare.write_bytes(export.to_onnx_bytes(generator))  # a valid graph, as any exporter writes it
    image = _image(tmp_path / "a.png", 16, 20)
    result = cli("translate", image, "--model", bare, "-o", tmp_path / "out")
    assert result.code == 2 and not (tmp_path / "out").exists()
    assert f"{bare} is an ONNX file without cgdistill's metadata" in result.err_text
    assert "`cgdistill export RUN -o FILE.onnx`" in result.err_text
    assert "Traceback" not in result.err


@pytest.mark.parametrize("damage", ["truncated", "not onnx"])
def test_a_damaged_onnx_file_is_refused_in_one_sentence(cli, student_onnx, tmp_path, damage):
    data = student_onnx.read_bytes()
    student_onnx.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00not a protobuf" * 50)
    image = _image(tmp_path / "a.png", 16, 20)
    result = cli("translate", image, "--model", student_onnx, "-o", tmp_path / "out")
    assert result.code == 2 and not (tmp_path / "out").exists()
    assert f"{student_onnx} is not a readable ONNX file" in result.err_text and "Traceback" not in result.err


def test_an_export_whose_graph_was_changed_is_refused(student_onnx):
    model = onnx.load(str(student_onnx))
    model.graph.input[0].name = "x"
    onnx.save(model, str(student_onnx))
    with pytest.raises(CgdistillError, match="does not map 'image' to 'translated'"):
        resolve_generator(str(student_onnx))


def test_a_graph_onnxruntime_cannot_load_is_refused_naming_the_file(student_onnx):
    model = onnx.load(str(student_onnx))
    del model.graph.node[:]  # metadata and names intact, nothing computes the output
    onnx.save(model, str(student_onnx))
    with pytest.raises(CgdistillError, match=re.escape(f"onnxruntime cannot load {student_onnx}")):
        engines.OnnxRuntimeGenerator.from_file(student_onnx)


def test_without_the_extra_an_onnx_model_says_how_to_install_it(cli, student_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as without `pip install 'cgdistill[onnx]'`
    image = _image(tmp_path / "a.png", 16, 20)
    result = cli("translate", image, "--model", student_onnx, "-o", tmp_path / "out")
    assert result.code == 2 and "pip install 'cgdistill[onnx]'" in result.err_text
    assert not (tmp_path / "out").exists()


def test_a_missing_onnx_path_is_named_as_a_file_not_a_run(cli, tmp_path):
    result = cli("translate", _image(tmp_path / "a.png", 16, 20), "--model", "gone.onnx")
    assert result.code == 2 and "Model file gone.onnx does not exist." in result.err_text


# ---------------------------------------------------------------------------------------------
# Commands that need the PyTorch module


def test_compare_refuses_an_onnx_student_or_teacher(cli, student_onnx):
    result = cli("compare", "--student", student_onnx)
    assert result.code == 2 and "compare needs the .safetensors model" in result.err_text
    assert (
        f"{student_onnx} is an ONNX export: pass the run or .safetensors file it was exported from" in result.err_text
    )
    result = cli("compare", "--student", "stud", "--teacher", student_onnx)
    assert result.code == 2 and "compare needs the .safetensors model" in result.err_text


def test_export_of_an_onnx_file_is_refused(cli, student_onnx, tmp_path):
    result = cli("export", student_onnx, "-o", tmp_path / "again.onnx")
    assert result.code == 2 and "export needs a .safetensors model" in result.err_text
    assert not (tmp_path / "again.onnx").exists()


def test_distill_from_an_onnx_teacher_is_refused(student_onnx):
    from cgdistill.train.teacher_loading import load_teacher

    with pytest.raises(CgdistillError, match="distill needs the teacher's .safetensors model"):
        load_teacher(str(student_onnx), None)


# ---------------------------------------------------------------------------------------------
# inspect and import know an ONNX export when they see one


def test_inspect_shows_what_an_export_records(cli, student_onnx):
    result = cli("inspect", student_onnx)
    assert result.code == 0, result.err_text
    assert "cgdistill ONNX export" in result.out and "direction A2B" in result.out and "teacher teach" in result.out
    assert "1 standard blocks, ngf 8" in result.out


def test_importing_an_export_as_pretrained_weights_is_refused_in_one_sentence(cli, student_onnx):
    result = cli("download", "--pretrained", "mine", "--from-file", student_onnx)
    assert result.code == 2
    assert f"{student_onnx} is an ONNX export, not a weights file" in result.err_text
    assert not paths.run_path("mine").exists()
