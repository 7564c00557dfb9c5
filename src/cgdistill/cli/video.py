"""How a video shows in the terminal: a bar in frames (and tiles, for frames that tile), then its outcome;
the tile bar images share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cgdistill.cli.app import err_console, note, show, styled


class TileCounter:
    """A bar for the tiles of one image or video frame, added on the first tile and restarted at each
    image's first; ``before`` runs once before it is added (starting a display that had no bar yet)."""

    def __init__(self, progress: Progress, description: str, before: Callable[[], None] | None = None) -> None:
        self.progress, self.description, self.before = progress, description, before
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            if self.before is not None:
                self.before()
            self.task = self.progress.add_task(self.description, total=total, fps="")
        if done == 1:
            self.progress.reset(self.task, total=total)
        self.progress.update(self.task, completed=done)


@contextlib.contextmanager
def video_bar(
    source: Path,
) -> Iterator[tuple[Callable[[int, int | None], None], Callable[[int, int], None]]]:
    """A transient bar for ``source``'s frames with their rate; yields the frame and tile counters."""
    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        frames = bar.add_task(f"Translating {source.name}", total=None, fps="")

        def advance(done: int, total: int | None) -> None:
            elapsed = bar.tasks[frames].elapsed or 0.0
            fps = f"frames {done / elapsed:.1f}/s" if elapsed > 0 else ""
            bar.update(frames, completed=done, total=total, fps=fps)

        yield advance, TileCounter(bar, "Tiles of a frame")


def show_video_result(result, *, stats: bool, alone: bool) -> None:
    """Where a video went, its size, sound and speed; flicker when asked (``stats``); damage; an early end
    when it is one of several (a lone video's early end is the command's failure sentence)."""
    width, height = result.size
    audio = f", {result.audio_streams} audio stream{'s' if result.audio_streams != 1 else ''} copied"
    show(
        f"Wrote {result.output}: {result.frames} frame{'s' if result.frames != 1 else ''} at {width}x{height}"
        f"{audio if result.audio_streams else ''}, in {result.seconds:.1f} s ({result.frames_per_s:.1f} frames/s)."
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
        note(f"{result.source}: {result.skipped} could not be decoded; the frames around them were translated.")
    if result.stopped is not None and not alone:
        note(styled("[red]Incomplete:[/] {}", result.stopped_sentence()))
