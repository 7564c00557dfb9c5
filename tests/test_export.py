"""export --format onnx and the inference engines: parity with PyTorch, metadata, sizes, a missing extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgdistill import engines, export, onnxfile, paths, policy
from cgdistill.errors import CgdistillError
from cgdistill.nets import GeneratorConfig, ResnetGenerator, init_weights
from cgdistill.weights import save_generator

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def random_generator(seed: int = 0, **config) -> ResnetGenerator:
    """Random weights large enough that every layer matters (the paper's N(0, 0.02) barely moves tanh)."""
    g = ResnetGenerator(GeneratorConfig(**{"blocks": 2, "ngf": 8, **config}))
    init_weights(g, gain=0.3, generator=torch.Generator().manual_seed(seed))
    norms = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if norms:
        # Batch norm statistics as training leaves them; the initial (0, 1) would let activations grow
        # by orders of magnitude per layer, where fp32 rounding alone exceeds any output tolerance.
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        with torch.no_grad():
            g.train()(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    return g.eval()


def run_onnx(path_or_bytes, x: torch.Tensor) -> torch.Tensor:
    data = Path(path_or_bytes).read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    session = export.make_session(data)
    return torch.from_numpy(session.run([onnxfile.OUTPUT_NAME], {onnxfile.INPUT_NAME: x.numpy()})[0])


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"block": "separable"},
        {"norm": "instance-affine", "upsample": "resize-conv"},
        {"norm": "batch"},
        {"ends": "half"},
    ],
)
def test_export_matches_pytorch_on_random_weights_and_any_multiple_of_four(tmp_path, config):
    g = random_generator(**config)
    result = export.export_onnx(g, tmp_path / "g.onnx", direction="A2B")
    shapes = [r.shape for r in result.parity]
    assert len(shapes) == 3 and any(h != w for _, _, h, w in shapes) and any(n == 2 for n, *_ in shapes)
    assert all(r.max_abs <= export.PARITY_TOLERANCE for r in result.parity)
    # Sizes the export never saw: non-square, another batch.
    x = torch.rand(3, 3, 44, 28) * 2 - 1
    with torch.inference_mode():
        expected = g(x)
    got = run_onnx(result.path, x)
    assert got.shape == expected.shape and expected.std() > 0.05
    # fp32 on both sides, different kernels: ~1e-6 of rounding on outputs in [-1, 1].
    assert (got - expected).abs().max() <= export.PARITY_TOLERANCE


def test_instance_norm_exports_as_instance_normalization_with_torch_epsilon():
    onnx = pytest.importorskip("onnx")
    g = random_generator()
    graph = onnx.load_from_string(export.to_onnx_bytes(g)).graph
    nodes = [n for n in graph.node if n.op_type == "InstanceNormalization"]
    assert len(nodes) == export.count_instance_norms(g) == 1 + 2 + 2 * 2 + 2
    assert all(abs(next(a.f for a in n.attribute if a.name == "epsilon") - 1e-5) < 1e-9 for n in nodes)
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]


def test_the_onnx_file_carries_the_model_config_and_direction(tmp_path):
    g = random_generator(block="separable")
    source = save_generator(g, tmp_path / "G.safetensors", direction="B2A", dataset="toy", teacher="t", step=7)
    from cgdistill.weights import load_generator

    loaded, info = load_generator(source)
    result = export.export_onnx(loaded, tmp_path / "g.onnx", info=info)
    onnx = pytest.importorskip("onnx")
    meta = {entry.key: entry.value for entry in onnx.load(tmp_path / "g.onnx").metadata_props}
    assert meta == result.metadata
    assert meta["format"] == "cgdistill" and meta["direction"] == "B2A" and meta["block"] == "separable"
    assert json.loads(meta["config"]) == g.config.to_dict()
    assert (meta["dataset"], meta["teacher"], meta["step"], meta["multiple"]) == ("toy", "t", "7", "4")


