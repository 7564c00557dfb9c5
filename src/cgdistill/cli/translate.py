"""`cgdistill translate`: parse the flags, then show what `cgdistill.translate.translate` does (bars, lines, the summary)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cgdistill.cli.app import app, err_console, note, show, styled
from cgdistill.cli.video import TileCounter, show_video_result, video_bar
from cgdistill.errors import WorkFailed
from cgdistill.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_SIDE,
    DEFAULT_TRANSLATE_OUTPUT,
    DEFAULT_VIDEO_CODEC,
    DEFAULT_VIDEO_QUALITY,
    DEVICE_HELP,
    ENGINE_HELP,
    MAX_MEMORY_HELP,
    THREADS_HELP,
    TILE_HELP,
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
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for <stem>_<direction>.png (and .mp4 for videos).")
    ] = DEFAULT_TRANSLATE_OUTPUT,
    max_side: Annotated[
        int, typer.Option("--max-side", help="Shrink larger images to this longest side (0: keep every size).")
    ] = DEFAULT_MAX_SIDE,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Images of the same size translated together.")
    ] = DEFAULT_BATCH_SIZE,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include images in subfolders.")] = False,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    engine: Annotated[str, typer.Option("--engine", help=ENGINE_HELP)] = "auto",
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
    tile: Annotated[str, typer.Option("--tile", help=TILE_HELP)] = "auto",
    max_memory: Annotated[str | None, typer.Option("--max-memory", help=MAX_MEMORY_HELP, show_default=False)] = None,
) -> None:
    """Translate images and videos with a teacher or student generator; writes PNGs of the same size (alpha
    kept) and videos with the same frames, timing and sound. Under `torchrun --nproc_per_node N -m cgdistill
    translate ...` each process takes its own share of the files."""
    from cgdistill import translate as tr
    from cgdistill.errors import CgdistillError
    from cgdistill.processes import is_main_process
    from cgdistill.video import Interrupted

    request = tr.TranslateRequest(
        inputs=inputs,
        direction=direction,
        model=model,
        output=output,
        max_side=max_side,
        batch_size=batch_size,
        recursive=recursive,
        device=device,
        engine=engine,
        threads=threads,
        tile=tile,
        max_memory=max_memory,
        video_codec=video_codec,
        video_quality=video_quality,
        stats=stats,
    )
    try:
        outcome = tr.translate(request, _TerminalDisplay(stats))
    except Interrupted as stop:
        note(f"Stopped: {stop.partial} holds the first {stop.frames} translated frames and plays.")
        raise
    except CgdistillError as error:
        if not is_main_process():  # under torchrun every process has the error; the first one says it
            raise typer.Exit(error.exit_code) from None
        raise
    if outcome.rank != 0:
        if outcome.failed:
            raise typer.Exit(1)
        return
    _report(outcome, output, stats)


def _report(outcome, output: Path, stats: bool) -> None:
    """The other processes' videos, the notes, renames, failures and the one summary line; exit 1 when
    anything failed."""
    for result in outcome.videos_elsewhere:
        show_video_result(result, stats=stats, alone=False)
    for message in outcome.video_errors_elsewhere:
        note(styled("[red]Failed:[/] {}", message))
    for line in outcome.notes:
        note(line)
    for source, renamed in outcome.renamed:
        note(f"{renamed.name}: the usual name for {source} would overwrite an input or another output.")
    result = outcome.images
    for _source, reason in result.failures:
        note(styled("[red]Failed:[/] {}", reason))
    if not outcome.image_count:
        failures = outcome.video_failures
        if failures:
            raise WorkFailed(failures[0] if len(failures) == 1 else f"{len(failures)} videos failed (listed above).")
        return
    if outcome.image_count == 1 and result.written:
        show(f"Wrote {result.written[0][1]}")
    summary = (
        f"Translated {len(result.written)} of {outcome.image_count} images into {output} "
        f"in {result.seconds:.1f} s ({result.images_per_s:.2f} images/s)"
    )
    if outcome.failed:
        raise WorkFailed(f"{summary}; {outcome.failed} failed (listed above).")
    show(summary + ".")


class _TerminalDisplay:
    """What translate shows in the terminal (``cgdistill.translate.Display``'s methods): the model line,
    bars for files, tiles and frames, each video's outcome."""

    def __init__(self, stats: bool) -> None:
        self.stats = stats

    @contextlib.contextmanager
    def choosing(self, work):
        # A spinner while the engines are timed (the first time a model meets a size: up to a minute or two);
        # a choice read from engine-choices.json is instant, and the spinner (transient) clears itself.
        size = f" for {work.width}x{work.height}" if work is not None else ""
        with err_console.status(f"Choosing the engine{size}...", spinner="dots"):
            yield

    def started(self, setup) -> None:
        from cgdistill.device import describe

        config = setup.engine.model.config
        processes = f", {setup.processes} processes" if setup.processes > 1 else ""
        note(
            f"Model: {setup.model.label} ({setup.model.role}, {config.blocks} {config.block} blocks, ngf "
            f"{config.ngf}), {setup.direction}, on {describe(setup.device)}{processes} with {setup.engine.name} "
            f"({setup.engine.reason})."
        )

    @contextlib.contextmanager
    def images(self, count: int):
        from cgdistill.translate import Progress

        with _Bars(count) as bars:
            yield Progress(bars.files, bars.tiles)

    @contextlib.contextmanager
    def video(self, source: Path):
        from cgdistill.translate import Progress

        with video_bar(source) as (frames, tiles):
            yield Progress(frames, tiles)

    def video_done(self, result, alone: bool) -> None:
        show_video_result(result, stats=self.stats, alone=alone)

    def video_failed(self, source: Path, message: str) -> None:
        note(styled("[red]Failed:[/] {}", message))


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
        self.file_task = None
        if files >= PROGRESS_FROM:
            self._start()
            self.file_task = self.progress.add_task("Translating", total=files)
        self.tiles = TileCounter(self.progress, "Tiles", before=self._start)

    def _start(self) -> None:
        if not self.started:
            self.progress.start()
            self.started = True

    def files(self, done: int, _total: int) -> None:
        if self.file_task is not None:
            self.progress.update(self.file_task, completed=done)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            self.progress.stop()
