"""Inference engines for a generator: PyTorch (fp32, bf16 autocast on CPUs with native bf16, bf16/fp16
autocast on CUDA) and onnxruntime.

Every engine is an ``nn.Module`` taking and returning float32 NCHW in [-1, 1], so ``translate`` and
``compare`` run them through the same code as a plain generator. An engine's model carries its own
precision (an :class:`Autocast` wrapper, or none for fp32): ``translate``, ``cost`` and ``compare`` run
it as it is, so what an engine is called is what it runs.

Rules (docs/usage-translate-compare.md):

- **CUDA**: the torch engine runs under autocast at the GPU's native half precision
  (``device.native_amp_dtype``: bf16 from Ampere on, fp16 before).
- **Instance norm under autocast**, on images of ``FLOAT64_NORM_PIXELS`` (1 MP) or more and in
  every tile, takes its statistics from float64 sums (``nets.norm``), so that the exact tiles of a
  large image give the one-pass result.
- **bf16 on the CPU**: on a CPU with native bf16 (AVX512-BF16 or AMX) the torch engine runs under
  bf16 autocast only when, on a fixed probe image, its output stays within ``BF16_MIN_PSNR_DB`` of
  the fp32 output; elsewhere bf16 is emulated and slow, so it stays fp32.
- **auto**: on a GPU, torch. On the CPU, torch (as above) against onnxruntime fp32 when the
  ``onnx`` extra is installed, both timed on the work in hand (:class:`Workload`: the first video's
  frame size or the first image's, at translate's batch; 256x256, batch 1 when it is not known), each
  in blocks of its own (``cost.median_ms``), and the lower median wins: which engine is faster
  changes with the image size (torch bf16 gains on larger images). The verdict is kept in
  ``<home>/engine-choices.json``, measured once per architecture, timed shape, machine and library
  versions.
- **Long work of one shape** (a video's frames, ``Workload.passes``) on a CPU: with ``auto`` or
  ``torch``, the torch model compiled for that shape (``compiled``) is raced on that shape against
  the eager one and, for ``auto``, onnxruntime, when the eager model would take a minute or more.
  A race with a clear winner is kept with the compile's time: later work of that shape, shorter clips
  too, runs whatever finishes it the soonest, the compile counted, without racing again.
- **Large images**: onnxruntime runs a graph in one pass, so images over the memory budget run
  tiled on the torch engine when ``auto`` picked onnxruntime (``Engine.tiled``); with
  ``--engine onnxruntime`` or an ONNX file they run in one pass, and translate says so.
- **An ONNX file** (``translate --model FILE.onnx``, written by ``cgdistill export``): it holds no
  PyTorch module, so onnxruntime on the CPU is the only engine; ``auto`` picks it, ``--device auto``
  means the CPU, and ``--engine torch`` or another device is refused.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cgdistill import paths
from cgdistill.compiled import MIN_PASSES, compile_for, compiling_pays, worth_trying
from cgdistill.cost import median_ms, medians_ms, sample_ms
from cgdistill.device import native_amp_dtype
from cgdistill.errors import CgdistillError
from cgdistill.export import make_session, to_onnx_bytes
from cgdistill.forward import generator_multiple, padded_size, prepare_generator
from cgdistill.fsutil import atomic_write_text
from cgdistill.metrics import psnr
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.nets.norm import float64_statistics
from cgdistill.onnxfile import INPUT_NAME, OUTPUT_NAME, is_onnx_file, load_onnx, onnx_available, require_onnx
from cgdistill.options import ENGINES
from cgdistill.processes import process_device
from cgdistill.weights import load_generator

BF16_MIN_PSNR_DB = 40.0
PROBE_SIDE = 128  # the bf16 fidelity probe
TIMING_SIDE = 256  # where auto compares engines when the work's size is unknown: the published training and test size
# A timed call holds at most this many pixels: a larger batch is timed smaller, then a larger image
# scaled down (aspect kept), so that the choice costs seconds, not minutes, for the teacher; past
# about 0.5 MP every layer's activations are far larger than the caches, so the engines' ratio holds.
TIMING_MAX_PIXELS = 2**19
TIMING_MULTIPLE = 16  # timed sides are rounded to this: one cached verdict serves sizes this close
TIMING_REPEATS = 4  # timed calls per engine, in two rounds of blocks (cost.sample_ms)
# A video's race times passes of the whole batch: from a second a pass, one timed call a round is a second
# of averaging already, a warm-up before every block is needed only before a runner's first call, and
# each call saved is seconds for the slow models (the default student's 640x480 batch of 4: 4.5 s eager,
# 6 s on onnxruntime): ``_race_of_slow_passes``.
SLOW_PASS_MS = 1000.0
CACHE_FILE = "engine-choices.json"
# From this many pixels an image runs its instance norms on float64 statistics (``nets.norm``), so
# that the exact tiles of ``tiling`` reproduce its one pass (within 1 grey level) whether or not the
# memory budget of the day makes it tile. Smaller images keep torch's kernel: there the float64 sums
# cost 10-20% of a forward pass (teacher and students at 256 px, docs/benchmarks.md), and one pass
# of them needs under 1 GB even for the teacher, so only a budget that small tiles them.
FLOAT64_NORM_PIXELS = 2**20


@dataclass(frozen=True)
class Workload:
    """The work ``auto`` chooses an engine for: images (or video frames) of ``height`` x ``width``, ``batch`` a pass."""

    height: int
    width: int
    batch: int = 1
    passes: int = 1  # forward passes of this shape the command will run (a video's frames / batch)

    def timing_shape(self) -> tuple[int, int, int]:
        """(batch, height, width) to time: the work's own, sides rounded to ``TIMING_MULTIPLE``, at most
        ``TIMING_MAX_PIXELS`` a call (the batch shrinks first, then both sides, aspect kept)."""

        step = TIMING_MULTIPLE
        height, width = (max(step, round(side / step) * step) for side in (self.height, self.width))
        batch = max(1, min(self.batch, TIMING_MAX_PIXELS // (height * width)))
        if height * width > TIMING_MAX_PIXELS:
            scale = (TIMING_MAX_PIXELS / (height * width)) ** 0.5
            height, width = (max(step, int(side * scale) // step * step) for side in (height, width))
        return batch, height, width


DEFAULT_WORKLOAD = Workload(TIMING_SIDE, TIMING_SIDE, 1)


class Autocast(nn.Module):
    """A generator run under autocast at ``dtype`` on ``device_type``, returning float32.

    The engine's precision travels with its model: whatever runs it (one pass, tiles, timing) runs
    it at this precision; ``tiling`` unwraps it and applies :meth:`context` to each piece.
    """

    def __init__(self, generator: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.generator = generator
        self.device_type = device_type
        self.dtype = dtype
        self.config = getattr(generator, "config", None)
        self.multiple = generator_multiple(generator)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype)

    @contextmanager
    def context(self, float64_norms: bool = True) -> Iterator[None]:
        """Autocast and, unless told otherwise, instance norms on float64 statistics (``nets.norm``), as tiles need."""
        with self.autocast(), float64_statistics() if float64_norms else nullcontext():
            yield

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.context(float64_norms=x.shape[-2] * x.shape[-1] >= FLOAT64_NORM_PIXELS):
            return self.generator(x).float()


class CpuBf16(Autocast):
    """A generator run under CPU bf16 autocast, returning float32: the ``torch bf16`` engine's model."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__(generator, "cpu", torch.bfloat16)


