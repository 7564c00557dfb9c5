"""``compare``: a teacher and a student on the same test images, on the same device, in one process.

:func:`compare` runs three measurements and puts them together: fidelity (both models translate the
test set; the student's PSNR/SSIM to the teacher, each model's PSNR to ground truth), FID/KID (when
the Inception weights are there) and cost (MACs, latency, throughput, each engine's latency, the
bf16 probe). The measurements themselves live in ``cost`` (MACs, timing) and ``metrics`` (PSNR,
SSIM, FID/KID); the test set is loaded by ``testset``; which models to compare is answered by
``runs.resolve_pair``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from cgdistill import runs
from cgdistill.cost import Speed, count_macs, count_macs_paper, measure_speed
from cgdistill.device import describe
from cgdistill.engines import BF16_MIN_PSNR_DB, bf16_psnr, engine_latencies, torch_model
from cgdistill.errors import CgdistillError
from cgdistill.fid_inception import missing_weights_note
from cgdistill.metrics import (
    Fidelity,
    extract_features,
    fid_kid,
    fidelity,
    mean_psnr,
    tone_error_share,
    tone_matched_psnr,
)
from cgdistill.nets import count_parameters
from cgdistill.plots import read_metrics
from cgdistill.runs import ResolvedModel
from cgdistill.testset import Images, TestSet, load_test_set, run_model, size_counts
from cgdistill.weights import load_generator

WORST_IMAGES = 5  # the report shows where the student falls short: this many lowest-PSNR test images

Log = Callable[[str], None]
ROLES = ("teacher", "student")


def cost_size(images: Images) -> int:
    """The square size MACs and latency are measured at by default: the first test image's shorter side
    (as measured), down to a multiple of 4."""
    height, width = images[0].shape[:2]
    return max(8, min(width, height) // 4 * 4)


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


class WorstImage(NamedTuple):
    """A test image where the student differs most from its teacher."""

    name: str
    psnr: float  # to the teacher
    teacher_tone_psnr: float  # to the teacher, with the teacher's global tone (``metrics.tone_matched_psnr``)


@dataclass
class Comparison:
    teacher: ModelReport
    student: ModelReport
    speedup: float
    fidelity_psnr: float
    fidelity_ssim: float
    # the mean PSNR to the teacher once each output has the teacher's per-channel mean and std: the gap to
    # fidelity_psnr is what global tone costs (brightness, contrast, colour cast)
    fidelity_teacher_tone_psnr: float
    tone_error_share: float  # the mean over images of the share of the squared error that global tone makes
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
    worst: list[WorstImage] = field(default_factory=list)  # lowest PSNR to the teacher first
    engine_latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # engine -> model -> ms
    fidelity_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> test images measured at that size

    def to_json(self) -> dict:
        """The machine-readable result; the keys of issue 6, plus direction, models and notes."""
        return {
            "teacher": asdict(self.teacher),
            "student": asdict(self.student),
            "speedup": self.speedup,
            "fidelity": {
                "psnr": self.fidelity_psnr,
                "ssim": self.fidelity_ssim,
                "psnr_with_teacher_tone": self.fidelity_teacher_tone_psnr,
                "tone_error_share": self.tone_error_share,
            },
            "baseline_psnr_gt": self.baseline_psnr_gt,
            "image_size": self.image_size,
            "images": self.images,
            "device": self.device,
            "direction": self.direction,
            "models": {"teacher": self.teacher_label, "student": self.student_label},
            "notes": list(self.notes),
            "worst_images": [
                {"name": image.name, "psnr": image.psnr, "psnr_with_teacher_tone": image.teacher_tone_psnr}
                for image in self.worst
            ],
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


@dataclass
class FidelityStep:
    """Both models' translations of the test set and how they match the teacher and the ground truth."""

    outputs: dict[str, Images]  # role -> translated test images, in test-set order
    to_teacher: Fidelity  # the student's outputs against the teacher's
    teacher_tone_psnr: list[float]  # each image's PSNR to the teacher with the teacher's global tone (metrics)
    psnr_gt: dict[str, float | None]  # role -> mean PSNR to ground truth; None without ground truth
    baseline_psnr_gt: float | None  # the untranslated inputs' PSNR to ground truth


def measure_fidelity(models: dict[str, nn.Module], test_set: TestSet, device: torch.device) -> FidelityStep:
    """Translate the test set with each prepared model, each image at its own size, and measure fidelity."""
    outputs = {role: run_model(model, test_set.inputs, device) for role, model in models.items()}
    psnr_gt: dict[str, float | None] = dict.fromkeys(ROLES)
    baseline = None
    if test_set.ground_truth is not None:
        gt = test_set.ground_truth
        psnr_gt = {role: mean_psnr(outputs[role], gt) for role in ROLES}
        baseline = mean_psnr(test_set.inputs, gt)
    to_teacher = fidelity(outputs["student"], outputs["teacher"])
    tone = tone_matched_psnr(outputs["student"], outputs["teacher"])
    return FidelityStep(outputs, to_teacher, tone, psnr_gt, baseline)


@dataclass
class DistributionStep:
    """FID and KID of each model's outputs against the real target images, and why any is missing."""

    scores: dict[str, tuple[float | None, float | None]]  # role -> (FID, KID)
    notes: list[str]


