"""`cgdistill compare` as one library call: the CLI and the demo call :func:`run_compare`.

Every check before any measuring, then which models (``runs.resolve_pair``), which data
(``paths.choose_data``), the device and threads, the FID Inception weights when they are here,
the measuring (``compare.compare_models``) and the report. What it decided is said through ``log``,
one sentence a line; the caller draws the table from the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cgdistill import fid_inception, paths, report, runs
from cgdistill import threads as cpu_threads
from cgdistill.compare import CompareOutputs, check_compare_options, compare_models
from cgdistill.device import pick_device
from cgdistill.options import DEFAULT_GRID_ROWS


@dataclass(frozen=True)
class CompareRequest:
    """What `cgdistill compare` is asked to do: its flags, as the library takes them."""

    teacher: str | None = None
    student: str | None = None
    direction: str | None = None
    data: str | None = None
    limit: int | None = None
    image_size: int | None = None
    inception: Path | None = None
    download_inception: bool = False
    report_dir: Path | None = None
    grid: int = DEFAULT_GRID_ROWS
    device: str = "auto"
    threads: int | None = None


@dataclass
class CompareRun:
    """The measurements and, when one was asked for, the report page."""

    outputs: CompareOutputs
    page: Path | None = None


def run_compare(request: CompareRequest, log: Callable[[str], None] = lambda line: None) -> CompareRun:
    """Measure teacher and student on the same test images: size, MACs, speed, fidelity, FID/KID."""
    check_compare_options(request.image_size, request.limit)
    report.check_report_options(request.report_dir, request.grid)
    device = pick_device(request.device)
    if device.type == "cpu":
        cpu_threads.configure(request.threads)  # chosen once: teacher and student are timed on the same threads
    teacher, student = runs.resolve_pair(request.teacher, request.student, request.direction)
    dataset = paths.choose_data(
        request.data,
        [(student.info.dataset, f"student {student.source}"), (teacher.info.dataset, f"teacher {teacher.source}")],
    )
    log(f"Teacher: {teacher.label}")
    log(f"Student: {student.label}")
    log(f"Data: {dataset.folder}" + (f" ({dataset.reason})" if dataset.reason else ""))
    if student.role == "teacher":
        log(f"Note: the student {student.label} is a teacher (it records no teacher of its own).")
    source = fid_inception.find_weights(request.inception, download=request.download_inception)
    feature_network = None
    if source is not None:
        log(f"FID Inception weights: {source.path} ({source.origin})")
        feature_network = fid_inception.load_fid_inception(source)
    outputs = compare_models(
        teacher,
        student,
        dataset.folder,
        direction=student.direction,
        device=device,
        image_size=request.image_size,
        limit=request.limit,
        feature_network=feature_network,
        inception_origin=source.origin if source else None,
        log=log,
    )
    page = None
    if request.report_dir is not None:
        page = report.write_report(outputs, request.report_dir, rows=request.grid)
        log(f"Report: {page}")
    return CompareRun(outputs, page)
