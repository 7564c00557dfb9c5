"""Measurements for ``compare``: size, compute, speed and output quality of a teacher and a student.

Both generators run on the same images, on the same device, in one process. Compute is reported in
two conventions: ``macs`` is exact convolution arithmetic as ``torch.utils.flop_counter`` counts it
(MACs = FLOPs / 2; a transposed conv costs in_pixels x C_in x C_out x k^2), and ``macs_paper`` counts
every conv, transposed ones included, on its output grid, as the compression papers' tables do
(49.55 G and 56.8 G for the 9-block teacher at 256x256).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cgdistill import runs
from cgdistill.checkpoint import load_generator
from cgdistill.data.images import list_images, read_image
from cgdistill.device import describe
from cgdistill.engines import BF16_MIN_PSNR_DB, bf16_psnr, engine_latencies
from cgdistill.errors import CgdistillError
from cgdistill.fid_inception import missing_weights_note
from cgdistill.nets import GeneratorConfig, ResnetGenerator, count_parameters
from cgdistill.plots import read_metrics
from cgdistill.runs import ResolvedModel
from cgdistill.translate import autocast_context, prepare_generator, translate_batch, use_channels_last

PSNR_CAP_DB = 100.0
WORST_IMAGES = 5  # the report shows where the student falls short: this many lowest-PSNR test images  # identical images would give +inf, which JSON cannot hold
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000

Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# Compute


def _meta_generator(config: GeneratorConfig) -> ResnetGenerator:
    with torch.device("meta"):
        return ResnetGenerator(config)


def count_macs(config: GeneratorConfig, image_size: int) -> int:
    """Multiply-accumulates of one forward pass at ``image_size`` square, by conv arithmetic.

    Counted by ``torch.utils.flop_counter`` on the meta device (shapes only, no arithmetic runs).
    """
    model = _meta_generator(config)
    x = torch.empty(1, config.in_channels, image_size, image_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def count_macs_paper(config: GeneratorConfig, image_size: int) -> int:
    """MACs with every conv counted on its output grid: out_pixels x C_out x C_in/groups x k^2.

    For a plain conv this is the exact count; a stride-2 transposed conv is charged four times its
    real cost. This is the convention of the published tables (56.8 G for the CycleGAN teacher).
    """
    model = _meta_generator(config)
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = math.prod(module.kernel_size)
        in_per_group = module.in_channels // module.groups
        total += output.numel() * in_per_group * kernel

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    try:
        model(torch.empty(1, config.in_channels, image_size, image_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return total


# ---------------------------------------------------------------------------------------------
# Speed


@dataclass
class Speed:
    latency_ms: float  # median batch-1 forward time
    throughput_ips: float  # images per second at ``batch``
    batch: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def default_throughput_batch(device: torch.device) -> int:
    return 16 if device.type == "cuda" else 4


def measure_speed(
    models: dict[str, nn.Module],
    image_size: int,
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 7,
    throughput_batch: int | None = None,
    throughput_repeats: int = 3,
) -> dict[str, Speed]:
    """Latency and throughput of each model, measured in alternating turns.

    Alternating (teacher, student, teacher, ...) rather than one model after the other means a
    burst of load from another process slows both alike, so their ratio stays honest on a shared
    machine. Models must already be prepared for ``device`` (see ``translate.prepare_generator``).
    """
    batch = throughput_batch or default_throughput_batch(device)
    fmt = torch.channels_last if use_channels_last(device) else torch.contiguous_format

    def make(n: int) -> torch.Tensor:
        return torch.rand(n, 3, image_size, image_size, device=device).mul_(2).sub_(1).contiguous(memory_format=fmt)

    def timed(model: nn.Module, x: torch.Tensor) -> float:
        _sync(device)
        start = time.perf_counter()
        model(x)
        _sync(device)
        return time.perf_counter() - start

    single, many = make(1), make(batch)
    latency: dict[str, list[float]] = {name: [] for name in models}
    per_batch: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode(), autocast_context(device):
        for _ in range(warmup):
            for model in models.values():
                model(single)
        for _ in range(repeats):
            for name, model in models.items():
                latency[name].append(timed(model, single))
        for model in models.values():
            model(many)
        for _ in range(throughput_repeats):
            for name, model in models.items():
                per_batch[name].append(timed(model, many))
    return {
        name: Speed(
            latency_ms=statistics.median(latency[name]) * 1000.0,
            throughput_ips=batch / statistics.median(per_batch[name]),
            batch=batch,
        )
        for name in models
    }


# ---------------------------------------------------------------------------------------------
# Image quality


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each image pair of two float batches in [0, 1], capped at ``PSNR_CAP_DB``."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP_DB / 10)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the PSNR (dB) between two float batches in [0, 1]."""
    return float(psnr_per_image(a, b).mean())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5) of two float batches in [0, 1]; torchmetrics when installed."""
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError:
        return _ssim_reference(a, b)
    return float(structural_similarity_index_measure(a.float(), b.float(), data_range=1.0))


def _ssim_reference(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. (2004) SSIM, used only when torchmetrics is not installed."""
    a, b = a.double(), b.double()
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(a.shape[1], 1, window, window).contiguous()
    pad = window // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel, groups=x.shape[1])

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s[..., pad:-pad, pad:-pad].mean())


