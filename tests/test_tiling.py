"""Exact tiled translation: tile by tile with whole-image norm statistics gives the one-pass result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgdistill import engines, paths
from cgdistill.engines import CpuBf16
from cgdistill.errors import CgdistillError
from cgdistill.forward import prepare_generator, translate_batch
from cgdistill.nets import GeneratorConfig, ResnetGenerator, norm
from cgdistill.nets.init import init_weights
from cgdistill.policy import TileDecider, parse_tile
from cgdistill.sizes import parse_size
from cgdistill.tiling.plan import (
    MAX_TILE,
    MIN_AUTO_TILE,
    MIN_TILE,
    TILE_SPEED_BUDGET,
    TilePlan,
    plan_tiles,
    tiled_bytes,
    tiles_for_speed,
)
from cgdistill.tiling.run import TiledGenerator
from cgdistill.weights import save_generator
from translating import translate_folder

CPU = torch.device("cpu")
TEACHER = GeneratorConfig()  # 9 blocks, ngf 64
MP12 = (3000, 4000)

# Every layer kind the project builds or imports (official.py and layouts/ convert to these configs).
VARIANTS = {
    "instance": {},
    "instance-affine": {"norm": "instance-affine"},
    "batch": {"norm": "batch"},
    "resize-conv reflect": {"upsample": "resize-conv"},
    "resize-conv zeros": {"upsample": "resize-conv", "up_padding": "zeros"},
    "reflect downsampling": {"down_padding": "reflect"},
    "separable blocks": {"block": "separable"},
    "separable batch resize-conv": {"block": "separable", "norm": "batch", "upsample": "resize-conv"},
    "half-resolution ends": {"ends": "half"},
    "half-resolution ends, batch resize-conv": {"ends": "half", "norm": "batch", "upsample": "resize-conv"},
}
# (tile side in output pixels, residual-block rows per strip): ordinary tiles, tiles of one
# bottleneck position (far smaller than the ~20 px halo) with 1-row strips, and odd strips.
TILINGS = [(16, 3), (MIN_TILE, 1), (8, 2)]

# fp32 bound on [-1, 1]: the tiled run differs from one pass only by rounding (convs summed in
# another order for other shapes, norm statistics summed in float64 where torch sums in double and
# applies in fp32): ~1e-7 relative per layer, through ~25 layers of normalised activations,
# measured up to 1.5e-6. 2e-5 is 0.003 grey levels, far below any real seam (a wrong statistic or a
# wrong border moves outputs by 1e-2 or more).
FP32_ATOL = 2e-5


def _generator(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    generator = ResnetGenerator(blocks=2, ngf=8, **overrides)
    init_weights(generator, generator=torch.Generator().manual_seed(seed))
    for module in generator.modules():  # non-trivial running statistics, so batch norm is tested for real
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return prepare_generator(generator, CPU)


def _pixels(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A photo-like uint8 HxWx3 image: smooth regions plus noise (random noise alone has flat statistics)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(
        torch.rand(1, 3, 4, 4, generator=gen), size=(height, width), mode="bilinear"
    )
    image = (coarse[0] * 0.8 + torch.rand(3, height, width, generator=gen) * 0.2) * 255
    return image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def _tiled_float(model: torch.nn.Module, pixels: torch.Tensor, tile: int, strip: int) -> torch.Tensor:
    out = torch.empty(1, 3, *pixels.shape[:2])

    def write(rect, y):
        out[:, :, rect[0] : rect[1], rect[2] : rect[3]] = y.float()

    TiledGenerator(model).run(pixels, TilePlan(tile, strip, 0, 0, 0), CPU, write)
    return out


def _one_pass_float(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(pixels.permute(2, 0, 1)[None].float().div(127.5).sub(1.0))


@pytest.mark.parametrize("tile,strip", TILINGS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_tiled_run_equals_one_pass_in_fp32(variant, tile, strip):
    model = _generator(**VARIANTS[variant])
    pixels = _pixels(44, 60)
    tiled = _tiled_float(model, pixels, tile, strip)
    assert torch.allclose(tiled, _one_pass_float(model, pixels), rtol=0, atol=FP32_ATOL)


def test_tiles_without_whole_image_statistics_would_differ():
    """The check above can fail: the same tiles normalised per tile (naive tiling) are far off."""
    model = _generator()
    pixels = _pixels(44, 60)
    whole = _one_pass_float(model, pixels)
    naive = _one_pass_float(model, pixels[:20, :28].contiguous())
    assert (naive - whole[:, :, :20, :28]).abs().max() > 100 * FP32_ATOL


@pytest.mark.parametrize("overrides", [{"block": "separable"}, {"ends": "half"}])
@pytest.mark.parametrize("size", [(45, 61), (7, 3), (33, 1), (9, 100)])
def test_8bit_output_of_odd_sizes_is_within_one_grey_level_of_translate_batch(size, overrides):
    model = _generator(**overrides)
    pixels = _pixels(*size, seed=1).numpy()
    decider = TileDecider(model, CPU, tile=8)
    out = decider.translate(pixels, plan_tiles(*size, model.config, 4, 0, tile=8))
    expected = translate_batch(model, torch.from_numpy(pixels)[None], CPU)[0].numpy()
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def _bf16_engine(blocks: int = 3, seed: int = 0, **overrides) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    generator = ResnetGenerator(GeneratorConfig(blocks=blocks, ngf=8, **overrides))
    init_weights(generator, generator=torch.Generator().manual_seed(seed))
    generator = prepare_generator(generator, CPU)
    return generator, CpuBf16(generator)


@pytest.mark.parametrize(
    ("variant", "size", "tile"),
    [("instance", (96, 120), 16), ("instance-affine", (52, 68), MIN_TILE), ("resize-conv reflect", (64, 76), 8)],
)
def test_bf16_tiled_run_is_within_one_grey_level_of_the_one_pass_at_the_size_that_tiles(
    monkeypatch, variant, size, tile
):
    """Under bf16 both runs normalise with float64 statistics (nets/norm.py), which the engine's one
    pass does from ``FLOAT64_NORM_PIXELS`` up (lowered here so that a small image stands for a large
    one): the tiled run is then the one-pass run but where a conv on another region rounds one
    accumulator to the other side of a bf16 step. With torch's own bf16 kernel in the one pass these
    9-block generators differ by 3-5 grey levels."""
    monkeypatch.setattr(engines, "FLOAT64_NORM_PIXELS", size[0] * size[1])
    generator, engine = _bf16_engine(blocks=9, **VARIANTS[variant])
    pixels = _pixels(*size, seed=2).numpy()
    out = TileDecider(engine, CPU, tile=tile).translate(pixels, plan_tiles(*size, generator.config, 2, 0, tile=tile))
    expected = translate_batch(engine, torch.from_numpy(pixels)[None], CPU)[0].numpy()
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_the_bf16_engine_takes_float64_statistics_from_the_threshold_up(monkeypatch):
    counted: list[tuple[int, ...]] = []
    real = norm.channel_sums
    monkeypatch.setattr(norm, "channel_sums", lambda x: (counted.append(tuple(x.shape)), real(x))[1])
    monkeypatch.setattr(engines, "FLOAT64_NORM_PIXELS", 48 * 64)
    generator, engine = _bf16_engine(blocks=1)
    with torch.inference_mode():
        engine(torch.zeros(1, 3, 44, 64))
        assert counted == []
        engine(torch.zeros(1, 3, 48, 64))
    assert len(counted) == sum(isinstance(m, torch.nn.InstanceNorm2d) for m in generator.modules())


def test_bf16_tiled_run_is_as_close_to_fp32_as_the_bf16_one_pass():
    """Below the threshold the one pass keeps torch's bf16 kernel: the two bf16 runs then differ by
    bf16 rounding, and the tiled one is as accurate (mean error against fp32 within 0.1 grey level of
    the one pass's; bf16 itself is ~0.5 off)."""
    generator, engine = _bf16_engine()
    pixels = torch.from_numpy(_pixels(120, 160, seed=2).numpy())
    tiled = TileDecider(engine, CPU, tile=32).translate(
        pixels.numpy(), plan_tiles(120, 160, generator.config, 2, 0, 32)
    )
    one_pass = translate_batch(engine, pixels[None], CPU)[0].numpy().astype(int)
    fp32 = translate_batch(generator, pixels[None], CPU)[0].numpy().astype(int)
    assert np.abs(tiled.astype(int) - fp32).mean() <= np.abs(one_pass - fp32).mean() + 0.1


def test_progress_counts_every_tile_of_every_pass_and_each_block():
    model = _generator()
    runner = TiledGenerator(model)
    plan = TilePlan(16, 4, 0, 0, 0)
    seen: list[tuple[int, int]] = []
    runner.run(_pixels(32, 48), plan, CPU, lambda rect, y: None, lambda done, total: seen.append((done, total)))
    # 2x3 tiles: three encoder passes (two norms before the kept bottleneck), three decoder passes, two blocks
    assert seen == [(i, 6 * 6 + 2) for i in range(1, 6 * 6 + 3)]


# --- the plan: a pure function of size, architecture, precision and budget ----------------------


def test_plan_is_one_pass_when_the_estimate_fits_the_budget():
    plan = plan_tiles(768, 1024, TEACHER, 2, budget=64 * 2**30)
    assert not plan.tiled and plan.fits


def test_plan_keeps_the_bottleneck_in_memory_when_the_budget_allows():
    plan = plan_tiles(*MP12, TEACHER, 2, budget=2 * 2**30)
    assert plan.tiled and plan.fits and not plan.spill and plan.tile == MAX_TILE


def test_plan_spills_the_bottleneck_to_files_for_a_12mp_teacher_photo_in_400_mb():
    plan = plan_tiles(*MP12, TEACHER, 2, budget=400 * 2**20)
    assert plan.tiled and plan.spill and plan.fits and plan.tiled_bytes <= 400 * 2**20


def test_a_smaller_budget_gives_smaller_tiles():
    roomy = plan_tiles(*MP12, TEACHER, 2, budget=400 * 2**20)
    tight = plan_tiles(*MP12, TEACHER, 2, budget=200 * 2**20)
    assert tight.tiled and tight.fits and tight.tile < roomy.tile


def test_fp32_keeps_twice_the_bottleneck_bytes_of_bf16():
    bf16 = tiled_bytes(*MP12, TEACHER, 2, 256, 8)
    fp32 = tiled_bytes(*MP12, TEACHER, 4, 256, 8)
    bottleneck_bf16 = 256 * 750 * 1000 * 2
    assert fp32 - bf16 == 2 * bottleneck_bf16


def test_a_budget_below_the_smallest_tiles_gives_them_and_says_it_does_not_fit():
    plan = plan_tiles(*MP12, TEACHER, 4, budget=10 * 2**20)
    assert plan.tile == MIN_AUTO_TILE and plan.strip == 1 and plan.spill and not plan.fits


@pytest.mark.parametrize(("ngf", "megapixels"), [(64, 1), (32, 1), (16, 2), (8, 4)])
def test_auto_tiles_for_speed_from_a_size_that_shrinks_as_the_network_widens(ngf, megapixels):
    config = GeneratorConfig(blocks=3, ngf=ngf)
    side = int((megapixels * 2**20) ** 0.5)
    assert plan_tiles(side + 4, side + 4, config, 2, budget=2**40).tiled  # memory to spare
    assert not plan_tiles(side - 4, side - 4, config, 2, budget=2**40).tiled


def test_no_image_under_1_mp_tiles_for_speed_however_wide_the_network():
    assert not tiles_for_speed(1000, 1000, GeneratorConfig(ngf=256))
    assert tiles_for_speed(1024, 1024, GeneratorConfig(ngf=256))


def test_on_a_gpu_auto_tiles_only_over_the_budget():
    assert not plan_tiles(*MP12, TEACHER, 2, budget=2**40, on_cpu=False).tiled
    assert plan_tiles(*MP12, TEACHER, 2, budget=2**30, on_cpu=False).tiled


def test_tiles_for_speed_keep_the_buffers_in_memory_while_they_are_small_and_spill_before_they_shrink():
    roomy = 2**40
    one_mp, three_mp = plan_tiles(888, 1184, TEACHER, 2, roomy), plan_tiles(1500, 2000, TEACHER, 2, roomy)
    assert (one_mp.tile, one_mp.spill) == (MAX_TILE, False)
    assert (three_mp.tile, three_mp.spill) == (MAX_TILE, True)
    assert max(one_mp.tiled_bytes, three_mp.tiled_bytes) <= TILE_SPEED_BUDGET


def test_a_12mp_teacher_photo_takes_the_plan_of_max_memory_1_5g_however_much_is_free():
    # --max-memory 1.5G leaves the tensors about 400 MiB beside the libraries and the teacher.
    assert plan_tiles(*MP12, TEACHER, 2, budget=2**40) == replace(
        plan_tiles(*MP12, TEACHER, 2, budget=400 * 2**20), budget=2**40
    )


def test_tile_off_is_one_pass_and_a_size_forces_tiles_rounded_up_to_a_multiple_of_4():
    assert not plan_tiles(*MP12, TEACHER, 2, budget=1, tile="off").tiled
    assert plan_tiles(64, 64, TEACHER, 2, budget=2**40, tile=30).tile == 32


@pytest.mark.parametrize("variant", ["instance", "separable blocks", "batch"])
def test_spilled_run_equals_the_in_memory_run(variant):
    model = _generator(**VARIANTS[variant])
    pixels = _pixels(44, 60)
    outputs = []
    for spill in (False, True):
        out = torch.empty(1, 3, 44, 60)

        def write(rect, y, out=out):
            out[:, :, rect[0] : rect[1], rect[2] : rect[3]] = y.float()

        TiledGenerator(model).run(pixels, TilePlan(16, 3, 0, 0, 0, spill), CPU, write)
        outputs.append(out)
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("text,expected", [("1.5G", 3 * 2**29), ("800M", 800 * 2**20), ("2048k", 2**21), ("512", 512)])
def test_sizes_parse_in_powers_of_1024(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "1.5X"])
def test_a_bad_size_is_one_sentence_naming_the_flag(text):
    with pytest.raises(CgdistillError, match="--max-memory"):
        parse_size(text)


