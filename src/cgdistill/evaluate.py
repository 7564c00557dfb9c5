"""``compare``: a teacher and a student on the same test images, on the same device, in one process.

This module loads the test set and puts the measurements together; the measurements themselves live
in ``cost`` (MACs, latency, throughput) and ``metrics`` (PSNR, SSIM, FID/KID), and which models to
compare is answered by ``runs.resolve_pair``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from cgdistill import runs
from cgdistill.cost import count_macs, count_macs_paper, measure_speed
from cgdistill.data.images import list_images, read_image
from cgdistill.device import describe
from cgdistill.engines import BF16_MIN_PSNR_DB, bf16_psnr, engine_latencies
from cgdistill.errors import CgdistillError
from cgdistill.fid_inception import missing_weights_note
from cgdistill.metrics import extract_features, fid_kid, psnr, psnr_per_image, ssim, to_unit
from cgdistill.nets import count_parameters
from cgdistill.plots import read_metrics
from cgdistill.runs import ResolvedModel
from cgdistill.translate import prepare_generator, translate_batch
from cgdistill.weights import load_generator

WORST_IMAGES = 5  # the report shows where the student falls short: this many lowest-PSNR test images

Log = Callable[[str], None]


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