class _Precomputed(nn.Module):
    """Passes features through, so torchmetrics' FID and KID share one pass of the feature network."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def extract_features(
    network: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 16
) -> torch.Tensor:
    """Features of uint8 NHWC ``images`` (fed to ``network`` as float NCHW in [0, 1]), on the CPU."""
    network = network.eval().to(device)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(device).permute(0, 3, 1, 2).float().div_(255.0)
            out.append(network(chunk).float().cpu())
    return torch.cat(out)


def fid_kid(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> tuple[float | None, float | None, list[str]]:
    """FID and KID (mean over subsets) between two feature sets, by torchmetrics; notes say why one is missing."""
    notes: list[str] = []
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        return None, None, ["FID/KID need torchmetrics: pip install 'cgdistill[metrics]'."]
    n = min(len(real), len(fake))
    if n < 2:
        return None, None, ["FID/KID need at least 2 test images in each set."]
    passthrough = _Precomputed(real.shape[1])
    fid_metric = FrechetInceptionDistance(feature=passthrough, normalize=True)
    fid_metric.update(real.double(), real=True)
    fid_metric.update(fake.double(), real=False)
    fid = float(fid_metric.compute())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")  # small sets here
        kid_metric = KernelInceptionDistance(
            feature=passthrough, subsets=KID_SUBSETS, subset_size=min(KID_SUBSET_SIZE, n)
        )
    kid_metric.update(real.double(), real=True)
    kid_metric.update(fake.double(), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # KID draws random subsets: same images, same number
        kid = float(kid_metric.compute()[0])
    if n < 50:
        notes.append(f"FID/KID from only {n} images are noisy; compare them only between models on the same images.")
    return fid, kid, notes


# ---------------------------------------------------------------------------------------------
# The test set


@dataclass
class TestSet:
    """Test images of the source domain (and their ground truth), and real target-domain images."""

    names: list[str]
    inputs: torch.Tensor  # N x S x S x 3 uint8
    ground_truth: torch.Tensor | None  # N x S x S x 3 uint8, or None when the dataset has none
    real_target: torch.Tensor  # M x S x S x 3 uint8 (for FID/KID)


def _load_square(path: Path, size: int) -> np.ndarray:
    image = read_image(path)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def _stack(arrays: Sequence[np.ndarray], size: int) -> torch.Tensor:
    if not arrays:
        return torch.empty(0, size, size, 3, dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays))


def source_test_files(data_dir: Path, direction: str, limit: int | None = None) -> list[Path]:
    """The source domain's test images (testA for A2B, testB for B2A), in sorted order."""
    source = direction[0]
    source_dir = data_dir / f"test{source}"
    if not source_dir.is_dir():
        raise CgdistillError(f"Dataset {data_dir} has no test{source}/ folder of test images for {direction}.")
    files = list_images(source_dir)[:limit]
    if not files:
        raise CgdistillError(f"{source_dir} holds no images to compare on.")
    return files


