"""`cgdistill translate`: parse, pick the model, show progress and the outcome (logic in cgdistill.translate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cgdistill.cli.app import app, err_console, note, show, styled
from cgdistill.errors import WorkFailed
from cgdistill.fsutil import prepare_output_dir
from cgdistill.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_SIDE,
    DEFAULT_VIDEO_CODEC,
    DEFAULT_VIDEO_QUALITY,
    DEVICE_HELP,
    THREADS_HELP,
)

PROGRESS_FROM = 8  # fewer files finish before a bar would tell anyone anything


@app.command("translate")
def translate(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Image files, folders (the images directly in a folder) and video files (needs the video extra).",
            show_default=False,
        ),
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
    video_codec: Annotated[
        str, typer.Option("--video-codec", help="Encoder for translated videos (FFmpeg name: libx264, libx265, ...).")
    ] = DEFAULT_VIDEO_CODEC,
    video_quality: Annotated[
        int,
        typer.Option("--video-quality", help="Video quality as x264's CRF: 0 best, 18 visually lossless, 51 worst."),
    ] = DEFAULT_VIDEO_QUALITY,
    stats: Annotated[
        bool, typer.Option("--stats", help="Print each video's flicker (frame-to-frame change the model adds).")
    ] = False,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help=THREADS_HELP, show_default=False)] = None,
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
    """Translate images and videos with a teacher or student generator; writes PNGs of the same size (alpha
    kept) and videos with the same frames, timing and sound."""
    from cgdistill import threads as cpu_threads
    from cgdistill import translate as tr
    from cgdistill.device import describe
    from cgdistill.engines import check_engine, check_model_engine, device_for_model, engine_for_file
    from cgdistill.runs import resolve_generator
    from cgdistill.tiling import parse_size, parse_tile
    from cgdistill.video import check_video_options, is_video_file, probe_video

    check_engine(engine)
    tile_choice = parse_tile(tile)
    budget = parse_size(max_memory) if max_memory is not None else None
    videos = [path for path in inputs if is_video_file(path)]
    inputs = [path for path in inputs if path not in videos]
    if videos:
        check_video_options(video_codec, video_quality)
        for video in videos:
            probe_video(video)
    resolved = resolve_generator(model, direction, role="any")
    target = device_for_model(resolved.path, device)
    if target.type == "cpu":
        cpu_threads.configure(threads)
    check_model_engine(engine, resolved.path, target)
    chosen = resolved.direction
    files = tr.collect_inputs(inputs, recursive=recursive, output_dir=output)
    if not files and not videos:
        raise WorkFailed("No image files found in the given inputs" + ("" if recursive else " (try --recursive)") + ".")
    prepare_output_dir(output, "--output")  # before the model is loaded and anything is translated
    runner = engine_for_file(resolved.path, target, engine)
    config = runner.model.config
    note(
        f"Model: {resolved.label} ({resolved.role}, {config.blocks} {config.block} blocks, ngf {config.ngf}), "
        f"{chosen}, on {describe(target)} with {runner.name} ({runner.reason})."
    )
    video_failures = []
    if videos:
        from cgdistill.cli.video import translate_videos

        video_failures = translate_videos(
            runner.model, videos, output, chosen, target, max_side, batch_size, video_codec, video_quality, stats
        )
        if not files:
            if video_failures:
                raise WorkFailed(
                    video_failures[0]
                    if len(video_failures) == 1
                    else f"{len(video_failures)} videos failed (listed above)."
                )
            return
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
    if result.failures or video_failures:
        raise WorkFailed(f"{summary}; {len(result.failures) + len(video_failures)} failed (listed above).")
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
