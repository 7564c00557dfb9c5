"""`cgdistill demo`: the whole pipeline on the embedded toy dataset, offline, on a CPU, in minutes.

Five stages, each a call into the same library functions the commands use: generate the toy
dataset, train a small CycleGAN teacher, distill a 3-block student, translate a few test images,
compare the two with ground truth and write the HTML report. Everything lives in one output folder
(its ``home/`` is the cgdistill home for the run), so a second demo starts clean and touches nothing
else. No presentation here: the caller passes a :class:`DemoObserver` (the CLI draws with rich).

The settings (docs/demo.md gives the measurements behind them): 64 px scenes, trained on random
32 px crops (the map is per pixel, so crops teach it at a quarter of the cost) and compared on whole
scenes; a 9-block teacher of width 16 and a 3-block student of width 8. Halving the width cuts the
student's cost by about 3.3x on top of the 2.2x of fewer blocks, so it is several times cheaper; the
narrower student cannot copy the teacher's outer layers, but it learns from the teacher's outputs in
a few hundred steps anyway.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cgdistill import compare, paths, runs
from cgdistill.compare_command import CompareRequest, CompareRun, run_compare
from cgdistill.data.toy import make_toy_dataset
from cgdistill.errors import CgdistillError, WorkFailed
from cgdistill.fsutil import atomic_write_text
from cgdistill.options import DEMO_OUTPUT
from cgdistill.plots import read_metrics
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.distill import distill
from cgdistill.train.loop import Observer
from cgdistill.train.teacher import train_teacher
from cgdistill.train.timeline import steps_per_epoch
from cgdistill.translate import TranslateRequest, translate
from cgdistill.worklist import collect_inputs

MARKER_FILE = ".cgdistill-demo"  # says "a demo made this folder", so a later demo may replace it
SUMMARY_FILE = "summary.json"
DATASET_NAME = "toy"
TEACHER_RUN = "teacher"
STUDENT_RUN = "student"

STAGES = (
    "Generating the toy dataset",
    "Training the teacher",
    "Distilling the student",
    "Translating test images",
    "Comparing teacher and student",
)

# Quality checks printed at the end. They describe the result; a miss is reported, never an error.
MIN_GAIN_OVER_BASELINE_DB = 8.0
MAX_STUDENT_GAP_DB = 2.0
MIN_MAC_RATIO = 3.0


@dataclass(frozen=True)
class DemoSettings:
    """Sizes, steps and learning rates of the demo; the defaults are the measured ones (docs/demo.md)."""

    seed: int = 0
    scene_size: int = 64  # the toy images: the report compares the models on whole 64 px test scenes
    image_size: int = 32  # training crops (a quarter of the pixels per step; the map is per-pixel)
    n_train: int = 200
    n_test: int = 40
    direction: str = "A2B"  # day -> night
    batch_size: int = 1
    teacher_blocks: int = 9
    teacher_ngf: int = 16
    ndf: int = 16
    teacher_steps: int = 600
    teacher_lr: float = 5e-4  # 2.5x the recipe's: measured +0.7 dB at 300 steps, and stable on every seed tried
    student_blocks: int = 3
    student_ngf: int = 8
    student_steps: int = 400
    student_lr: float = 1e-3
    translate_count: int = 8
    grid_rows: int = 6
    device: str = "auto"
    threads: int | None = None  # CPU threads; None: the free cores, re-chosen as the load changes


# A seconds-long run for the tests: every stage runs for real, just tiny.
QUICK_SETTINGS = DemoSettings(
    scene_size=32,
    image_size=32,  # the smallest that the 70x70 PatchGAN's stride-2 layers accept
    n_train=6,
    n_test=4,
    teacher_blocks=3,
    teacher_ngf=4,
    ndf=4,
    teacher_steps=3,
    student_blocks=1,
    student_ngf=4,
    student_steps=3,
    translate_count=3,
    grid_rows=2,
    device="cpu",
)


class DemoObserver:
    """Presentation hooks; the default is silent.

    ``stage`` opens a stage, ``training`` hands out the observer of a training stage (the CLI's live
    progress bar), ``stage_done`` closes a stage with its wall time and a one-line result.
    """

    def stage(self, index: int, total: int, title: str) -> None: ...

    def training(self) -> Observer:
        return Observer()

    def message(self, text: str) -> None: ...

    def stage_done(self, index: int, seconds: float, detail: str) -> None: ...


@dataclass
class Check:
    """One quality check of the result, with the numbers that decided it."""

    name: str
    passed: bool
    detail: str


@dataclass
class DemoResult:
    """Where everything went and what was measured (``summary`` is also written to summary.json)."""

    output: Path
    report: Path
    translated: list[Path]
    checks: list[Check]
    summary: dict = field(default_factory=dict)
    replaced: bool = False

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def prepare_output(output: Path) -> bool:
    """Make ``output`` an empty demo folder; True when an earlier demo there was replaced.

    A folder an earlier demo made (it holds the marker file) is emptied; any other non-empty folder
    is refused, since deleting files the demo did not make would surprise anyone.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise CgdistillError(f"--output {output} is a file; pass a folder for the demo.")
    replaced = False
    if output.is_dir() and any(output.iterdir()):
        if not (output / MARKER_FILE).is_file():
            raise CgdistillError(
                f"{output} already exists and was not made by `cgdistill demo`; "
                "pass --output with a new or empty folder."
            )
        for child in output.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        replaced = True
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / MARKER_FILE, "Made by `cgdistill demo`; a later demo replaces this folder.\n")
    return replaced