def test_a_bad_tile_is_one_sentence_naming_the_flag():
    with pytest.raises(CgdistillError, match="--tile"):
        parse_tile("big")


# --- translate and its engines --------------------------------------------------------------------


def _save(home: Path) -> Path:
    path = paths.run_path("tiny") / "G.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_generator(_generator(block="separable").cpu(), path, direction="A2B", dataset="toy")
    return path


def test_translate_files_tiles_an_image_over_the_budget_and_matches_one_pass(tmp_path):
    model = _generator()
    source = tmp_path / "in" / "photo.png"
    source.parent.mkdir()
    Image.fromarray(_pixels(50, 70, seed=3).numpy()).save(source)
    ticks: list[int] = []
    tiled = translate_folder(
        model, [source], tmp_path / "tiled", max_memory=1, tile_progress=lambda d, t: ticks.append(t)
    )
    whole = translate_folder(model, [source], tmp_path / "whole", tile="off")
    assert ticks, "the image ran in one pass"
    a = np.asarray(Image.open(tiled.written[0][1])).astype(int)
    b = np.asarray(Image.open(whole.written[0][1])).astype(int)
    assert np.abs(a - b).max() <= 1


def test_a_decoded_image_tiles_without_a_library_warning(tmp_path, recwarn):
    """A decoded image is a read-only array (numpy over PIL's buffer); torch warns when it wraps one."""
    model = _generator()
    source = tmp_path / "photo.png"
    Image.fromarray(_pixels(48, 64, seed=5).numpy()).save(source)  # multiples of 4: no padding copies it
    result = translate_folder(model, [source], tmp_path / "out", max_memory=1)
    assert len(result.written) == 1
    assert [str(w.message) for w in recwarn] == []


