"""`cgdistill translate`: parse, pick the model, show progress and the outcome (logic in cgdistill.translate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cgdistill.cli.app import app, err_console, note, show, styled
from cgdistill.errors import WorkFailed
from cgdistill.fsutil import prepare_output_dir
from cgdistill.options import DEFAULT_BATCH_SIZE, DEFAULT_MAX_SIDE, DEVICE_HELP

PROGRESS_FROM = 8  # fewer files finish before a bar would tell anyone anything


@app.command("translate")
def translate(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Image files and folders (the images directly in a folder).", show_default=False),
    ],
    direction: Annotated[
        str | None,
        typer.Option(
            "--direction", help="A2B or B2A; needed for a teacher run with both generators.", show_default=False
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Run name, .safetensors file, or .onnx file from `cgdistill export` (default: newest student for "
            "the direction, else newest teacher).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for <stem>_<direction>.png.")] = Path(
        "translated"
    ),
    max_side: Annotated[
        int, typer.Option("--max-side", help="Shrink larger images to this longest side (0: keep every size).")
    ] = DEFAULT_MAX_SIDE,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Images of the same size translated together.")
    ] = DEFAULT_BATCH_SIZE,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include images in subfolders.")] = False,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="auto (the faster of torch and onnxruntime for this model here; onnxruntime for an .onnx model), "
            "torch or onnxruntime (CPU, needs the onnx extra).",
        ),
    ] = "auto",
    tile: Annotated[
        str,
        typer.Option(
            "--tile",
            help="auto (tile, exactly, only images whose one pass would exceed --max-memory), off (one pass) "
            "or a tile side in pixels.",
        ),
    ] = "auto",
    max_memory: Annotated[
        str | None,
        typer.Option(
            "--max-memory",
            help="Peak memory while translating an image, e.g. 1.5G or 800M (default: what is in use plus 60% of "
            "the free RAM, or of the GPU's free memory).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Translate images with a teacher or student generator; writes PNGs of the same size (alpha kept)."""
    from cgdistill import translate as tr
    from cgdistill.device import describe
    from cgdistill.engines import check_engine, check_model_engine, device_for_model, engine_for_file
    from cgdistill.runs import resolve_generator
    from cgdistill.tiling import parse_size, parse_tile

    check_engine(engine)
    tile_choice = parse_tile(tile)
    budget = parse_size(max_memory) if max_memory is not None else None
    resolved = resolve_generator(model, direction, role="any")
    target = device_for_model(resolved.path, device)
    check_model_engine(engine, resolved.path, target)
    chosen = resolved.direction
    files = tr.collect_inputs(inputs, recursive=recursive, output_dir=output)
    if not files:
        raise WorkFailed("No image files found in the given inputs" + ("" if recursive else " (try --recursive)") + ".")
    prepare_output_dir(output, "--output")  # before the model is loaded and anything is translated
    runner = engine_for_file(resolved.path, target, engine)
    config = runner.model.config
    note(
        f"Model: {resolved.label} ({resolved.role}, {config.blocks} {config.block} blocks, ngf {config.ngf}), "
        f"{chosen}, on {describe(target)} with {runner.name} ({runner.reason})."
    )
    with _Bars(len(files)) as bars:
        result = tr.translate_files(
            runner.model,
            files,
            output,
            chosen,
            device=target,
            max_side=max_side,
            batch_size=batch_size,
            progress=bars.files,
            tile=tile_choice,
            max_memory=budget,
            tiled_model=runner.tiled,
            tile_progress=bars.tiles,
        )
    for line in result.notes:
        note(line)
    for source, renamed in result.renamed:
        note(f"{renamed.name}: the usual name for {source} would overwrite an input or another output.")
    for _source, reason in result.failures:
        note(styled("[red]Failed:[/] {}", reason))
    if len(files) == 1 and result.written:
        show(f"Wrote {result.written[0][1]}")
    summary = (
        f"Translated {len(result.written)} of {len(files)} images into {output} "
        f"in {result.seconds:.1f} s ({result.images_per_s:.2f} images/s)"
    )
    if result.failures:
        raise WorkFailed(f"{summary}; {len(result.failures)} failed (listed above).")
    show(summary + ".")


class _Bars:
    """A bar for the files (from ``PROGRESS_FROM`` files on) and one for the tiles of a large image."""

    def __init__(self, files: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        )
        self.started = False
        self.file_task = self._start("Translating", files) if files >= PROGRESS_FROM else None
        self.tile_task = None

    def _start(self, description: str, total: int):
        if not self.started:
            self.progress.start()
            self.started = True
        return self.progress.add_task(description, total=total)

    def files(self, done: int, _total: int) -> None:
        if self.file_task is not None:
            self.progress.update(self.file_task, completed=done)

    def tiles(self, done: int, total: int) -> None:
        if self.tile_task is None:
            self.tile_task = self._start("Tiles", total)
        if done == 1:
            self.progress.reset(self.tile_task, total=total)
        self.progress.update(self.tile_task, completed=done)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            self.progress.stop()
