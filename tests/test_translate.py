"""translate: any image in, a translated PNG of the same size out, and failures reported by name."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgdistill import paths
from cgdistill.device import pick_device
from cgdistill.errors import CgdistillError
from cgdistill.forward import pad_to_multiple, translate_batch
from cgdistill.nets import ResnetGenerator
from cgdistill.weights import save_generator
from cgdistill.worklist import plan_outputs


def _save_run(run: str, filename: str, direction: str, teacher: str | None = None, blocks: int = 1) -> Path:
    torch.manual_seed(0)
    path = paths.run_path(run) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    save_generator(ResnetGenerator(blocks=blocks, ngf=8), path, direction=direction, dataset="toy", teacher=teacher)
    return path


@pytest.fixture
def student(home: Path) -> Path:
    return _save_run("tiny-student", "G.safetensors", "A2B", teacher="tiny-teacher")


def _rgb(path: Path, size: tuple[int, int] = (40, 24), seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def test_odd_sized_image_keeps_its_size(cli, student, tmp_path):
    source = _rgb(tmp_path / "in" / "odd.png", (37, 23))
    result = cli("translate", source, "--output", tmp_path / "out")
    assert result.code == 0, result.err
    with Image.open(tmp_path / "out" / "odd_A2B.png") as out:
        assert out.size == (37, 23) and out.mode == "RGB"


def test_output_defaults_to_translated_folder_with_direction_suffix(cli, student, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _rgb(tmp_path / "photo.jpg")
    result = cli("translate", "photo.jpg")
    assert result.code == 0, result.err
    assert (tmp_path / "translated" / "photo_A2B.png").is_file()
    assert "tiny-student" in result.err_text  # the command names the model it used


def test_rgba_input_keeps_its_alpha(cli, student, tmp_path):
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., :3] = 120
    rgba[..., 3] = np.linspace(0, 255, 30, dtype=np.uint8)[None, :]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    assert cli("translate", tmp_path / "logo.png", "-o", tmp_path / "out").code == 0
    with Image.open(tmp_path / "out" / "logo_A2B.png") as out:
        assert out.mode == "RGBA"
        assert np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])


def test_grayscale_input_is_translated_as_rgb(cli, student, tmp_path):
    Image.fromarray(np.full((16, 16), 90, dtype=np.uint8), "L").save(tmp_path / "gray.png")
    assert cli("translate", tmp_path / "gray.png", "-o", tmp_path / "out").code == 0
    with Image.open(tmp_path / "out" / "gray_A2B.png") as out:
        assert out.mode == "RGB" and out.size == (16, 16)


def test_exif_orientation_is_applied(cli, student, tmp_path):
    image = Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8), "RGB")  # stored 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": shown 20 wide, 40 high
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    assert cli("translate", tmp_path / "phone.jpg", "-o", tmp_path / "out").code == 0
    with Image.open(tmp_path / "out" / "phone_A2B.png") as out:
        assert out.size == (20, 40)


def test_corrupt_file_is_reported_and_the_others_are_written(cli, student, tmp_path):
    folder = tmp_path / "in"
    _rgb(folder / "a.png")
    _rgb(folder / "c.png", (24, 24))
    (folder / "b.jpg").write_bytes(b"not a jpeg at all")
    result = cli("translate", folder, "-o", tmp_path / "out")
    assert result.code == 1
    assert "b.jpg" in result.err_text and "Failed" in result.err_text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_A2B.png", "c_A2B.png"]


def test_folder_input_takes_direct_images_and_recursive_takes_subfolders(cli, student, tmp_path):
    _rgb(tmp_path / "in" / "top.png")
    _rgb(tmp_path / "in" / "sub" / "deep.png")
    assert cli("translate", tmp_path / "in", "-o", tmp_path / "flat").code == 0
    assert [p.name for p in (tmp_path / "flat").iterdir()] == ["top_A2B.png"]
    assert cli("translate", tmp_path / "in", "--recursive", "-o", tmp_path / "all").code == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["deep_A2B.png", "top_A2B.png"]


def test_an_input_is_never_overwritten(cli, student, tmp_path):
    folder = tmp_path / "work"
    _rgb(folder / "x.png")
    victim = _rgb(folder / "x_A2B.png", seed=1)  # exactly the name x.png's output would get
    before = victim.read_bytes()
    result = cli("translate", folder / "x.png", folder / "x_A2B.png", "-o", folder)
    assert result.code == 0, result.err
    assert victim.read_bytes() == before
    assert (folder / "x_A2B-2.png").is_file() and (folder / "x_A2B_A2B.png").is_file()
    assert "overwrite" in result.err_text


def test_max_side_shrinks_keeping_aspect_and_zero_keeps_size(cli, student, tmp_path):
    source = _rgb(tmp_path / "big.png", (64, 32))
    assert cli("translate", source, "--max-side", "32", "-o", tmp_path / "a").code == 0
    with Image.open(tmp_path / "a" / "big_A2B.png") as out:
        assert out.size == (32, 16)
    assert cli("translate", source, "--max-side", "0", "-o", tmp_path / "b").code == 0
    with Image.open(tmp_path / "b" / "big_A2B.png") as out:
        assert out.size == (64, 32)


def test_teacher_run_with_two_generators_needs_direction(cli, tmp_path):
    _save_run("teach", "G_A2B.safetensors", "A2B")
    _save_run("teach", "G_B2A.safetensors", "B2A")
    source = _rgb(tmp_path / "a.png")
    result = cli("translate", source, "-o", tmp_path / "out")
    assert result.code == 2 and "--direction" in result.err_text
    assert cli("translate", source, "--direction", "B2A", "-o", tmp_path / "out").code == 0
    assert (tmp_path / "out" / "a_B2A.png").is_file()


def test_missing_input_is_one_sentence(cli, student, tmp_path):
    result = cli("translate", tmp_path / "nope.png")
    assert result.code == 2 and "nope.png does not exist" in result.err_text and "Traceback" not in result.err


def test_tiny_and_odd_images_pad_and_crop_back():
    x = torch.rand(2, 3, 5, 3)
    padded, (top, left) = pad_to_multiple(x, 4)
    assert padded.shape[-2:] == (8, 8)
    assert torch.equal(padded[:, :, top : top + 5, left : left + 3], x)
    model = ResnetGenerator(blocks=1, ngf=8).eval()
    out = translate_batch(model, torch.randint(0, 256, (1, 3, 7, 3), dtype=torch.uint8), torch.device("cpu"))
    assert out.shape == (1, 3, 7, 3) and out.dtype == torch.uint8


def test_batching_gives_the_same_result_as_one_at_a_time():
    model = ResnetGenerator(blocks=1, ngf=8).eval()
    images = torch.randint(0, 256, (3, 12, 20, 3), dtype=torch.uint8)
    together = translate_batch(model, images, torch.device("cpu"))
    alone = torch.cat([translate_batch(model, images[i : i + 1], torch.device("cpu")) for i in range(3)])
    assert (together.int() - alone.int()).abs().max() <= 1


def test_same_stem_inputs_get_distinct_outputs(tmp_path):
    files = [tmp_path / "a" / "p.jpg", tmp_path / "b" / "p.png"]
    outputs, renamed = plan_outputs(files, tmp_path / "out", "A2B")
    assert [o.name for o in outputs] == ["p_A2B.png", "p_A2B-2.png"] and len(renamed) == 1


def test_device_specs():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(CgdistillError, match="no CUDA GPU"):
            pick_device("cuda:0")
    with pytest.raises(CgdistillError, match="not valid"):
        pick_device("gpu")


def test_the_display_is_told_while_the_engine_is_chosen_and_for_what_size(student, tmp_path):
    # The first choice for a size times the engines (a minute or more for a large model): the terminal
    # shows a spinner around it, so the display must hear of it before the model line.
    from cgdistill.translate import Display, TranslateRequest, translate

    events = []

    class Recorder(Display):
        @contextlib.contextmanager
        def choosing(self, work):
            events.append(("choosing", (work.width, work.height, work.batch)))
            yield
            events.append(("chosen", None))

        def started(self, setup):
            events.append(("started", setup.engine.name))

    source = _rgb(tmp_path / "in" / "a.png", (40, 24))
    translate(TranslateRequest([source], output=tmp_path / "out", max_side=0), Recorder())
    assert [name for name, _ in events] == ["choosing", "chosen", "started"]
    assert events[0][1] == (40, 24, 1)