def quality_checks(comparison: compare.Comparison) -> list[Check]:
    """Did the models learn (beat the unchanged input), is the student close to the teacher, and cheaper?"""
    teacher, student = comparison.teacher, comparison.student
    baseline = comparison.baseline_psnr_gt
    checks = []
    if baseline is not None and teacher.psnr_gt is not None and student.psnr_gt is not None:
        worst = min(teacher.psnr_gt, student.psnr_gt)
        checks.append(
            Check(
                f"Teacher and student beat the unchanged input by at least {MIN_GAIN_OVER_BASELINE_DB:g} dB",
                worst - baseline >= MIN_GAIN_OVER_BASELINE_DB,
                f"teacher {teacher.psnr_gt:.2f} dB, student {student.psnr_gt:.2f} dB, input {baseline:.2f} dB",
            )
        )
        gap = teacher.psnr_gt - student.psnr_gt
        checks.append(
            Check(
                f"Student within {MAX_STUDENT_GAP_DB:g} dB of the teacher",
                gap <= MAX_STUDENT_GAP_DB,
                f"{gap:.2f} dB behind the teacher" if gap >= 0 else f"{-gap:.2f} dB ahead of the teacher",
            )
        )
    ratio = teacher.macs / max(student.macs, 1)
    checks.append(
        Check(
            f"Student at least {MIN_MAC_RATIO:g}x cheaper",
            ratio >= MIN_MAC_RATIO,
            f"{ratio:.1f}x fewer MACs, {teacher.params / max(student.params, 1):.1f}x fewer parameters, "
            f"{comparison.speedup:.1f}x faster",
        )
    )
    return checks


@dataclass
class _Outcome:
    detail: str = ""


class _Stages:
    """Announces and times each stage, and turns an unexpected error into one sentence that names it."""

    def __init__(self, observer: DemoObserver) -> None:
        self.observer = observer
        self.seconds: dict[str, float] = {}

    @contextmanager
    def run(self, index: int, key: str) -> Iterator[_Outcome]:
        title = STAGES[index - 1]
        self.observer.stage(index, len(STAGES), title)
        since = time.perf_counter()
        outcome = _Outcome()
        try:
            yield outcome
        except CgdistillError:
            raise
        except Exception as exc:
            raise WorkFailed(
                f"The demo failed while {title.lower()}: {type(exc).__name__}: {exc} "
                "(`cgdistill --debug demo` shows the traceback)."
            ) from exc
        self.seconds[key] = round(time.perf_counter() - since, 2)
        self.observer.stage_done(index, self.seconds[key], outcome.detail)