def native_size(files: Sequence[Path]) -> int:
    """The evaluation size a test set implies: its first image's shorter side, down to a multiple of 4."""
    width, height = read_image(files[0]).size
    return max(8, min(width, height) // 4 * 4)


def load_images(files: Sequence[Path], image_size: int) -> torch.Tensor:
    """uint8 NHWC, each image resized to ``image_size`` square: the one preprocessing of every fidelity figure."""
    return _stack([_load_square(f, image_size) for f in files], image_size)


def load_test_set(data_dir: Path, direction: str, image_size: int, limit: int | None = None) -> TestSet:
    """testA (A2B) or testB (B2A) resized to ``image_size`` square, as the CycleGAN test script does."""
    target_dir = data_dir / f"test{direction[-1]}"
    files = source_test_files(data_dir, direction, limit)
    source = direction[0]
    gt_dir = data_dir / f"test{source}_gt"
    gt_files = [gt_dir / f.name for f in files] if gt_dir.is_dir() else []
    has_gt = bool(gt_files) and all(p.is_file() for p in gt_files)
    targets = list_images(target_dir) if target_dir.is_dir() else []
    if limit is not None:
        targets = targets[:limit]
    return TestSet(
        names=[f.name for f in files],
        inputs=load_images(files, image_size),
        ground_truth=_stack([_load_square(f, image_size) for f in gt_files], image_size) if has_gt else None,
        real_target=_stack([_load_square(f, image_size) for f in targets], image_size),
    )


def run_model(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 8) -> torch.Tensor:
    """Translate uint8 NHWC ``images`` with a prepared model, in batches; uint8 NHWC on the CPU."""
    return torch.cat(
        [translate_batch(model, images[i : i + batch_size], device) for i in range(0, len(images), batch_size)]
    )


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div(255.0)


# ---------------------------------------------------------------------------------------------
# The comparison


@dataclass
class ModelReport:
    """One model's line of the table (and of the JSON)."""

    params: int
    macs: int
    macs_paper: int
    latency_ms: float
    throughput_ips: float
    psnr_gt: float | None = None
    fid: float | None = None
    kid: float | None = None


@dataclass
class Comparison:
    teacher: ModelReport
    student: ModelReport
    speedup: float
    fidelity_psnr: float
    fidelity_ssim: float
    baseline_psnr_gt: float | None
    image_size: int
    images: int
    device: str
    direction: str
    teacher_label: str
    student_label: str
    throughput_batch: int
    inception: str | None  # where the FID weights came from, or None when FID/KID were skipped
    notes: list[str] = field(default_factory=list)
    worst: list[tuple[str, float]] = field(default_factory=list)  # (image, PSNR to teacher), lowest first
    engine_latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # engine -> model -> ms

    def to_json(self) -> dict:
        """The machine-readable result; the keys of issue 6, plus direction, models and notes."""
        return {
            "teacher": asdict(self.teacher),
            "student": asdict(self.student),
            "speedup": self.speedup,
            "fidelity": {"psnr": self.fidelity_psnr, "ssim": self.fidelity_ssim},
            "baseline_psnr_gt": self.baseline_psnr_gt,
            "image_size": self.image_size,
            "images": self.images,
            "device": self.device,
            "direction": self.direction,
            "models": {"teacher": self.teacher_label, "student": self.student_label},
            "notes": list(self.notes),
            "worst_images": [{"name": name, "psnr": value} for name, value in self.worst],
            "latency_by_engine": self.engine_latency_ms,
        }


@dataclass
class CompareOutputs:
    """The comparison and the images behind it (for the report's grid)."""

    result: Comparison
    test_set: TestSet
    teacher_images: torch.Tensor
    student_images: torch.Tensor
    student_curve: list[dict] = field(default_factory=list)  # the student run's metrics records, when known


def resolve_pair(
    teacher_spec: str | None, student_spec: str | None, direction: str | None
) -> tuple[ResolvedModel, ResolvedModel, str]:
    """The student (newest for the direction by default) and its teacher (the one it was distilled from)."""
    student = runs.resolve_generator(student_spec, direction, role="student")
    direction = direction or student.info.direction
    if teacher_spec is None and student.info.teacher:
        try:
            teacher = runs.resolve_generator(student.info.teacher, direction, role="teacher")
        except CgdistillError:
            teacher = runs.resolve_generator(None, direction, role="teacher")
    else:
        teacher = runs.resolve_generator(teacher_spec, direction, role="teacher")
    direction = direction or teacher.info.direction
    if direction is None:
        raise CgdistillError("Neither model records which way it translates; pass --direction A2B or B2A.")
    if teacher.path.resolve() == student.path.resolve():
        raise CgdistillError(
            f"Teacher and student are the same model ({student.path}); pass another --student or --teacher."
        )
    return teacher, student, direction


def compare(
    teacher: nn.Module,
    student: nn.Module,
    test_set: TestSet,
    *,
    direction: str,
    device: torch.device,
    image_size: int,
    feature_network: nn.Module | None = None,
    inception_origin: str | None = None,
    teacher_label: str = "teacher",
    student_label: str = "student",
    repeats: int = 7,
    throughput_batch: int | None = None,
    engines: bool = True,
    log: Log | None = None,
) -> CompareOutputs:
    """Measure both generators on ``test_set``; FID/KID only when a ``feature_network`` is given.

    With ``engines``, also the batch-1 latency of each available engine (torch fp32/bf16, onnxruntime).
    """
    say = log or (lambda _message: None)
    notes: list[str] = []
    t_model, s_model = prepare_generator(teacher, device), prepare_generator(student, device)

    say(f"Translating {len(test_set.names)} test images with both models")
    t_out = run_model(t_model, test_set.inputs, device)
    s_out = run_model(s_model, test_set.inputs, device)
    t_unit, s_unit = to_unit(t_out), to_unit(s_out)

    psnr_gt: dict[str, float | None] = {"teacher": None, "student": None}
    baseline = None
    if test_set.ground_truth is not None:
        gt = to_unit(test_set.ground_truth)
        psnr_gt = {"teacher": psnr(t_unit, gt), "student": psnr(s_unit, gt)}
        baseline = psnr(to_unit(test_set.inputs), gt)

    scores: dict[str, tuple[float | None, float | None]] = {"teacher": (None, None), "student": (None, None)}
    if feature_network is None:
        notes.append(missing_weights_note())
    elif len(test_set.real_target) < 2:
        notes.append(f"FID/KID skipped: the dataset has fewer than 2 real test{direction[-1]} images.")
    else:
        say("Computing FID/KID features")
        real = extract_features(feature_network, test_set.real_target, device)
        fid_notes: list[str] = []
        for name, images in (("teacher", t_out), ("student", s_out)):
            fid, kid, fid_notes = fid_kid(real, extract_features(feature_network, images, device))
            scores[name] = (fid, kid)
        notes.extend(fid_notes)

    say(f"Timing both models at {image_size}x{image_size} on {device}")
    speed = measure_speed(
        {"teacher": t_model, "student": s_model},
        image_size,
        device,
        repeats=repeats,
        throughput_batch=throughput_batch,
    )

    engine_ms: dict[str, dict[str, float]] = {}
    if engines:
        say(f"Timing both models with each available engine at {image_size}x{image_size}")
        engine_ms = engine_latencies({"teacher": teacher, "student": student}, image_size, device)
        if "torch bf16" in engine_ms:
            t_db, s_db = bf16_psnr(t_model), bf16_psnr(s_model)
            notes.append(
                f"bf16 autocast output vs fp32 on a probe image: teacher {t_db:.1f} dB, student {s_db:.1f} dB PSNR "
                f"(translate uses bf16 on this CPU only at {BF16_MIN_PSNR_DB:.0f} dB or more)."
            )

    def report(name: str, model: nn.Module) -> ModelReport:
        config = model.config
        return ModelReport(
            params=count_parameters(model),
            macs=count_macs(config, image_size),
            macs_paper=count_macs_paper(config, image_size),
            latency_ms=speed[name].latency_ms,
            throughput_ips=speed[name].throughput_ips,
            psnr_gt=psnr_gt[name],
            fid=scores[name][0],
            kid=scores[name][1],
        )

    per_image = psnr_per_image(s_unit, t_unit).tolist()
    order = sorted(range(len(per_image)), key=per_image.__getitem__)[:WORST_IMAGES]
    result = Comparison(
        teacher=report("teacher", teacher),
        student=report("student", student),
        speedup=speed["teacher"].latency_ms / speed["student"].latency_ms,
        fidelity_psnr=psnr(s_unit, t_unit),
        fidelity_ssim=ssim(s_unit, t_unit),
        baseline_psnr_gt=baseline,
        image_size=image_size,
        images=len(test_set.names),
        device=describe(device),
        direction=direction,
        teacher_label=teacher_label,
        student_label=student_label,
        throughput_batch=speed["teacher"].batch,
        inception=inception_origin,
        notes=notes,
        worst=[(test_set.names[i], per_image[i]) for i in order],
        engine_latency_ms=engine_ms,
    )
    return CompareOutputs(result, test_set, t_out, s_out)


def check_compare_options(image_size: int | None, limit: int | None) -> None:
    """Refuse sizes and limits that cannot be measured (None: the default), before any work."""
    if image_size is not None and image_size < 8:
        raise CgdistillError(f"--image-size must be at least 8, got {image_size}.")
    if limit is not None and limit < 1:
        raise CgdistillError(f"--limit must be at least 1, got {limit}.")


def compare_models(
    teacher: ResolvedModel,
    student: ResolvedModel,
    data_dir: Path,
    *,
    direction: str,
    device: torch.device,
    image_size: int | None = None,
    limit: int | None = None,
    feature_network: nn.Module | None = None,
    inception_origin: str | None = None,
    log: Log | None = None,
) -> CompareOutputs:
    """Load both model files and the test set, then :func:`compare`."""
    check_compare_options(image_size, limit)
    # By default the test images' own size: the distiller's psnr_to_teacher is measured the same way.
    size = image_size if image_size is not None else native_size(source_test_files(data_dir, direction, limit))
    teacher_net, _ = load_generator(teacher.path)
    student_net, _ = load_generator(student.path)
    test_set = load_test_set(data_dir, direction, size, limit)
    outputs = compare(
        teacher_net,
        student_net,
        test_set,
        direction=direction,
        device=device,
        image_size=size,
        feature_network=feature_network,
        inception_origin=inception_origin,
        teacher_label=teacher.label,
        student_label=student.label,
        log=log,
    )
    metrics = Path(student.path).parent / runs.METRICS_FILE
    if metrics.is_file():  # a student from a run folder: the report shows how its fidelity grew
        outputs.student_curve = read_metrics(metrics)
    return outputs
