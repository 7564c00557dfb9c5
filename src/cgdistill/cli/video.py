"""Videos for `cgdistill translate`: a progress bar in frames, the outcome, Ctrl-C (logic in cgdistill.video)."""

from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cgdistill.cli.app import err_console, note, show, styled
from cgdistill.errors import CgdistillError


def translate_videos(
    model,
    videos: list[Path],
    output: Path,
    direction: str,
    device,
    max_side: int,
    batch_size: int,
    codec: str,
    quality: int,
    stats: bool,
) -> list[str]:
    """Translate each video with its own bar; return one sentence per video that failed or stopped early.

    A lone video's error is raised as it is (one sentence); with several, each is listed and the rest go on.
    """
    from cgdistill.video import Interrupted, translate_video

    failures: list[str] = []
    taken: set[Path] = set()  # outputs so far: two clips with one stem must not share a name
    for source in videos:
        with Progress(
            TextColumn(f"Translating {source.name}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames {task.fields[fps]}"),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task("video", total=None, fps="")

            def advance(done: int, total: int | None, bar=bar, task=task) -> None:
                elapsed = bar.tasks[0].elapsed or 0.0
                fps = f"{done / elapsed:.1f}/s" if elapsed > 0 else ""
                bar.update(task, completed=done, total=total, fps=fps)

            try:
                result = translate_video(
                    model,
                    source,
                    output,
                    direction,
                    device=device,
                    max_side=max_side,
                    batch_size=batch_size,
                    codec=codec,
                    quality=quality,
                    stats=stats,
                    progress=advance,
                    taken=taken,
                )
            except Interrupted as stop:
                bar.stop()
                note(f"Stopped: {stop.partial} holds the first {stop.frames} translated frames and plays.")
                raise
            except CgdistillError as exc:
                if len(videos) == 1:
                    raise
                note(styled("[red]Failed:[/] {}", exc.message))
                failures.append(exc.message)
                continue
        width, height = result.size
        audio = f", {result.audio_streams} audio stream{'s' if result.audio_streams != 1 else ''} copied"
        show(
            f"Wrote {result.output}: {result.frames} frame{'s' if result.frames != 1 else ''} at {width}x{height}{audio if result.audio_streams else ''}, "
            f"in {result.seconds:.1f} s ({result.frames_per_s:.1f} frames/s)."
        )
        if result.flicker is not None:
            f = result.flicker
            show(
                f"Flicker of {result.output.name}: {f.value:+.2f} levels (consecutive frames differ by {f.output_change:.2f} "
                f"of 255 on average, the input's by {f.input_change:.2f}; {f.pairs} pairs)."
            )
        elif stats:
            show(f"Flicker of {result.output.name}: needs at least two frames.")
        if result.skipped is not None:
            note(f"{source}: {result.skipped} could not be decoded; the frames around them were translated.")
        if result.stopped is not None:
            held = f"{result.frames} frame{'s' if result.frames != 1 else ''}"
            message = f"{source} stopped decoding {result.stopped}; {result.output} holds the {held} before it."
            if len(videos) > 1:
                note(styled("[red]Incomplete:[/] {}", message))
            failures.append(message)
    return failures