def run_demo(
    output: Path = DEMO_OUTPUT, settings: DemoSettings | None = None, observer: DemoObserver | None = None
) -> DemoResult:
    """Run the five stages into ``output``; returns the result (also in ``output/summary.json``).

    Raises :class:`WorkFailed` only when a stage breaks (training diverged, an image failed), never
    because the quality was lower than hoped: that is what the checks in the result report.
    """
    settings = settings or DemoSettings()
    observer = observer or DemoObserver()
    output = Path(output).expanduser().absolute()
    replaced = prepare_output(output)
    if replaced:
        observer.message(f"Starting fresh: replaced the earlier demo in {output}.")
    stages = _Stages(observer)
    started, cpu_started = time.perf_counter(), time.process_time()
    with paths.using_home(output / "home"):
        with stages.run(1, "dataset") as done:
            data_dir = make_toy_dataset(
                paths.dataset_path(DATASET_NAME),
                size=settings.scene_size,
                n_train=settings.n_train,
                n_test=settings.n_test,
                seed=settings.seed,
            )
            done.detail = (
                f"{settings.n_train} day and {settings.n_train} night training scenes, {settings.n_test} test "
                f"scenes with ground truth, {settings.scene_size}x{settings.scene_size} px, in {data_dir}"
            )
        with stages.run(2, "teacher") as done:
            teacher_run = train_teacher(_teacher_config(settings, data_dir), observer=observer.training())
            done.detail = f"{settings.teacher_steps} steps; run folder {teacher_run}"
        with stages.run(3, "student") as done:
            student_run = distill(_student_config(settings), observer=observer.training())
            done.detail = (
                f"{settings.student_steps} steps; student-to-teacher PSNR {_last_fidelity(student_run)} on "
                f"held-out images; run folder {student_run}"
            )
        with stages.run(4, "translate") as done:
            translated = _translate(settings, data_dir, output / "translated")
            done.detail = f"{len(translated)} day scenes turned to night by the student, in {output / 'translated'}"
        with stages.run(5, "compare") as done:
            compared = _compare(settings, data_dir, output / "report", observer)
            outputs, page = compared.outputs, compared.page
            done.detail = f"report in {page}"

    seconds = {**stages.seconds, "total": round(time.perf_counter() - started, 2)}
    seconds["cpu_total"] = round(time.process_time() - cpu_started, 2)
    checks = quality_checks(outputs.result)
    result = DemoResult(output, page, translated, checks, replaced=replaced)
    result.summary = _summary(result, settings, outputs.result, seconds, teacher_run, student_run)
    atomic_write_text(output / SUMMARY_FILE, json.dumps(result.summary, indent=2) + "\n")
    return result


def _teacher_config(settings: DemoSettings, data_dir: Path) -> TeacherConfig:
    """The published recipe, small."""
    return TeacherConfig(
        data=str(data_dir),
        name=TEACHER_RUN,
        blocks=settings.teacher_blocks,
        ngf=settings.teacher_ngf,
        lr=settings.teacher_lr,
        **_short_run(settings, settings.teacher_steps),
    )


