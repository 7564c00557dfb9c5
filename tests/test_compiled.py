"""A generator compiled for one shape: what a long video runs on a CPU when it is the faster."""

from __future__ import annotations

import shutil

import pytest
import torch

from cgdistill import compiled, engines
from cgdistill.compiled import compile_for, compiling_pays, worth_trying
from cgdistill.engines import Workload, choose_engine
from cgdistill.forward import prepare_generator
from cgdistill.nets import ResnetGenerator, init_weights
from test_video import make_clip

CPU = torch.device("cpu")
# fp32 on both sides; inductor fuses the norm's reductions and sums them in another order than
# torch's kernel: ~1e-6 relative per normalised layer through ~12 layers on outputs in [-1, 1].
# 1e-4 is 0.013 grey levels, while a wrong layer or layout moves outputs by 1e-2 or more.
FP32_ATOL = 1e-4


needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile's CPU backend needs a C++ compiler (apt-get install g++); .ci/run installs one",
)


def _tiny(**overrides) -> torch.nn.Module:
    generator = ResnetGenerator(blocks=1, ngf=4, **overrides)
    init_weights(generator, generator=torch.Generator().manual_seed(0))
    return prepare_generator(generator, CPU)


@needs_compiler
@pytest.mark.parametrize("ends", ["full", "half"])
def test_the_compiled_model_gives_the_eager_output_on_its_shape_and_runs_other_shapes_eager(ends):
    model = _tiny(ends=ends)
    x = torch.rand(2, 3, 32, 40) * 2 - 1
    attempt = compile_for(model, x)
    assert attempt.model is not None, attempt.failure
    with torch.inference_mode():
        expected, got = model(x), attempt.model(x)
        other = torch.rand(1, 3, 16, 24) * 2 - 1
        assert torch.equal(attempt.model(other), model(other))  # another shape: the eager model itself
    assert got.shape == expected.shape and expected.std() > 0.05
    assert (got - expected).abs().max() <= FP32_ATOL
    assert attempt.model.shuffle_after == (ends == "half")  # the closing shuffle runs outside the graph