def at_inference_precision(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` at the precision the torch engine runs on ``device`` without a fidelity probe.

    On CUDA, under autocast at the GPU's native half precision; elsewhere as it is (fp32: the CPU's
    bf16 needs :func:`torch_engine`'s probe). A model that already carries its precision is returned
    as it is. Nothing is moved or frozen, so a network still in training (the distiller's periodic
    evaluation) can be run this way.
    """
    if device.type == "cuda" and not isinstance(model, Autocast):
        return Autocast(model, "cuda", native_amp_dtype(device))
    return model


def torch_model(generator: nn.Module, device: torch.device) -> nn.Module:
    """``generator`` prepared for ``device`` (``forward.prepare_generator``) at :func:`at_inference_precision`:
    the model ``compare`` measures and the ``torch`` engine runs on a GPU."""
    return at_inference_precision(prepare_generator(generator, device), device)


class OnnxRuntimeGenerator(nn.Module):
    """A generator's ONNX graph run by onnxruntime on the CPU (no parameters on the torch side)."""

    def __init__(self, model_bytes: bytes, config: GeneratorConfig, multiple: int, threads: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.multiple = multiple
        self.session = make_session(model_bytes, threads)

    @classmethod
    def from_generator(cls, generator: nn.Module, threads: int | None = None) -> OnnxRuntimeGenerator:
        """The generator exported in memory, as ``cgdistill export`` would write it."""
        return cls(to_onnx_bytes(generator), generator.config, generator_multiple(generator), threads)

    @classmethod
    def from_file(cls, path: Path | str, threads: int | None = None) -> OnnxRuntimeGenerator:
        """An ONNX file ``cgdistill export`` wrote; refused in one sentence when onnxruntime cannot load it."""
        model_bytes, info = load_onnx(path)
        config = GeneratorConfig(**info.config)
        with torch.device("meta"):  # the architecture's multiple, without allocating its weights
            multiple = ResnetGenerator(config).multiple
        try:
            return cls(model_bytes, config, multiple, threads)
        except Exception as exc:  # onnxruntime's errors share no base class; any of them is this file's fault
            raise CgdistillError(
                f"onnxruntime cannot load {path} ({str(exc).strip()[:200]}); export the model again with "
                "`cgdistill export RUN -o FILE.onnx`."
            ) from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0]).to(x.device)


def probe_image(side: int = PROBE_SIDE, seed: int = 0) -> torch.Tensor:
    """A fixed photo-like probe: smooth colour regions plus fine texture, in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(
        torch.rand(1, 3, 8, 8, generator=gen), size=(side, side), mode="bicubic", align_corners=False
    )
    fine = torch.rand(1, 3, side, side, generator=gen) * 0.2
    return (coarse * 0.8 + fine).clamp(0, 1) * 2 - 1


def bf16_psnr(generator: nn.Module, image: torch.Tensor | None = None) -> float:
    """PSNR (dB, on [0, 1]) of the generator's bf16-autocast output against its fp32 output."""
    x = probe_image() if image is None else image
    with torch.inference_mode():
        reference = generator(x).float()
        low = CpuBf16(generator)(x)
    return psnr((low + 1) / 2, (reference + 1) / 2)


@dataclass
class Engine:
    """A runnable model and how it was chosen (one line for the user)."""

    name: str
    model: nn.Module
    reason: str
    # The torch model that runs images too large for one pass when ``model`` cannot tile them
    # exactly (onnxruntime); ``auto`` keeps its torch candidate for that.
    tiled: nn.Module | None = None


def torch_engine(generator: nn.Module, device: torch.device) -> Engine:
    """PyTorch on ``device``: autocast on CUDA; on a CPU with native bf16, bf16 autocast when it keeps 40 dB to fp32."""
    model = torch_model(generator, device)
    if device.type == "cuda":
        return Engine("torch", model, "CUDA: bf16/fp16 autocast")
    if device.type != "cpu":
        return Engine("torch fp32", model, f"{device.type}: full precision")
    if native_amp_dtype(device) is None:
        return Engine("torch fp32", model, "this CPU has no native bf16")
    fidelity = bf16_psnr(model)
    if fidelity >= BF16_MIN_PSNR_DB:
        return Engine("torch bf16", CpuBf16(model), f"bf16 autocast keeps {fidelity:.1f} dB PSNR to fp32")
    return Engine("torch fp32", model, f"bf16 autocast would give only {fidelity:.1f} dB PSNR to fp32")


def onnxruntime_engine(generator: nn.Module, device: torch.device) -> Engine:
    if device.type != "cpu":
        raise CgdistillError(f"--engine onnxruntime runs on the CPU, not {device}; pass --device cpu.")
    return Engine("onnxruntime fp32", OnnxRuntimeGenerator.from_generator(generator.eval()), "CPU execution provider")


def _cache_key(generator: nn.Module, torch_name: str, shape: tuple[int, int, int]) -> str:
    """Architecture, engines, machine, versions and the timed shape: keys written before the shape was
    part of them (timed at 256x256 in alternating turns) are left in the file and never read."""
    ort_version = "none"
    if onnx_available():
        import onnxruntime

        ort_version = onnxruntime.__version__
    cpu = torch.backends.cpu.get_cpu_capability()
    batch, height, width = shape
    return (
        f"{json.dumps(generator.config.to_dict(), sort_keys=True)}|{torch_name}|{platform.processor() or platform.machine()}"
        f"|{cpu}|{torch.get_num_threads()} threads|torch {torch.__version__}|onnxruntime {ort_version}"
        f"|{width}x{height} batch {batch}"
    )


def _read_cache() -> dict:
    path = paths.home() / CACHE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict) -> None:
    path = paths.home() / CACHE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only home only costs a re-measurement next time


def _same_winner_each_round(samples: dict[str, list[list[float]]]) -> bool:
    """Whether one engine was the faster in every round of the race (``cost.sample_ms``'s blocks): a burst of
    load from another process that turned the order around decides this run only, it is not kept."""
    rounds = zip(*samples.values(), strict=True)
    winners = {min(range(len(blocks)), key=lambda i: statistics.median(blocks[i])) for blocks in rounds}
    return len(winners) == 1


def check_engine(engine: str) -> None:
    """Refuse an unknown ``--engine``, or onnxruntime without the extra, before any work is done."""
    if engine not in ENGINES:
        raise CgdistillError(f"--engine {engine!r} is not valid; use one of {', '.join(ENGINES)}.")
    if engine == "onnxruntime":
        require_onnx()


def choose_engine(
    generator: nn.Module,
    device: torch.device,
    engine: str = "auto",
    work: Workload | None = None,
    decided: str | None = None,
) -> Engine:
    """The engine ``--engine`` names; ``auto`` picks the faster available one on ``work`` (see the module docstring).

    ``decided``: the name of the engine another process's ``auto`` chose (torchrun), taken without timing
    again, so that every process of one command runs the same engine.
    """
    check_engine(engine)
    if engine == "onnxruntime":
        return onnxruntime_engine(generator, device)
    candidate = torch_engine(generator, device)
    if device.type != "cpu":
        return candidate
    if work is not None and work.passes >= MIN_PASSES and decided is None:
        raced = _race_for_long_work(candidate, generator, engine, work)
        if raced is not None:
            return raced
    if engine == "torch":
        return candidate
    if not onnx_available():
        return Engine(candidate.name, candidate.model, f"{candidate.reason}; onnxruntime is not installed")
    if decided is not None:
        if not decided.startswith("onnxruntime"):
            return Engine(candidate.name, candidate.model, f"auto: as the first process measured; {candidate.reason}")
        ort_model = onnxruntime_engine(generator, device).model
        return Engine(decided, ort_model, "auto: as the first process measured", candidate.model)
    shape = (work or DEFAULT_WORKLOAD).timing_shape()
    key = _cache_key(generator, candidate.name, shape)
    cache = _read_cache()
    ort_engine, kept = None, True
    if key in cache:
        ms = cache[key]
    else:
        ort_engine = onnxruntime_engine(generator, device)
        x = _probe_batch(*shape)
        samples = sample_ms(
            {candidate.name: candidate.model, ort_engine.name: ort_engine.model}, x, repeats=TIMING_REPEATS
        )
        ms = medians_ms(samples)
        kept = _same_winner_each_round(samples)
        if kept:
            cache[key] = ms
            _write_cache(cache)
    at, per_image = _race_terms(ms, *shape)
    busy = "" if kept else "; the machine was busy, so this run's verdict is not kept"
    reason = f"auto: faster at {at} on this machine ({per_image} an image{busy})"
    if min(ms, key=ms.get) == candidate.name:
        return Engine(candidate.name, candidate.model, f"{reason}; {candidate.reason}")
    ort_model = (ort_engine or onnxruntime_engine(generator, device)).model
    return Engine("onnxruntime fp32", ort_model, f"{reason}; torch for images that need tiles", candidate.model)


def _probe_batch(batch: int, height: int, width: int) -> torch.Tensor:
    """``batch`` copies of the probe image cut to ``height`` x ``width``: what an engine race times."""
    return probe_image(max(height, width))[..., :height, :width].expand(batch, -1, -1, -1).contiguous()


def _race_terms(ms: dict[str, float], batch: int, height: int, width: int) -> tuple[str, str]:
    """Where a race ran ("640x480 in batches of 4") and each runner's time an image, for its reason."""
    at = f"{width}x{height}" + (f" in batches of {batch}" if batch > 1 else "")
    return at, ", ".join(f"{name} {value / batch:.0f} ms" for name, value in ms.items())


def _race_for_long_work(candidate: Engine, generator: nn.Module, engine: str, work: Workload) -> Engine | None:
    """For long work of one shape on a CPU (a video): the torch engine compiled for that shape (``compiled``)
    against the eager one and, for ``auto``, onnxruntime, all timed on that shape; None when the work is
    too short for a compile to pay.

    A race whose winner held in every round is kept with the compile's time (``engine-choices.json``):
    later work of that shape runs the runner that finishes it soonest, without racing again, and a clip
    too short to race compiles where the remembered race says the compile pays for itself.
    """
    height, width = padded_size(work.height, work.width, generator_multiple(candidate.model))
    key = _cache_key(generator, f"{candidate.name}, long work, --engine {engine}", (work.batch, height, width))
    cache = _read_cache()
    if _is_kept_race(cache.get(key)):
        return _remembered_long_work(cache[key], candidate, generator, work, (height, width))
    x = _probe_batch(work.batch, height, width)  # exactly what each pass holds, padded as translate pads it
    probe = sample_ms({candidate.name: candidate.model}, x, repeats=1, rounds=1)  # a warm-up call, a timed one
    eager_ms = medians_ms(probe)[candidate.name]
    if not worth_trying(eager_ms, work.passes):
        return None
    attempt = compile_for(candidate.model, x)
    label = f"{candidate.name} compiled"
    runners: dict[str, nn.Module] = {candidate.name: candidate.model}
    if attempt.model is not None:
        runners[label] = attempt.model
    ort_model = None
    if engine == "auto" and onnx_available():
        ort_model = OnnxRuntimeGenerator.from_generator(generator.eval())
        runners["onnxruntime fp32"] = ort_model
    if eager_ms >= SLOW_PASS_MS:
        samples = _race_of_slow_passes(runners, x, probe, warm={label})
    else:
        samples = sample_ms(runners, x, repeats=TIMING_REPEATS)
    ms = medians_ms(samples)
    if attempt.model is not None and _same_winner_each_round(samples):
        cache[key] = {"ms": ms, "compile_seconds": round(attempt.seconds, 2)}
        _write_cache(cache)
    best = min(ms, key=ms.get)
    size, per_image = _race_terms(ms, work.batch, height, width)
    compile_note = (
        attempt.failure + "; " if attempt.model is None else f"compiled for {size} in {attempt.seconds:.0f} s; "
    )
    reason = f"{work.passes} passes of one shape: {compile_note}fastest at {size} ({per_image} an image)"
    return _long_work_engine(best, candidate, reason, attempt.model, ort_model)


def _race_of_slow_passes(
    runners: dict[str, nn.Module], x: torch.Tensor, probe: dict[str, list[list[float]]], warm: set[str]
) -> dict[str, list[list[float]]]:
    """Two rounds of one timed call per runner, the second in reverse order, for passes of a second or more.

    Beside such a pass, what the engine before leaves behind (its threads spinning a few milliseconds,
    caches full of its weights) costs nothing, so a runner warms up only before its first call: the
    eager model's probe is its first round, and the compiled model (``warm``) ran once as it compiled.
    For the default student's 640x480 clip that is 8 calls instead of 15 (docs/benchmarks.md).
    """
    samples = {name: list(blocks) for name, blocks in probe.items() if name in runners}
    for name, model in runners.items():
        if name not in samples:
            first = sample_ms({name: model}, x, repeats=1, rounds=1, warmup=0 if name in warm else 1)
            samples[name] = first[name]
    second = sample_ms({name: runners[name] for name in reversed(runners)}, x, repeats=1, rounds=1, warmup=0)
    return {name: samples[name] + second[name] for name in runners}


def _long_work_engine(
    pick: str, candidate: Engine, reason: str, compiled: nn.Module | None, ort_model: nn.Module | None
) -> Engine:
    """The engine for the runner ``pick`` of a long-work race; the eager torch model tiles for the others."""
    if pick == f"{candidate.name} compiled" and compiled is not None:
        return Engine(pick, compiled, f"{reason}; {candidate.reason}", candidate.model)
    if pick == "onnxruntime fp32" and ort_model is not None:
        return Engine(pick, ort_model, f"{reason}; torch for images that need tiles", candidate.model)
    return Engine(candidate.name, candidate.model, f"{reason}; {candidate.reason}")


def _is_kept_race(entry: object) -> bool:
    """Whether ``entry`` is a race ``_race_for_long_work`` kept (an edited or damaged one is raced afresh)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("ms"), dict) or not entry["ms"]:
        return False
    numbers = [*entry["ms"].values(), entry.get("compile_seconds")]
    return all(isinstance(value, int | float) and value >= 0 for value in numbers)


def _remembered_long_work(
    known: dict, candidate: Engine, generator: nn.Module, work: Workload, padded: tuple[int, int]
) -> Engine:
    """The runner a race kept for this shape (``_race_for_long_work``) finishes ``work`` the soonest, the
    compile counted: compiled again (inductor's disk cache makes it quicker), or not compiled at all."""
    ms, compile_seconds = known["ms"], known["compile_seconds"]
    label = f"{candidate.name} compiled"
    size, per_image = _race_terms(ms, work.batch, *padded)
    reason = (
        f"{work.passes} passes of one shape: as raced before on this machine at {size} ({per_image} an image; "
        f"compiling took {compile_seconds:.0f} s)"
    )
    pick = compiling_pays(ms, label, compile_seconds, work.passes)
    if pick == label:
        attempt = compile_for(candidate.model, _probe_batch(work.batch, *padded))
        if attempt.model is not None:
            return _long_work_engine(pick, candidate, reason, attempt.model, None)
        reason = f"{reason}; {attempt.failure}"
        pick = min((name for name in ms if name != label), key=ms.get)
    ort_model = None
    if pick == "onnxruntime fp32" and onnx_available():
        ort_model = OnnxRuntimeGenerator.from_generator(generator.eval())
    return _long_work_engine(pick, candidate, reason, None, ort_model)


def device_for_model(path: Path | str, spec: str | None) -> torch.device:
    """``--device`` for the model file ``path``: ``auto`` is the CPU for an ONNX file, where onnxruntime runs it;
    under torchrun, ``auto`` and ``cuda`` give each process its own GPU (``processes.process_device``)."""
    if is_onnx_file(path) and (spec or "auto").strip().lower() == "auto":
        return torch.device("cpu")
    return process_device(spec or "auto")


def check_model_engine(engine: str, path: Path | str, device: torch.device) -> None:
    """Refuse, before any work, an engine or device that cannot run the model file ``path``.

    An ONNX file holds no PyTorch module: only onnxruntime, on the CPU, runs it.
    """
    check_engine(engine)
    if not is_onnx_file(path):
        return
    if engine == "torch":
        raise CgdistillError(
            f"{path} is an ONNX file, which runs on onnxruntime, not torch; pass --engine onnxruntime (or auto), "
            "or the .safetensors model it was exported from."
        )
    if device.type != "cpu":
        raise CgdistillError(
            f"{path} is an ONNX file, which onnxruntime runs on the CPU, not {device}; pass --device cpu, or the "
            ".safetensors model it was exported from."
        )


def engine_for_file(
    path: Path | str,
    device: torch.device,
    engine: str = "auto",
    work: Workload | None = None,
    decided: str | None = None,
) -> Engine:
    """The engine that runs the model file ``path``: a ``.safetensors`` generator as :func:`choose_engine`
    picks for ``work`` (``decided``: another process's choice), an ONNX file ``cgdistill export`` wrote on
    onnxruntime (the only engine that can)."""
    check_model_engine(engine, path, device)
    if is_onnx_file(path):
        reason = "an ONNX file runs on onnxruntime" if engine == "auto" else "CPU execution provider"
        return Engine("onnxruntime fp32", OnnxRuntimeGenerator.from_file(path), reason)
    generator, _ = load_generator(path)
    return choose_engine(generator, device, engine, work, decided)


def available_engines(generator: nn.Module, device: torch.device) -> dict[str, nn.Module]:
    """Every engine that can run ``generator`` on ``device``, for timing side by side (``compare``)."""
    model = torch_model(generator, device)
    if device.type != "cpu":
        return {"torch": model}
    engines: dict[str, nn.Module] = {"torch fp32": model}
    if native_amp_dtype(device) is not None:
        engines["torch bf16"] = CpuBf16(model)
    if onnx_available():
        engines["onnxruntime fp32"] = OnnxRuntimeGenerator.from_generator(model)
    return engines


def engine_latencies(
    models: dict[str, nn.Module], image_size: int, device: torch.device, *, repeats: int = 5
) -> dict[str, dict[str, float]]:
    """``{engine: {model name: batch-1 latency ms}}`` for every available engine, all in one timing loop (``cost.median_ms``)."""
    runners: dict[str, nn.Module] = {}
    for role, generator in models.items():
        for engine, module in available_engines(generator, device).items():
            runners[f"{engine}\n{role}"] = module
    x = torch.rand(1, 3, image_size, image_size, device=device) * 2 - 1
    ms = median_ms(runners, x, repeats=repeats)
    table: dict[str, dict[str, float]] = {}
    for key, value in ms.items():
        engine, role = key.split("\n")
        table.setdefault(engine, {})[role] = value
    return table