def _student_config(settings: DemoSettings) -> DistillConfig:
    return DistillConfig(
        teacher=TEACHER_RUN,
        direction=settings.direction,
        name=STUDENT_RUN,
        blocks=settings.student_blocks,
        ngf=settings.student_ngf,
        lr=settings.student_lr,
        eval_every=max(settings.student_steps // 6, 1),
        **_short_run(settings, settings.student_steps),
    )


def _short_run(settings: DemoSettings, steps: int) -> dict:
    """What both training stages share: ``steps`` steps on random crops of the whole scenes, the lr
    constant for the first half of the epochs, then linear decay; one checkpoint, at the end.

    The loop decays per epoch; with ``steps`` shorter than a few epochs the decay is coarse but still
    ends low, which is what lets a GAN settle.
    """
    total = max(1, -(-steps // steps_per_epoch(settings.n_train, settings.batch_size)))  # epochs that hold the steps
    return dict(
        epochs=total - total // 2,
        epochs_decay=total // 2,
        max_steps=steps,
        image_size=settings.image_size,
        load_size=settings.scene_size,  # the scenes are made at this size: random crops, no resizing
        batch_size=settings.batch_size,
        ndf=settings.ndf,
        device=settings.device,
        threads=settings.threads,
        seed=settings.seed,
        save_every=steps,
        sample_every=max(steps // 3, 1),
    )


def _last_fidelity(run: Path) -> str:
    """The student's last logged student-to-teacher PSNR, for the stage's one-line result."""
    values = [
        record["psnr_to_teacher"] for record in read_metrics(run / runs.METRICS_FILE) if "psnr_to_teacher" in record
    ]
    return f"{values[-1]:.2f} dB" if values else "n/a"


def _translate(settings: DemoSettings, data_dir: Path, folder: Path) -> list[Path]:
    """The student translates the first test images of its source domain: `cgdistill translate`'s own entry."""
    direction = runs.resolve_generator(STUDENT_RUN, settings.direction, role="student").direction
    files = collect_inputs([data_dir / f"test{direction[0]}"])[: settings.translate_count]
    request = TranslateRequest(files, direction, STUDENT_RUN, folder, device=settings.device, threads=settings.threads)
    result = translate(request).images
    if result.failures:
        path, reason = result.failures[0]
        raise WorkFailed(f"Translating the demo's test images failed on {path}: {reason}")
    return [target for _source, target in result.written]


def _compare(settings: DemoSettings, data_dir: Path, folder: Path, observer: DemoObserver) -> CompareRun:
    """`cgdistill compare --teacher teacher --student student --report FOLDER`: the command's own entry.

    FID only when its weights are already here: the demo never downloads."""
    request = CompareRequest(
        TEACHER_RUN, STUDENT_RUN, settings.direction, str(data_dir), image_size=settings.scene_size,
        report_dir=folder, grid=settings.grid_rows, device=settings.device, threads=settings.threads,
    )  # fmt: skip
    return run_compare(request, log=observer.message)


def _summary(
    result: DemoResult,
    settings: DemoSettings,
    comparison: compare.Comparison,
    seconds: dict[str, float],
    teacher_run: Path,
    student_run: Path,
) -> dict:
    """The machine-readable record of the demo: settings, timings, quality, cost, checks, files."""
    t, s = comparison.teacher, comparison.student
    return {
        "settings": asdict(settings),
        "seconds": seconds,
        "device": comparison.device,
        "psnr_gt": {"baseline": comparison.baseline_psnr_gt, "teacher": t.psnr_gt, "student": s.psnr_gt},
        "fidelity": {"psnr": comparison.fidelity_psnr, "ssim": comparison.fidelity_ssim},
        "params": {"teacher": t.params, "student": s.params},
        "macs": {"teacher": t.macs, "student": s.macs},
        "mac_ratio": t.macs / max(s.macs, 1),
        "latency_ms": {"teacher": t.latency_ms, "student": s.latency_ms},
        "speedup": comparison.speedup,
        "checks": [asdict(check) for check in result.checks],
        "passed": result.passed,
        "report": str(result.report),
        "translated": [str(path) for path in result.translated],
        "runs": {"teacher": str(teacher_run), "student": str(student_run)},
        "compare": comparison.to_json(),
    }