def test_a_compiler_that_fails_leaves_the_eager_model_and_says_why(monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    attempt = compile_for(_tiny(), torch.rand(1, 3, 16, 16))
    assert attempt.model is None and attempt.failure == "torch.compile failed: no C++ compiler found"


def test_compiling_is_tried_only_for_long_work():
    assert not worth_trying(eager_ms=100.0, passes=compiled.MIN_PASSES - 1)  # a few passes never pay
    assert not worth_trying(eager_ms=1.0, passes=1000)  # 1 s of work
    assert worth_trying(eager_ms=100.0, passes=1200)  # two minutes of work
    assert not worth_trying(eager_ms=100.0, passes=100)  # ten seconds


def test_auto_on_a_short_clip_never_compiles(monkeypatch):
    def refuse(*_args):
        raise AssertionError("compiled for short work")

    monkeypatch.setattr(engines, "compile_for", refuse)
    engine = choose_engine(_tiny(), CPU, "torch", Workload(32, 32, 4, passes=compiled.MIN_PASSES - 1))
    assert "compiled" not in engine.name


@needs_compiler
def test_long_work_races_the_compiled_model_on_its_own_shape(monkeypatch):
    monkeypatch.setattr(compiled, "COMPILE_FROM_SECONDS", 0.0)
    shapes = []

    monkeypatch.setattr(engines, "compile_for", lambda model, x: compiled.CompileAttempt(None, 1.0, "broken here"))
    engine = choose_engine(_tiny(), CPU, "torch", Workload(30, 42, 2, passes=100))
    assert "100 passes of one shape: broken here" in engine.reason and "compiled" not in engine.name
    monkeypatch.setattr(engines, "compile_for", lambda model, x: shapes.append(tuple(x.shape)) or compile_for(model, x))
    # Which of two 1-ms models a race crowns is noise: the clock here says the compiled one is faster.
    monkeypatch.setattr(engines, "sample_ms", _clock_favouring_compiled)
    generator = _tiny()
    engine = choose_engine(generator, CPU, "torch", Workload(30, 42, 2, passes=100))
    assert shapes == [(2, 3, 32, 44)]  # the work's batch, padded to the generator's multiple as translate pads it
    assert "compiled for 44x32 in batches of 2" in engine.reason and engine.name.endswith(" compiled")
    assert engine.tiled is engine.model.eager  # images that tile run on the eager model the compiled one wraps


def _clock_favouring_compiled(runners, x, **_):
    """``cost.sample_ms`` on a clock where the compiled runner takes 10 ms a pass and the others 20, two rounds."""
    return {name: [[10.0 if name.endswith("compiled") else 20.0]] * 2 for name in runners}


def test_compiling_pays_counts_the_compile_against_the_passes():
    ms = {"torch bf16": 100.0, "torch bf16 compiled": 40.0, "onnxruntime fp32": 90.0}
    # 10 s of compiling saves 50 ms a pass against onnxruntime, the faster of the others: 200 passes pay.
    assert compiling_pays(ms, "torch bf16 compiled", 10.0, passes=201) == "torch bf16 compiled"
    assert compiling_pays(ms, "torch bf16 compiled", 10.0, passes=199) == "onnxruntime fp32"
    assert compiling_pays({"torch bf16": 100.0}, "torch bf16 compiled", 1.0, passes=10_000) == "torch bf16"


@needs_compiler
def test_a_clear_race_is_remembered_and_decides_later_work_of_that_shape_without_racing(monkeypatch):
    monkeypatch.setattr(compiled, "COMPILE_FROM_SECONDS", 0.0)
    monkeypatch.setattr(engines, "sample_ms", _clock_favouring_compiled)
    compiles = []
    real_compile = compile_for

    def timed_compile(model, x):
        compiles.append(tuple(x.shape))
        attempt = real_compile(model, x)
        return compiled.CompileAttempt(attempt.model, 1.0, attempt.failure)  # the clock here: 1 s a compile

    monkeypatch.setattr(engines, "compile_for", timed_compile)
    generator = _tiny()
    first = choose_engine(generator, CPU, "torch", Workload(30, 42, 2, passes=400))
    assert first.name.endswith(" compiled") and compiles == [(2, 3, 32, 44)]

    def no_race(*_args, **_kwargs):
        raise AssertionError("raced again")

    monkeypatch.setattr(engines, "median_ms", no_race)
    monkeypatch.setattr(engines, "sample_ms", no_race)
    # 150 passes save 1.5 s at 10 ms a pass: the 1-s compile pays; 50 passes save 0.5 s: it does not.
    again = choose_engine(generator, CPU, "torch", Workload(30, 42, 2, passes=150))
    assert again.name.endswith(" compiled") and "as raced before on this machine at 44x32" in again.reason
    assert len(compiles) == 2
    short = choose_engine(generator, CPU, "torch", Workload(30, 42, 2, passes=50))
    assert "compiled" not in short.name
    assert len(compiles) == 2 and "as raced before" in short.reason
    # another shape is raced afresh, and so is a kept race that was edited into something else
    with pytest.raises(AssertionError, match="raced again"):
        choose_engine(generator, CPU, "torch", Workload(30, 42, 4, passes=400))
    cache = engines._read_cache()
    for key in cache:
        if "long work" in key:
            cache[key] = {"ms": {"torch": "fast"}, "compile_seconds": 1.0}
    engines._write_cache(cache)
    with pytest.raises(AssertionError, match="raced again"):
        choose_engine(generator, CPU, "torch", Workload(30, 42, 2, passes=150))


class _Runner(torch.nn.Module):
    """A runner of a race on a clock of its own: each call is logged and moves ``clock`` on by ``ms``."""

    def __init__(self, name: str, ms: float, clock: list[float], calls: list[str]) -> None:
        super().__init__()
        self.name, self.ms, self.clock, self.calls = name, ms, clock, calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(self.name)
        self.clock[0] += self.ms / 1000.0
        return x


@pytest.mark.parametrize("eager_ms", [engines.SLOW_PASS_MS - 1, engines.SLOW_PASS_MS])
def test_a_race_of_slow_passes_warms_each_runner_once_and_reuses_the_probe(monkeypatch, eager_ms):
    from functools import partial

    from cgdistill import cost

    clock, calls = [0.0], []
    monkeypatch.setattr(compiled, "COMPILE_FROM_SECONDS", 0.0)
    monkeypatch.setattr(engines, "sample_ms", partial(cost.sample_ms, clock=lambda: clock[0]))
    eager = _Runner("eager", eager_ms, clock, calls)
    monkeypatch.setattr(engines, "torch_engine", lambda generator, device: engines.Engine("torch bf16", eager, ""))
    compiled_runner = _Runner("compiled", eager_ms / 2, clock, calls)
    monkeypatch.setattr(engines, "compile_for", lambda model, x: compiled.CompileAttempt(compiled_runner, 1.0))
    monkeypatch.setattr(engines, "onnx_available", lambda: True)
    ort = _Runner("ort", eager_ms * 1.2, clock, calls)
    monkeypatch.setattr(engines.OnnxRuntimeGenerator, "from_generator", lambda generator: ort)
    engine = choose_engine(_tiny(), CPU, "auto", Workload(30, 42, 2, passes=400))
    assert engine.model is compiled_runner
    probe = ["eager", "eager"]  # a warm-up call and a timed one, which tells the work is long enough
    if eager_ms < engines.SLOW_PASS_MS:  # two rounds of a warm-up and two timed calls a runner, unchanged
        block = engines.TIMING_REPEATS // 2 + 1
        first = ["eager"] * block + ["compiled"] * block + ["ort"] * block
        assert calls == probe + first + first[::-1]
    else:  # the probe is eager's first round; the compiled model is warm from its compile; one warm-up for ort
        assert calls == probe + ["compiled", "ort", "ort"] + ["ort", "compiled", "eager"]
    kept = [entry for key, entry in engines._read_cache().items() if "long work" in key]
    assert kept and kept[0]["ms"] == pytest.approx(
        {
            "torch bf16": eager_ms,
            "torch bf16 compiled": eager_ms / 2,
            "onnxruntime fp32": eager_ms * 1.2,
        }
    )  # read off the clock: seconds subtracted, to float rounding


def test_a_race_that_a_busy_machine_turned_around_is_not_remembered(monkeypatch):
    monkeypatch.setattr(compiled, "COMPILE_FROM_SECONDS", 0.0)
    fake_model = torch.nn.Identity()
    monkeypatch.setattr(engines, "compile_for", lambda model, x: compiled.CompileAttempt(fake_model, 1.0))

    # The compiled runner wins the first round and loses the second: no verdict to keep.
    def turned(runners, x, **_):
        return {name: [[10.0], [30.0]] if name.endswith("compiled") else [[20.0], [20.0]] for name in runners}

    monkeypatch.setattr(engines, "sample_ms", turned)
    choose_engine(_tiny(), CPU, "torch", Workload(30, 42, 2, passes=400))
    assert not any("long work" in key for key in engines._read_cache())


def test_the_header_frame_count_decides_the_passes(tmp_path):
    from cgdistill.videoio import frame_size_and_count

    assert frame_size_and_count(make_clip(tmp_path / "clip.mp4", frames=9), 0) == ((64, 48), 9)


def test_translate_counts_the_passes_of_the_videos_of_the_first_ones_frame_size(tmp_path):
    from cgdistill.translate import TranslateRequest, _workload
    from cgdistill.worklist import find_videos, plan_work

    make_clip(tmp_path / "a.mp4", frames=9)
    make_clip(tmp_path / "b.mp4", frames=6)
    make_clip(tmp_path / "c.mp4", frames=20, size=(32, 24))  # another size: compiled for a's shape, not counted
    inputs = [tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"]
    work = plan_work(inputs, find_videos(inputs), tmp_path / "out", "A2B")
    request = TranslateRequest(inputs, batch_size=4, max_side=0)
    assert _workload(work, request) == Workload(48, 64, 4, passes=4)  # 15 frames of 64x48 in batches of 4
