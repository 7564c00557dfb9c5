"""`cgdistill demo`: run the whole pipeline with a live display, then show what it measured."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cgdistill.cli.app import app, console, note, show, styled
from cgdistill.options import DEMO_OUTPUT, DEVICE_HELP, THREADS_HELP

if TYPE_CHECKING:
    from cgdistill.demo import DemoResult


def _db(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} dB"


def _summary_table(summary: dict) -> Table:
    psnr, fidelity = summary["psnr_gt"], summary["fidelity"]
    table = Table(title="What the demo measured (day -> night, test images)")
    table.add_column("Measure")
    table.add_column("Unchanged input", justify="right")
    table.add_column("Teacher", justify="right")
    table.add_column("Student", justify="right")
    table.add_row("PSNR to ground truth", _db(psnr["baseline"]), _db(psnr["teacher"]), _db(psnr["student"]))
    table.add_row("PSNR to the teacher", "", "", _db(fidelity["psnr"]))
    params, macs, latency = summary["params"], summary["macs"], summary["latency_ms"]
    table.add_row("Parameters", "", f"{params['teacher'] / 1e3:.0f} k", f"{params['student'] / 1e3:.0f} k")
    table.add_row("MACs per image", "", f"{macs['teacher'] / 1e6:.1f} M", f"{macs['student'] / 1e6:.1f} M")
    table.add_row("Latency, batch 1", "", f"{latency['teacher']:.2f} ms", f"{latency['student']:.2f} ms")
    return table


def _present(result: DemoResult) -> None:
    summary = result.summary
    console.print(_summary_table(summary))
    for check in result.checks:
        mark = "[green]✓[/]" if check.passed else "[red]✗[/]"
        show(styled(mark + " {}: {}", check.name, check.detail))
    if not result.passed:
        show(
            "The pipeline ran, but the result is weaker than the demo usually gets; "
            "the report shows what the models learned."
        )
    seconds = summary["seconds"]
    parts = ", ".join(f"{key} {value:.0f} s" for key, value in seconds.items() if key not in ("total", "cpu_total"))
    minutes, rest = divmod(round(seconds["total"]), 60)
    show(f"Finished in {minutes} min {rest} s ({parts}) on {summary['device']}.")
    show(f"Translated images: {result.output / 'translated'}")
    show(styled("Report: [bold]{}[/]", result.report))
    show(f"Open it in a browser: {result.report.as_uri()}")


@app.command("demo")
def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for everything the demo makes (replaced on a re-run).")
    ] = DEMO_OUTPUT,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the dataset, initialisation and data order.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", hidden=True, help="Tiny sizes, for the tests.")] = False,
    device: Annotated[
        str | None, typer.Option("--device", help=f"{DEVICE_HELP} (default: auto).", show_default=False)
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help=THREADS_HELP, show_default=False)] = None,
) -> None:
    """Generate a toy dataset, train a teacher, distill a student, translate, compare: a few minutes on a CPU."""
    from cgdistill.cli.progress import LiveDemo
    from cgdistill.demo import QUICK_SETTINGS, DemoSettings, run_demo
    from cgdistill.device import pick_device

    settings = replace(QUICK_SETTINGS if quick else DemoSettings(), seed=seed, threads=threads)
    if device is not None:
        pick_device(device)  # a mistyped device is refused now, not after the dataset is made
        settings = replace(settings, device=device)
    note(
        f"The demo keeps its dataset and runs in {output / 'home'}; nothing outside {output} "
        "is touched and no network is used."
    )
    display = LiveDemo()
    try:
        result = run_demo(output, settings, display)
    finally:
        display.close()  # a failed stage must not leave the spinner running
    _present(result)