def measure_fid_kid(
    feature_network: nn.Module | None,
    real_target: Images,
    outputs: dict[str, Images],
    *,
    direction: str,
    device: torch.device,
    say: Log,
) -> DistributionStep:
    """FID/KID of each role's ``outputs``; skipped, with a note, without weights or 2 real images."""
    scores: dict[str, tuple[float | None, float | None]] = dict.fromkeys(ROLES, (None, None))
    if feature_network is None:
        return DistributionStep(scores, [missing_weights_note()])
    if len(real_target) < 2:
        return DistributionStep(
            scores, [f"FID/KID skipped: the dataset has fewer than 2 real test{direction[-1]} images."]
        )
    say("Computing FID/KID features")
    real = extract_features(feature_network, real_target, device)
    notes: list[str] = []
    for role in ROLES:
        fid, kid, notes = fid_kid(real, extract_features(feature_network, outputs[role], device))
        scores[role] = (fid, kid)
    return DistributionStep(scores, notes)  # one pair's notes: both pairs have as many images, so they say the same


@dataclass
class CostStep:
    """What each model costs at ``image_size`` square on the device."""

    params: dict[str, int]
    macs: dict[str, int]
    macs_paper: dict[str, int]
    speed: dict[str, Speed]  # role -> latency and throughput of the model translate runs
    engine_ms: dict[str, dict[str, float]]  # engine -> role -> batch-1 ms; empty when engines were not timed
    notes: list[str]


def measure_cost(
    generators: dict[str, nn.Module],
    models: dict[str, nn.Module],
    image_size: int,
    device: torch.device,
    *,
    repeats: int,
    throughput_batch: int | None,
    engines: bool,
    say: Log,
) -> CostStep:
    """Parameters and MACs of each generator, the prepared ``models``' speed, and with ``engines`` each
    engine's latency plus the bf16 probe where a bf16 engine exists."""
    say(f"Timing both models at {image_size}x{image_size} on {device}")
    speed = measure_speed(models, image_size, device, repeats=repeats, throughput_batch=throughput_batch)
    engine_ms: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    if engines:
        say(f"Timing both models with each available engine at {image_size}x{image_size}")
        engine_ms = engine_latencies(generators, image_size, device)
        if "torch bf16" in engine_ms:
            t_db, s_db = bf16_psnr(models["teacher"]), bf16_psnr(models["student"])
            notes.append(
                f"bf16 autocast output vs fp32 on a probe image: teacher {t_db:.1f} dB, student {s_db:.1f} dB PSNR "
                f"(translate uses bf16 on this CPU only at {BF16_MIN_PSNR_DB:.0f} dB or more)."
            )
    return CostStep(
        params={role: count_parameters(g) for role, g in generators.items()},
        macs={role: count_macs(g.config, image_size) for role, g in generators.items()},
        macs_paper={role: count_macs_paper(g.config, image_size) for role, g in generators.items()},
        speed=speed,
        engine_ms=engine_ms,
        notes=notes,
    )


def assemble(
    test_set: TestSet,
    fidelity_step: FidelityStep,
    distribution: DistributionStep,
    cost: CostStep,
    *,
    image_size: int,
    device: torch.device,
    direction: str,
    teacher_label: str,
    student_label: str,
    inception_origin: str | None,
) -> Comparison:
    """The table's and the JSON's figures from the three measurements."""

    def report(role: str) -> ModelReport:
        return ModelReport(
            params=cost.params[role],
            macs=cost.macs[role],
            macs_paper=cost.macs_paper[role],
            latency_ms=cost.speed[role].latency_ms,
            throughput_ips=cost.speed[role].throughput_ips,
            psnr_gt=fidelity_step.psnr_gt[role],
            fid=distribution.scores[role][0],
            kid=distribution.scores[role][1],
        )

    per_image, tone = fidelity_step.to_teacher.psnr_per_image, fidelity_step.teacher_tone_psnr
    order = sorted(range(len(per_image)), key=per_image.__getitem__)[:WORST_IMAGES]
    return Comparison(
        teacher=report("teacher"),
        student=report("student"),
        speedup=cost.speed["teacher"].latency_ms / cost.speed["student"].latency_ms,
        fidelity_psnr=fidelity_step.to_teacher.psnr,
        fidelity_ssim=fidelity_step.to_teacher.ssim,
        fidelity_teacher_tone_psnr=statistics.fmean(tone) if tone else float("nan"),
        tone_error_share=tone_error_share(per_image, tone),
        baseline_psnr_gt=fidelity_step.baseline_psnr_gt,
        image_size=image_size,
        images=len(test_set.names),
        device=describe(device),
        direction=direction,
        teacher_label=teacher_label,
        student_label=student_label,
        throughput_batch=cost.speed["teacher"].batch,
        inception=inception_origin,
        notes=distribution.notes + cost.notes,
        worst=[WorstImage(test_set.names[i], per_image[i], tone[i]) for i in order],
        engine_latency_ms=cost.engine_ms,
        fidelity_sizes=size_counts(test_set.inputs),
    )


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
    generators = {"teacher": teacher, "student": student}
    models = {role: torch_model(g, device) for role, g in generators.items()}  # fp32 on the CPU, autocast on CUDA
    say(f"Translating {len(test_set.names)} test images with both models")
    matched = measure_fidelity(models, test_set, device)
    distribution = measure_fid_kid(
        feature_network, test_set.real_target, matched.outputs, direction=direction, device=device, say=say
    )
    cost = measure_cost(
        generators,
        models,
        image_size,
        device,
        repeats=repeats,
        throughput_batch=throughput_batch,
        engines=engines,
        say=say,
    )
    result = assemble(
        test_set,
        matched,
        distribution,
        cost,
        image_size=image_size,
        device=device,
        direction=direction,
        teacher_label=teacher_label,
        student_label=student_label,
        inception_origin=inception_origin,
    )
    return CompareOutputs(result, test_set, matched.outputs["teacher"], matched.outputs["student"])


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