def test_a_parity_failure_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "parity_check", lambda g, b: [export.ParityResult((1, 3, 64, 64), 0.5)])
    with pytest.raises(CgdistillError, match="differs from PyTorch by 5.00e-01") as caught:
        export.export_onnx(random_generator(), tmp_path / "g.onnx")
    assert caught.value.exit_code == 1 and not list(tmp_path.iterdir())


def _student_run(direction: str = "A2B") -> Path:
    path = paths.run_path("stud") / "G.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_generator(random_generator(), path, direction=direction, dataset="toy", teacher="teach")


def test_the_cli_exports_a_run_and_prints_the_parity(cli, tmp_path):
    _student_run()
    result = cli("export", "stud", "--format", "onnx", "-o", tmp_path / "out" / "s.onnx")
    assert result.code == 0, result.err
    assert result.err_text.count("Parity with PyTorch on") == 3 and "2x3x96x160" in result.err_text
    assert "Wrote" in result.out and (tmp_path / "out" / "s.onnx").is_file()


def test_the_cli_refuses_another_format_and_a_non_onnx_name(cli, tmp_path):
    _student_run()
    assert "--format 'tflite' is not supported" in cli("export", "stud", "--format", "tflite").err_text
    result = cli("export", "stud", "-o", tmp_path / "s.bin")
    assert result.code == 2 and "should end in .onnx" in result.err_text and not (tmp_path / "s.bin").exists()


