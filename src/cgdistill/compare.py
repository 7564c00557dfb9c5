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
from cgdistill.metrics import extract_features, fid_kid, fidelity, mean_psnr, shape_groups
from cgdistill.nets import count_parameters
from cgdistill.plots import read_metrics
from cgdistill.runs import ResolvedModel
from cgdistill.translate import (
    DEFAULT_MAX_SIDE,
    MIN_SIDE,
    prepare_generator,
    shrink_to_max_side,
    translate_batch,
)
from cgdistill.weights import load_generator

WORST_IMAGES = 5  # the report shows where the student falls short: this many lowest-PSNR test images

Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# The test set


Images = list[torch.Tensor]  # uint8 H x W x 3 images, each at its own size


@dataclass
class TestSet:
    """Test images of the source domain (and their ground truth), and real target-domain images, each
    prepared by :func:`prepare_image` at its own aspect ratio."""

    names: list[str]
    inputs: Images
    ground_truth: Images | None  # each the size of its input, or None when the dataset has none
    real_target: Images  # for FID/KID


def scale_shorter_side(width: int, height: int, shorter_side: int) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is ``shorter_side`` pixels, aspect ratio kept."""
    scale = shorter_side / min(width, height)
    if width <= height:
        return shorter_side, max(shorter_side, round(height * scale))
    return max(shorter_side, round(width * scale)), shorter_side


def prepare_image(image: Image.Image, shorter_side: int | None = None) -> np.ndarray:
    """uint8 HxWx3 at its own aspect ratio: the one preprocessing of every fidelity figure.

    By default the image as ``translate`` gives it to the generator: its own size, shrunk (Lanczos)
    to fit translate's default ``--max-side``; one under the generator's minimum side is enlarged to
    it. With ``shorter_side`` (``compare --image-size``) it is resized bicubically, as ``compare``
    always resized, until its shorter side is that many pixels. Sides need not be multiples of 4: the
    generator reflect-pads its input and crops the result back, as in ``translate`` (``translate_batch``).
    """
    if shorter_side is None:
        image = shrink_to_max_side(image, DEFAULT_MAX_SIDE)
        shorter_side = max(MIN_SIDE, min(image.size))
    size = scale_shorter_side(image.width, image.height, shorter_side)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.array(image, dtype=np.uint8)


def load_images(files: Sequence[Path], shorter_side: int | None = None) -> Images:
    """Each file read and prepared by :func:`prepare_image`, in order."""
    return [torch.from_numpy(prepare_image(read_image(f), shorter_side)) for f in files]


def _load_ground_truth(files: Sequence[Path], inputs: Images, shorter_side: int | None) -> Images:
    """Ground-truth files prepared as their inputs were, and made exactly their input's size if they differ."""
    matched = []
    for path, reference in zip(files, inputs, strict=True):
        image = Image.fromarray(prepare_image(read_image(path), shorter_side))
        size = (reference.shape[1], reference.shape[0])
        if image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        matched.append(torch.from_numpy(np.array(image, dtype=np.uint8)))
    return matched


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


def cost_size(images: Images) -> int:
    """The square size MACs and latency are measured at by default: the first test image's shorter side
    (as measured), down to a multiple of 4."""
    height, width = images[0].shape[:2]
    return max(8, min(width, height) // 4 * 4)


def load_test_set(data_dir: Path, direction: str, shorter_side: int | None = None, limit: int | None = None) -> TestSet:
    """testA (A2B) or testB (B2A), each image at its own aspect ratio (see :func:`prepare_image`)."""
    target_dir = data_dir / f"test{direction[-1]}"
    files = source_test_files(data_dir, direction, limit)
    source = direction[0]
    gt_dir = data_dir / f"test{source}_gt"
    gt_files = [gt_dir / f.name for f in files] if gt_dir.is_dir() else []
    has_gt = bool(gt_files) and all(p.is_file() for p in gt_files)
    targets = list_images(target_dir) if target_dir.is_dir() else []
    if limit is not None:
        targets = targets[:limit]
    inputs = load_images(files, shorter_side)
    return TestSet(
        names=[f.name for f in files],
        inputs=inputs,
        ground_truth=_load_ground_truth(gt_files, inputs, shorter_side) if has_gt else None,
        real_target=load_images(targets, shorter_side),
    )


def run_model(model: nn.Module, images: Sequence[torch.Tensor], device: torch.device, batch_size: int = 8) -> Images:
    """Translate uint8 HxWx3 ``images`` of any sizes with a prepared model, images of one shape in batches;
    uint8 images on the CPU, in input order."""
    out: list[torch.Tensor | None] = [None] * len(images)
    for group in shape_groups(images):
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            translated = translate_batch(model, torch.stack([images[i] for i in chunk]), device)
            for i, image in zip(chunk, translated, strict=True):
                out[i] = image
    return out


def size_counts(images: Images) -> dict[str, int]:
    """How many images were measured at each size, as ``"WxH"``, sizes in order of first appearance."""
    counts: dict[str, int] = {}
    for image in images:
        key = f"{image.shape[1]}x{image.shape[0]}"
        counts[key] = counts.get(key, 0) + 1
    return counts


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
    image_size: int  # the square side MACs and latency are measured at; fidelity is at each image's own size
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
    fidelity_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> test images measured at that size

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
            "fidelity_sizes": dict(self.fidelity_sizes),
        }


@dataclass
class CompareOutputs:
    """The comparison and the images behind it (for the report's grid)."""

    result: Comparison
    test_set: TestSet
    teacher_images: Images
    student_images: Images
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

    Fidelity, PSNR to ground truth and FID/KID are measured on the test images at their own sizes;
    MACs and latency at ``image_size`` square (what a model costs at a size). With ``engines``, also
    the batch-1 latency of each available engine (torch fp32/bf16, onnxruntime).
    """
    say = log or (lambda _message: None)
    notes: list[str] = []
    t_model, s_model = prepare_generator(teacher, device), prepare_generator(student, device)

    say(f"Translating {len(test_set.names)} test images with both models")
    t_out = run_model(t_model, test_set.inputs, device)
    s_out = run_model(s_model, test_set.inputs, device)
    to_teacher = fidelity(s_out, t_out)

    psnr_gt: dict[str, float | None] = {"teacher": None, "student": None}
    baseline = None
    if test_set.ground_truth is not None:
        gt = test_set.ground_truth
        psnr_gt = {"teacher": mean_psnr(t_out, gt), "student": mean_psnr(s_out, gt)}
        baseline = mean_psnr(test_set.inputs, gt)

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

    per_image = to_teacher.psnr_per_image
    order = sorted(range(len(per_image)), key=per_image.__getitem__)[:WORST_IMAGES]
    result = Comparison(
        teacher=report("teacher", teacher),
        student=report("student", student),
        speedup=speed["teacher"].latency_ms / speed["student"].latency_ms,
        fidelity_psnr=to_teacher.psnr,
        fidelity_ssim=to_teacher.ssim,
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
        fidelity_sizes=size_counts(test_set.inputs),
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
    teacher_net, _ = load_generator(teacher.path)
    student_net, _ = load_generator(student.path)
    # By default each image at its own size: the distiller's psnr_to_teacher is measured the same way.
    test_set = load_test_set(data_dir, direction, image_size, limit)
    size = image_size if image_size is not None else cost_size(test_set.inputs)
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
