"""Fidelity is measured on each test image at its own size and aspect ratio, the same way in compare and distill."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgdistill.compare import compare
from cgdistill.data.toy import make_toy_dataset
from cgdistill.forward import prepare_generator, shrink_to_max_side, translate_batch
from cgdistill.metrics import fidelity, psnr, ssim, ssim_per_image, to_unit
from cgdistill.nets import ResnetGenerator
from cgdistill.options import DEFAULT_MAX_SIDE
from cgdistill.testset import load_images, load_test_set, run_model
from cgdistill.train.config import DistillConfig
from cgdistill.train.distill import distill, sample_images
from cgdistill.weights import save_generator

CPU = torch.device("cpu")
# (width, height) of the test images: landscape, portrait, square, none a multiple of the others.
SIZES = [(40, 32), (32, 48), (36, 36)]


def _write(path: Path, width: int, height: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Smooth content (a gradient plus low-frequency waves), so a resize that distorts changes the pixels.
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = seed * 0.7
    channels = [
        128 + 100 * np.sin(x / 5 + phase) * np.cos(y / 7),
        255 * x / max(width - 1, 1),
        255 * y / max(height - 1, 1),
    ]
    Image.fromarray(np.stack(channels, -1).clip(0, 255).astype(np.uint8), "RGB").save(path)


def mixed_dataset(root: Path) -> Path:
    """trainA/trainB of 32x32 squares; testA/testB and testA_gt of mixed sizes and aspect ratios."""
    for i in range(4):
        _write(root / "trainA" / f"{i}.png", 32, 32, i)
        _write(root / "trainB" / f"{i}.png", 32, 32, 10 + i)
    for i, (width, height) in enumerate(SIZES):
        _write(root / "testA" / f"{i}.png", width, height, 20 + i)
        _write(root / "testA_gt" / f"{i}.png", width, height, 30 + i)
        _write(root / "testB" / f"{i}.png", width, height, 40 + i)
    return root


def generators() -> tuple[ResnetGenerator, ResnetGenerator]:
    torch.manual_seed(0)
    return ResnetGenerator(blocks=2, ngf=8).eval(), ResnetGenerator(blocks=1, ngf=8).eval()


def test_each_test_image_keeps_its_own_size_by_default(tmp_path):
    test_set = load_test_set(mixed_dataset(tmp_path / "mixed"), "A2B")
    assert [tuple(image.shape) for image in test_set.inputs] == [(h, w, 3) for w, h in SIZES]
    assert [image.shape for image in test_set.ground_truth] == [image.shape for image in test_set.inputs]
    assert [image.shape for image in test_set.real_target] == [image.shape for image in test_set.inputs]
    # Unchanged pixels: nothing resized, nothing cropped.
    assert torch.equal(test_set.inputs[1], torch.from_numpy(np.array(Image.open(tmp_path / "mixed/testA/1.png"))))


def test_image_size_sets_the_shorter_side_and_keeps_the_aspect_ratio(tmp_path):
    test_set = load_test_set(mixed_dataset(tmp_path / "mixed"), "A2B", shorter_side=16)
    assert [tuple(image.shape[:2]) for image in test_set.inputs] == [(16, 20), (24, 16), (16, 16)]
    for (width, height), image in zip(SIZES, test_set.inputs, strict=True):
        # Sides are whole pixels: the ratio is kept to within half a pixel on the longer side.
        assert abs(image.shape[1] / image.shape[0] - width / height) <= 0.5 / min(image.shape[:2])


def test_images_over_translates_max_side_are_measured_as_translate_shrinks_them(tmp_path):
    _write(tmp_path / "wide.png", DEFAULT_MAX_SIDE * 2, 24, 0)
    (image,) = load_images([tmp_path / "wide.png"])
    expected = np.array(shrink_to_max_side(Image.open(tmp_path / "wide.png").convert("RGB"), DEFAULT_MAX_SIDE))
    assert image.shape == (12, DEFAULT_MAX_SIDE, 3) and torch.equal(image, torch.from_numpy(expected))


def test_each_images_psnr_and_ssim_are_measured_at_its_own_size():
    torch.manual_seed(0)
    references = [torch.randint(0, 256, (h, w, 3), dtype=torch.uint8) for w, h in SIZES]
    outputs = [(r.int() + torch.randint(-20, 21, r.shape)).clamp(0, 255).to(torch.uint8) for r in references]
    measured = fidelity(outputs, references)
    direct = []
    for out, ref in zip(outputs, references, strict=True):
        # Pixels in [0, 1] as float32 (what the metrics take), the rest in float64, by numpy, image alone.
        a, b = (x.numpy().astype(np.float32) / np.float32(255) for x in (out, ref))
        mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
        direct.append(10 * math.log10(1 / mse))
    # The same float32 pixels, then float64 arithmetic on both sides: equal to float64 rounding.
    assert measured.psnr_per_image == pytest.approx(direct, rel=1e-12)
    assert measured.psnr == pytest.approx(sum(direct) / len(direct), rel=1e-12)
    pairs = zip(outputs, references, strict=True)
    alone = [float(ssim_per_image(to_unit(o[None]), to_unit(r[None]))) for o, r in pairs]
    # Each image's SSIM alone; the set's mean is taken over float32 values, so to float32 rounding.
    assert measured.ssim == pytest.approx(sum(alone) / len(alone), rel=1e-6)


def test_the_model_runs_each_image_at_its_own_size(tmp_path):
    teacher, _ = generators()
    model = prepare_generator(teacher, CPU)
    inputs = load_test_set(mixed_dataset(tmp_path / "mixed"), "A2B").inputs
    outputs = run_model(model, inputs, CPU)
    assert [o.shape for o in outputs] == [i.shape for i in inputs]
    for image, out in zip(inputs, outputs, strict=True):  # what translate makes of each image alone
        assert torch.equal(out, translate_batch(model, image[None], CPU)[0])


def _square_path(teacher, student, data: Path, size: int) -> dict[str, float]:
    """The figures as compare computed them when every test image was resized to one square size."""

    def load(folder: str) -> torch.Tensor:
        files = sorted((data / folder).iterdir())
        return torch.stack(
            [
                torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)))
                for f in files
            ]
        )

    inputs, gt = load("testA"), load("testA_gt")
    t_model, s_model = prepare_generator(teacher, CPU), prepare_generator(student, CPU)
    t_out = torch.cat([translate_batch(t_model, inputs[i : i + 8], CPU) for i in range(0, len(inputs), 8)])
    s_out = torch.cat([translate_batch(s_model, inputs[i : i + 8], CPU) for i in range(0, len(inputs), 8)])
    return {
        "psnr": psnr(to_unit(s_out), to_unit(t_out)),
        "ssim": ssim(to_unit(s_out), to_unit(t_out)),
        "psnr_gt_teacher": psnr(to_unit(t_out), to_unit(gt)),
        "baseline": psnr(to_unit(inputs), to_unit(gt)),
    }


@pytest.mark.parametrize("image_size", [None, 16])
def test_a_square_test_set_gives_the_figures_of_the_square_path(tmp_path, image_size):
    data = make_toy_dataset(tmp_path / "toy", size=32, n_train=1, n_test=5)
    teacher, student = generators()
    result = compare(
        teacher,
        student,
        load_test_set(data, "A2B", image_size),
        direction="A2B",
        device=CPU,
        image_size=image_size or 32,
        repeats=1,
        throughput_batch=1,
        engines=False,
    ).result
    square = _square_path(teacher, student, data, image_size or 32)
    # Same images, same batches, same arithmetic: the same numbers, not merely close ones.
    assert (result.fidelity_psnr, result.fidelity_ssim) == (square["psnr"], square["ssim"])
    assert (result.teacher.psnr_gt, result.baseline_psnr_gt) == (square["psnr_gt_teacher"], square["baseline"])
    assert result.fidelity_sizes == {f"{image_size or 32}x{image_size or 32}": 5}


def test_compare_reports_each_size_and_the_cost_at_a_square(cli, tmp_path, home):
    data = mixed_dataset(tmp_path / "mixed")
    teacher, student = generators()
    save_generator(teacher, tmp_path / "t.safetensors", direction="A2B", dataset="mixed", image_size=32)
    save_generator(student, tmp_path / "s.safetensors", direction="A2B", dataset="mixed", image_size=32)
    common = ("compare", "--teacher", tmp_path / "t.safetensors", "--student", tmp_path / "s.safetensors")
    result = cli(*common, "--data", data, "--json", "--device", "cpu")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["fidelity_sizes"] == {"40x32": 1, "32x48": 1, "36x36": 1}
    assert report["image_size"] == 32  # MACs and latency: the first image's shorter side, square
    per_image = [w["psnr"] for w in report["worst_images"]]
    assert len(per_image) == 3 and abs(sum(per_image) / 3 - report["fidelity"]["psnr"]) < 1e-9
    resized = json.loads(cli(*common, "--data", data, "--json", "--device", "cpu", "--image-size", "16").out)
    assert resized["fidelity_sizes"] == {"20x16": 1, "16x24": 1, "16x16": 1} and resized["image_size"] == 16


def test_the_report_shows_images_of_mixed_sizes_at_their_own_aspect_ratio(cli, tmp_path):
    data = mixed_dataset(tmp_path / "mixed")
    teacher, student = generators()
    save_generator(teacher, tmp_path / "t.safetensors", direction="A2B", dataset="mixed", image_size=32)
    save_generator(student, tmp_path / "s.safetensors", direction="A2B", dataset="mixed", image_size=32)
    result = cli(
        "compare", "--teacher", tmp_path / "t.safetensors", "--student", tmp_path / "s.safetensors", "--data", data,
        "--report", tmp_path / "report", "--grid", "3", "--device", "cpu",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "40x32 (1), 32x48 (1), 36x36 (1)" in " ".join(result.out.split())
    for stem, (width, height) in zip(("0", "1", "2"), SIZES, strict=True):
        for kind in ("input", "teacher", "student", "difference"):
            assert Image.open(tmp_path / "report" / "images" / f"{stem}_{kind}.png").size == (width, height)
    grid = Image.open(tmp_path / "report" / "grid.png")
    # Small images are enlarged by a whole factor until their longer side reaches 96 px (room for the labels);
    # each row is as tall as its enlarged image, each column as wide as the widest.
    factors = [math.ceil(96 / max(size)) for size in SIZES]
    assert grid.size[1] == 18 + sum(f * h + 4 for f, (_, h) in zip(factors, SIZES, strict=True)) + 4
    assert grid.size[0] == 4 * max(f * w for f, (w, _) in zip(factors, SIZES, strict=True)) + 5 * 4


def test_sample_sheets_take_the_largest_centre_crop_the_images_share():
    images = [torch.zeros(h, w, 3, dtype=torch.uint8) for w, h in [(42, 34), (33, 50), (37, 37)]]
    assert sample_images(images).shape == (3, 32, 32, 3)
    assert sample_images([torch.zeros(30, 45, 3, dtype=torch.uint8)]).shape == (1, 28, 44, 3)


@pytest.mark.parametrize("dataset", ["square", "mixed"])
def test_distills_psnr_to_teacher_is_what_compare_reports_for_the_same_images(cli, tmp_path, home, dataset):
    if dataset == "square":
        data = make_toy_dataset(tmp_path / "toy", size=32, n_train=4, n_test=3)
    else:
        data = mixed_dataset(tmp_path / "mixed")
    teacher, _ = generators()
    save_generator(teacher, tmp_path / "t.safetensors", direction="A2B", dataset="data", image_size=32)
    config = DistillConfig(
        teacher=str(tmp_path / "t.safetensors"), data=str(data), name="student", blocks=1, image_size=24,
        load_size=28, ndf=4, pool_size=2, max_steps=2, eval_every=1, log_every=1, sample_every=1,
        save_every=1000, device="cpu", amp=False,
    )  # fmt: skip
    run = distill(config)
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    result = cli(
        "compare", "--teacher", tmp_path / "t.safetensors", "--student", "student", "--data", data,
        "--limit", "8", "--json", "--device", "cpu",
    )  # fmt: skip
    assert result.code == 0, result.err
    fid = json.loads(result.out)["fidelity"]
    # metrics.jsonl rounds PSNR to 3 decimals and SSIM to 4; beyond that the two are one computation.
    assert abs(last["psnr_to_teacher"] - fid["psnr"]) <= 0.5e-3 + 1e-9
    assert abs(last["ssim_to_teacher"] - fid["ssim"]) <= 0.5e-4 + 1e-9
    assert (run / "samples" / "step_0000002.png").is_file()