@pytest.fixture
def no_onnx_extra(monkeypatch):
    """As if `pip install 'cgdistill[onnx]'` had not been run: importing onnxruntime fails."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)


def test_without_the_extra_export_says_how_to_install_it(cli, tmp_path, no_onnx_extra):
    _student_run()
    result = cli("export", "stud", "-o", tmp_path / "s.onnx")
    assert result.code == 2 and "pip install 'cgdistill[onnx]'" in result.err_text
    assert not (tmp_path / "s.onnx").exists()


def test_without_the_extra_translate_onnxruntime_says_so_and_auto_uses_torch(cli, tmp_path, no_onnx_extra):
    _student_run()
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(image)
    result = cli("translate", image, "--engine", "onnxruntime", "-o", tmp_path / "out")
    assert result.code == 2 and "pip install 'cgdistill[onnx]'" in result.err_text
    assert not (tmp_path / "out").exists()  # refused before any work
    result = cli("translate", image, "--engine", "auto", "-o", tmp_path / "out")
    assert result.code == 0 and "onnxruntime is not installed" in result.err_text


def test_translate_with_onnxruntime_matches_torch_fp32(cli, tmp_path):
    path = _student_run()
    rng = np.random.default_rng(0)
    image = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (36, 52, 3), dtype=np.uint8)).save(image)
    result = cli("translate", image, "--engine", "onnxruntime", "--device", "cpu", "-o", tmp_path / "ort")
    assert result.code == 0, result.err
    assert "onnxruntime fp32" in result.err_text
    from cgdistill.forward import translate_batch
    from cgdistill.weights import load_generator

    generator, _ = load_generator(path)
    pixels = torch.from_numpy(np.array(Image.open(image).convert("RGB")))[None]
    expected = translate_batch(generator, pixels, torch.device("cpu"))[0].numpy().astype(int)
    got = np.asarray(Image.open(tmp_path / "ort" / "a_A2B.png").convert("RGB")).astype(int)
    # ~1e-6 apart before quantisation: a pixel can round to the neighbouring level, never further.
    assert np.abs(got - expected).max() <= 1


def test_bf16_is_used_only_at_40_db_or_more_and_only_with_native_bf16(monkeypatch):
    g = random_generator()
    cpu = torch.device("cpu")
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: False)
    assert engines.torch_engine(g, cpu).name == "torch fp32"
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(engines, "bf16_psnr", lambda model: 39.9)
    choice = engines.torch_engine(g, cpu)
    assert choice.name == "torch fp32" and "only 39.9 dB" in choice.reason
    monkeypatch.setattr(engines, "bf16_psnr", lambda model: 41.0)
    choice = engines.torch_engine(g, cpu)
    assert choice.name == "torch bf16" and isinstance(choice.model, engines.CpuBf16)


def test_bf16_psnr_compares_against_fp32():
    # A model whose bf16 output equals its fp32 output scores the cap; a real generator scores less.
    class Exact(torch.nn.Module):  # bf16 cannot change an identity's output much: 8 mantissa bits
        def forward(self, x):
            return x.float()

    assert engines.bf16_psnr(Exact()) == 100.0  # the cap for identical outputs
    degraded = random_generator()
    assert 20 < engines.bf16_psnr(degraded) < 100


def test_auto_takes_the_first_processs_choice_without_timing_again(monkeypatch, home):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: False)

    def never(*_args, **_kwargs):
        raise AssertionError("timed although another process decided")

    monkeypatch.setattr(engines, "sample_ms", never)
    cpu = torch.device("cpu")
    ort = engines.choose_engine(random_generator(), cpu, "auto", decided="onnxruntime fp32")
    assert ort.name == "onnxruntime fp32" and ort.tiled is not None  # torch still tiles large images
    torch_choice = engines.choose_engine(random_generator(), cpu, "auto", decided="torch fp32")
    assert torch_choice.name == "torch fp32" and "first process" in torch_choice.reason


def test_auto_times_once_per_architecture_and_picks_the_faster(monkeypatch, home):
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: False)
    calls = []

    def fake_timing(models, x, **kwargs):
        calls.append(sorted(models))
        return {name: [[10.0 if name.startswith("onnxruntime") else 20.0] * 2] * 2 for name in models}

    monkeypatch.setattr(engines, "sample_ms", fake_timing)
    cpu = torch.device("cpu")
    first = engines.choose_engine(random_generator(), cpu, "auto")
    assert first.name == "onnxruntime fp32" and "onnxruntime fp32 10 ms" in first.reason
    second = engines.choose_engine(random_generator(seed=1), cpu, "auto")  # same architecture, other weights
    assert second.name == "onnxruntime fp32" and len(calls) == 1
    assert (home / engines.CACHE_FILE).is_file()
    engines.choose_engine(random_generator(ngf=4), cpu, "auto")  # another architecture is timed anew
    assert len(calls) == 2


def test_auto_times_the_engines_at_the_size_and_batch_of_the_work(monkeypatch, home):
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: False)
    shapes = []

    def fake_timing(models, x, **kwargs):
        shapes.append(tuple(x.shape))
        # onnxruntime wins on small images, torch on large ones: the verdict must follow the work's size.
        small = x.shape[-1] * x.shape[-2] < 100_000
        return {name: [[10.0 if name.startswith("onnxruntime") == small else 20.0] * 2] * 2 for name in models}

    monkeypatch.setattr(engines, "sample_ms", fake_timing)
    cpu = torch.device("cpu")
    small = engines.choose_engine(random_generator(), cpu, "auto", engines.Workload(240, 320, 4))
    large = engines.choose_engine(random_generator(), cpu, "auto", engines.Workload(480, 640, 1))
    assert shapes == [(4, 3, 240, 320), (1, 3, 480, 640)]
    assert small.name == "onnxruntime fp32" and "320x240 in batches of 4" in small.reason
    assert large.name == "torch fp32" and "640x480" in large.reason
    again = engines.choose_engine(random_generator(), cpu, "auto", engines.Workload(241, 322, 4))  # the same bucket
    assert again.name == "onnxruntime fp32" and len(shapes) == 2


def test_a_race_run_on_a_busy_machine_decides_this_run_but_is_not_kept(monkeypatch, home):
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: False)
    calls = []

    def fake_timing(models, x, **kwargs):  # torch's second block ran into a burst of load from another process
        calls.append(1)
        return {
            name: [[30.0, 31.0], [30.0, 32.0]] if name.startswith("onnxruntime") else [[10.0, 11.0], [95.0, 90.0]]
            for name in models
        }

    monkeypatch.setattr(engines, "sample_ms", fake_timing)
    first = engines.choose_engine(random_generator(), torch.device("cpu"), "auto")
    assert "busy" in first.reason
    engines.choose_engine(random_generator(), torch.device("cpu"), "auto")
    assert len(calls) == 2  # timed again, not read back


def test_cache_entries_from_before_the_work_size_are_left_alone(monkeypatch, home):
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: False)
    g = random_generator()
    old_key = engines._cache_key(g, "torch fp32", engines.DEFAULT_WORKLOAD.timing_shape()).rsplit("|", 1)[0]
    home.mkdir(parents=True, exist_ok=True)
    (home / engines.CACHE_FILE).write_text(json.dumps({old_key: {"torch fp32": 1.0, "onnxruntime fp32": 99.0}}))
    monkeypatch.setattr(
        engines, "sample_ms", lambda models, x, **kw: {n: [[5.0 if "onnx" in n else 9.0]] for n in models}
    )
    assert engines.choose_engine(g, torch.device("cpu"), "auto").name == "onnxruntime fp32"  # timed anew
    assert old_key in json.loads((home / engines.CACHE_FILE).read_text())


def test_translate_times_auto_on_the_first_image_as_it_will_run(cli, monkeypatch, home, tmp_path):
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: False)
    shapes = []

    def fake_timing(models, x, **kwargs):
        shapes.append(tuple(x.shape))
        return {name: [[10.0 if name.startswith("torch") else 20.0]] for name in models}

    monkeypatch.setattr(engines, "sample_ms", fake_timing)
    save_generator(random_generator(), tmp_path / "g.safetensors", direction="A2B")
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(folder / name)
    done = cli(
        "translate",
        str(folder),
        "--model",
        str(tmp_path / "g.safetensors"),
        "--max-side",
        "48",
        "-o",
        str(tmp_path / "out"),
    )
    assert done.code == 0, done.err
    assert shapes == [(2, 3, 32, 48)]  # fitted to --max-side, both images in one batch


def test_auto_runs_work_that_tiles_for_speed_on_torch_without_timing_the_engines(monkeypatch, home, tmp_path):
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(engines, "sample_ms", lambda *args, **kwargs: pytest.fail("the engines were timed"))
    monkeypatch.setattr("cgdistill.tiling.plan.TILE_FROM_PIXELS", 64 * 64)
    monkeypatch.setattr("cgdistill.tiling.plan.TILE_FROM_ELEMENTS", 1)
    path = save_generator(random_generator(), tmp_path / "g.safetensors", direction="A2B")
    runner = policy.runner_for_file(path, torch.device("cpu"), work=engines.Workload(64, 64, 1))
    assert runner.engine.name == "torch fp32" and "exact tiles" in runner.engine.reason


@pytest.mark.parametrize(
    ("work", "shape"),
    [
        (engines.Workload(240, 320, 4), (4, 240, 320)),
        (engines.Workload(250, 330, 1), (1, 256, 336)),  # sides rounded to the timing multiple
        (engines.Workload(480, 640, 4), (1, 480, 640)),  # a batch over the pixel cap is timed smaller
        (engines.Workload(768, 1024, 1), (1, 624, 832)),  # one image over it is scaled down, aspect kept
    ],
)
def test_the_timed_shape_is_the_works_own_within_the_pixel_cap(work, shape):
    batch, height, width = work.timing_shape()
    assert (batch, height, width) == shape and batch * height * width <= engines.TIMING_MAX_PIXELS


def test_onnxruntime_on_a_gpu_is_refused():
    with pytest.raises(CgdistillError, match="runs on the CPU"):
        engines.onnxruntime_engine(random_generator(), torch.device("cuda"))
