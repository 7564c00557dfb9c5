"""`cgdistill export`: a generator as a deployment file (ONNX), parity-checked (logic in cgdistill.export)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cgdistill.cli.app import app, note, show
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import format_bytes
from cgdistill.options import EXPORT_FORMAT_HELP, EXPORT_FORMATS, THREADS_HELP


@app.command("export")
def export(
    model: Annotated[
        str | None,
        typer.Argument(
            help="Run name or .safetensors generator (default: the newest student, else the newest teacher).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=EXPORT_FORMAT_HELP)] = "onnx",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File to write (default: <model>-<direction>.onnx here).", show_default=False
        ),
    ] = None,
    direction: Annotated[
        str | None,
        typer.Option(
            "--direction", help="A2B or B2A; needed for a teacher run with both generators.", show_default=False
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help=THREADS_HELP, show_default=False)] = None,
) -> None:
    """Export a teacher or student generator to ONNX (dynamic batch and size), checked against PyTorch."""
    from cgdistill import export as ex
    from cgdistill import threads as cpu_threads
    from cgdistill.runs import require_weights, resolve_generator
    from cgdistill.weights import load_generator

    if fmt not in EXPORT_FORMATS:
        raise CgdistillError(f"--format {fmt!r} is not supported; use one of {', '.join(EXPORT_FORMATS)}.")
    resolved = resolve_generator(model, direction, role="any")
    require_weights(resolved, "export needs a .safetensors model to export")
    chosen = resolved.direction
    ex.require_onnx()
    cpu_threads.configure(threads)  # the parity check runs both engines on the CPU
    generator, info = load_generator(resolved.path)
    if output is None:
        base = resolved.run.name if resolved.run is not None else resolved.path.stem
        output = Path(f"{base}-{chosen}.onnx")
    cfg = generator.config
    note(f"Model: {resolved.label} ({resolved.role}, {cfg.blocks} {cfg.block} blocks, ngf {cfg.ngf}), {chosen}.")
    result = ex.export_onnx(generator, output, info=info, direction=chosen)
    for check in result.parity:
        shape = "x".join(str(n) for n in check.shape)
        note(
            f"Parity with PyTorch on {shape}: max abs difference {check.max_abs:.1e} (limit {ex.PARITY_TOLERANCE:.0e})."
        )
    show(f"Wrote {result.path} ({format_bytes(result.size_bytes)}, ONNX opset {ex.OPSET}, dynamic batch/height/width).")