def test_a_size_is_planned_once_a_call_so_frames_run_alike_and_notes_come_once(monkeypatch):
    from cgdistill import policy

    budgets = iter([1, 10**12, 1, 10**12])  # the free memory swinging between batches of a video
    monkeypatch.setattr(policy, "tensor_budget", lambda max_memory, device: next(budgets))
    decider = TileDecider(_generator(), CPU, max_memory=1)
    plans = [decider.plan(50, 70) for _ in range(3)]
    assert all(plan is plans[0] for plan in plans) and plans[0].tiled
    assert decider.plan(40, 40) is not plans[0] and not decider.plan(40, 40).tiled  # its own size, its own plan


def test_an_engine_that_cannot_tile_runs_in_one_pass_and_says_so(tmp_path):
    class Opaque(torch.nn.Module):  # like onnxruntime: a config, but no torch layers to tile
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, x):
            return self.inner(x)

    decider = TileDecider(Opaque(_generator()), CPU, max_memory=1)
    assert not decider.plan(50, 70).tiled
    assert "cannot tile" in decider.notes[0] and "--engine torch" in decider.notes[0]


def test_an_engine_that_cannot_tile_runs_an_image_tiles_would_only_speed_up_in_one_pass_silently(monkeypatch):
    class Opaque(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

    monkeypatch.setattr("cgdistill.tiling.plan.TILE_FROM_PIXELS", 50 * 70)
    monkeypatch.setattr("cgdistill.tiling.plan.TILE_FROM_ELEMENTS", 1)
    decider = TileDecider(Opaque(_generator()), CPU)  # memory to spare: tiles would be for speed alone
    assert not decider.plan(50, 70).tiled and decider.notes == []


def test_an_engine_that_cannot_tile_hands_large_images_to_its_torch_fallback():
    class Opaque(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

    model = _generator()
    decider = TileDecider(Opaque(model), CPU, max_memory=1, tiled_model=model)
    plan = decider.plan(50, 70)
    assert plan.tiled and not any("cannot tile" in note for note in decider.notes)


def test_rgba_keeps_its_alpha_and_tiles_like_one_pass(cli, home, tmp_path, monkeypatch):
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: False)  # fp32 on every CPU
    _save(home)
    rgba = np.concatenate([_pixels(37, 53, seed=4).numpy(), np.arange(37 * 53, dtype=np.uint8).reshape(37, 53, 1)], 2)
    source = tmp_path / "photo.png"
    Image.fromarray(rgba, "RGBA").save(source)
    assert cli("translate", str(source), "--model", "tiny", "-o", str(tmp_path / "t"), "--tile", "8").code == 0
    assert cli("translate", str(source), "--model", "tiny", "-o", str(tmp_path / "o"), "--tile", "off").code == 0
    tiled = np.asarray(Image.open(tmp_path / "t" / "photo_A2B.png")).astype(int)
    whole = np.asarray(Image.open(tmp_path / "o" / "photo_A2B.png")).astype(int)
    assert np.array_equal(tiled[..., 3], rgba[..., 3])
    assert np.abs(tiled[..., :3] - whole[..., :3]).max() <= 1


def test_cli_refuses_a_bad_tile_in_one_sentence(cli, home, tmp_path):
    _save(home)
    source = tmp_path / "photo.png"
    Image.fromarray(_pixels(16, 16).numpy()).save(source)
    result = cli("translate", str(source), "--model", "tiny", "--tile", "huge")
    assert result.code == 2 and "--tile" in result.err_text
