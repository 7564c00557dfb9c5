"""`cgdistill export`: a generator as a deployment file (ONNX), parity-checked, or as a web page that runs it
(logic in cgdistill.export and cgdistill.web.site)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cgdistill.cli.app import app, note, show
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import format_bytes
from cgdistill.options import EXPORT_FORMAT_HELP, EXPORT_FORMATS, THREADS_HELP, WEB_MAX_SIDE


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
    web: Annotated[
        Path | None,
        typer.Option(
            "--web",
            help="Write a static web page that runs the model in the browser into this folder (serve it with "
            "`cgdistill serve`, or put it on any static host).",
            show_default=False,
            rich_help_panel="Web page",
        ),
    ] = None,
    runtime: Annotated[
        Path | None,
        typer.Option(
            "--runtime",
            help="Folder with onnxruntime-web's files (or its dist/); default: the npm registry's package, "
            "downloaded once, checked and cached.",
            show_default=False,
            rich_help_panel="Web page",
        ),
    ] = None,
    max_side: Annotated[
        int | None,
        typer.Option(
            "--max-side",
            help=f"Longest photo side the page translates as it is; larger photos are scaled to fit (default {WEB_MAX_SIDE}).",
            rich_help_panel="Web page",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace the --web folder even when it holds files other than a web export.",
            rich_help_panel="Web page",
        ),
    ] = False,
) -> None:
    """Export a teacher or student generator to ONNX (dynamic batch and size), checked against PyTorch; with
    --web, as a static web page that runs it in the browser (a photo or the camera)."""
    from cgdistill import export as ex
    from cgdistill import threads as cpu_threads
    from cgdistill.runs import require_weights, resolve_generator
    from cgdistill.weights import load_generator

    if fmt not in EXPORT_FORMATS:
        raise CgdistillError(f"--format {fmt!r} is not supported; use one of {', '.join(EXPORT_FORMATS)}.")
    if web is None and (runtime is not None or force or max_side is not None):
        raise CgdistillError("--runtime, --max-side and --force go with --web FOLDER; add --web or leave them out.")
    if web is not None:
        if output is not None:
            raise CgdistillError("--web writes the model into its folder; leave out -o/--output.")
        _export_web(model, direction, web, runtime, WEB_MAX_SIDE if max_side is None else max_side, force, threads)
        return
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


def _export_web(
    model: str | None,
    direction: str | None,
    folder: Path,
    runtime: Path | None,
    max_side: int,
    force: bool,
    threads: int | None,
) -> None:
    from cgdistill import threads as cpu_threads
    from cgdistill.export import PARITY_TOLERANCE, require_onnx
    from cgdistill.runs import resolve_generator
    from cgdistill.web.runtime import VERSION
    from cgdistill.web.site import export_web

    resolved = resolve_generator(model, direction, role="any")
    require_onnx()
    cpu_threads.configure(threads)  # the parity check runs both engines on the CPU
    note(f"Model: {resolved.label} ({resolved.role}), {resolved.direction}.")
    result = export_web(resolved, folder, runtime=runtime, force=force, max_side=max_side)
    for check in result.parity:
        shape = "x".join(str(n) for n in check.shape)
        note(f"Parity with PyTorch on {shape}: max abs difference {check.max_abs:.1e} (limit {PARITY_TOLERANCE:.0e}).")
    note(f"Runtime: {result.runtime.source}.")
    if result.runtime.version not in (VERSION, None):
        note(f"The page was written for onnxruntime-web {VERSION}; {result.runtime.version} may differ in its API.")
    what = "Replaced the earlier web export in" if result.replaced else "Wrote a web page to"
    show(
        f"{what} {result.folder} ({len(result.files)} files, model {format_bytes(result.model_bytes)}); "
        f"try it with `cgdistill serve {result.folder}`, or put the folder on a static host that sends "
        "the COOP/COEP headers (docs/usage.md)."
    )
