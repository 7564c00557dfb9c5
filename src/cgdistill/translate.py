"""`cgdistill translate` as a library call: images and videos through one model, one device, one engine
and one tile policy, with one rule for output names.

:func:`translate` is the command's one entry point: the CLI, the demo and the benchmarks call it. It
checks every flag before any work, resolves the model, picks the device, thread count and engine
(``policy.runner_for_file``), names every output once (``worklist``), then runs the videos
(``video``) and the images (``imagefiles``) through the same runner. Under ``torchrun`` each process
takes its own share of the files and the results are gathered, so every process returns the same
outcome and one of them shows it. What is shown while it works goes to a :class:`Display`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cgdistill import threads
from cgdistill.data.images import probe_image
from cgdistill.engines import Engine, Workload, check_engine, check_model_engine, device_for_model
from cgdistill.errors import CgdistillError, WorkFailed
from cgdistill.forward import fit_max_side
from cgdistill.fsutil import prepare_output_dir
from cgdistill.imagefiles import TranslateResult, translate_files
from cgdistill.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_SIDE,
    DEFAULT_TRANSLATE_OUTPUT,
    DEFAULT_VIDEO_CODEC,
    DEFAULT_VIDEO_QUALITY,
)
from cgdistill.policy import Runner, check_sizes, parse_tile, runner_for_file
from cgdistill.processes import gather, join_process_group, leave_process_group, torchrun_ranks
from cgdistill.runs import ResolvedModel, resolve_generator
from cgdistill.sizes import parse_size
from cgdistill.video import VideoResult, check_video_options, translate_video
from cgdistill.videoio import frame_size, frame_size_and_count, is_video_file
from cgdistill.worklist import Worklist, find_videos, plan_work


@dataclass(frozen=True)
class TranslateRequest:
    """What `cgdistill translate` is asked to do: its arguments and flags, as the library takes them."""

    inputs: Sequence[Path]
    direction: str | None = None
    model: str | None = None
    output: Path = DEFAULT_TRANSLATE_OUTPUT
    max_side: int = DEFAULT_MAX_SIDE
    batch_size: int = DEFAULT_BATCH_SIZE
    recursive: bool = False
    device: str = "auto"
    engine: str = "auto"
    threads: int | None = None
    tile: str | int = "auto"
    max_memory: str | None = None  # "1.5G"; None: a share of the free memory
    video_codec: str = DEFAULT_VIDEO_CODEC
    video_quality: int = DEFAULT_VIDEO_QUALITY
    stats: bool = False


@dataclass(frozen=True)
class Setup:
    """What was chosen before any work: the model, its direction, the device and the engine."""

    model: ResolvedModel
    direction: str
    device: torch.device
    engine: Engine
    processes: int = 1


@dataclass
class TranslateOutcome:
    """What one translate call did, over every process that took part."""

    images: TranslateResult
    image_count: int
    videos: list[VideoResult] = field(default_factory=list)
    video_errors: list[str] = field(default_factory=list)  # videos that failed, one sentence each
    video_count: int = 0
    renamed: list[tuple[Path, Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how sizes ran (tiles, budget), one sentence each
    rank: int = 0
    # What processes other than this one did with their videos (torchrun): the display never saw it.
    videos_elsewhere: list[VideoResult] = field(default_factory=list)
    video_errors_elsewhere: list[str] = field(default_factory=list)
    fatal: tuple[str, int] | None = None  # a lone video's error (sentence, exit code), raised on every process

    @property
    def video_failures(self) -> list[str]:
        """One sentence per video that failed or stopped early."""
        return self.video_errors + [v.stopped_sentence() for v in self.videos if v.stopped is not None]

    @property
    def failed(self) -> int:
        return len(self.images.failures) + len(self.video_failures)


class Display:
    """What translate shows while it works. This one shows nothing: the demo, benchmarks and the processes
    of a torchrun launch other than the first use it; the CLI draws bars and lines."""

    @contextlib.contextmanager
    def choosing(self, work: Workload | None) -> Iterator[None]:
        """Around the engine's choice for ``work`` (None: its size is unknown). The first time a model meets a
        size it times the engines there, and for a long video races a compile too: up to a minute or two."""
        yield

    def started(self, setup: Setup) -> None:
        """The model, direction, device and engine are chosen; nothing has run yet."""

    @contextlib.contextmanager
    def images(self, count: int) -> Iterator[Progress]:
        """Around the images: a :class:`Progress` for their files and for a tiled image's tiles."""
        yield Progress()

    @contextlib.contextmanager
    def video(self, source: Path) -> Iterator[Progress]:
        """Around one video: a :class:`Progress` for its frames and for a tiled frame's tiles."""
        yield Progress()

    def video_done(self, result: VideoResult, alone: bool) -> None:
        """A video was written (``result.stopped`` says when its input ended early); ``alone``: it is all the
        call translates, so its early end will be the call's closing sentence."""

    def video_failed(self, source: Path, message: str) -> None:
        """A video of several failed with ``message``; the others go on."""


@dataclass
class Progress:
    """Counters a display updates: ``done(n, total)`` for files or frames, ``tiles(n, total)`` within one image."""

    done: Callable[[int, int | None], None] | None = None
    tiles: Callable[[int, int], None] | None = None


def translate(request: TranslateRequest, display: Display | None = None) -> TranslateOutcome:
    """Run `cgdistill translate`: every image and video of ``request`` into ``request.output``.

    Bad flags, inputs and models are refused in one sentence before any work. An image that fails is
    listed in the outcome and the rest go on; a lone video's error is raised as it is (on every
    process), one of several is listed. Ctrl-C in a video raises :class:`video.Interrupted` after
    closing what was done into a playable partial file.
    """
    rank, world_size, _ = torchrun_ranks()
    display = display if display is not None and rank == 0 else Display()
    try:
        setup, runner, work = _prepare(request, world_size, display)
        display.started(setup)
        share = work.share(rank, world_size)
        sole_video = len(work.videos) == 1
        videos, errors, fatal = _translate_videos(
            runner, share, request, display, alone=sole_video, sole_output=sole_video and not work.images
        )
        images = TranslateResult()
        if fatal is None:
            with display.images(len(share.images)) as progress:
                images = translate_files(
                    runner,
                    [job.source for job in share.images],
                    [job.output for job in share.images],
                    max_side=request.max_side,
                    batch_size=request.batch_size,
                    progress=progress.done,
                    tile_progress=progress.tiles,
                )
        mine = TranslateOutcome(
            images, len(share.images), videos, errors, len(share.videos), work.renamed, runner.notes, rank,
            fatal=(fatal.message, fatal.exit_code) if fatal is not None else None,
        )  # fmt: skip
        outcomes = gather(mine)
        if fatal is not None:
            raise fatal
        for other in outcomes:
            if other.fatal is not None:
                raise CgdistillError(*other.fatal)
        return _merged(outcomes, rank, work)
    finally:
        if world_size > 1:
            leave_process_group()


def _prepare(request: TranslateRequest, world_size: int, display: Display) -> tuple[Setup, Runner, Worklist]:
    """Every check, then the model, device, threads, engine and names: all before the first image runs."""
    check_engine(request.engine)
    tile = parse_tile(request.tile)
    budget = parse_size(request.max_memory) if request.max_memory is not None else None
    check_sizes(request.max_side, request.batch_size)
    if any(is_video_file(path) for path in request.inputs):
        check_video_options(request.video_codec, request.video_quality)
    videos = find_videos(request.inputs)
    resolved = resolve_generator(request.model, request.direction, role="any")
    device = device_for_model(resolved.path, request.device)
    if world_size > 1:
        join_process_group(request.device, device)
    if device.type == "cpu":
        threads.configure(request.threads)
    check_model_engine(request.engine, resolved.path, device)
    work = plan_work(request.inputs, videos, request.output, resolved.direction, recursive=request.recursive)
    if not work.images and not work.videos:
        raise WorkFailed(
            "No image files found in the given inputs" + ("" if request.recursive else " (try --recursive)") + "."
        )
    prepare_output_dir(request.output, "--output")  # before the model is loaded and anything is translated
    workload = _workload(work, request)
    with display.choosing(workload):
        runner = runner_for_file(
            resolved.path, device, engine=request.engine, tile=tile, max_memory=budget, work=workload
        )
    return Setup(resolved, resolved.direction, device, runner.engine, world_size), runner, work


def _workload(work: Worklist, request: TranslateRequest) -> Workload | None:
    """What the first forward passes will hold, for ``--engine auto`` and ``--tile auto`` to decide on: the
    first video's frames (videos run first) at ``--batch-size``, else the first image as translate fits it
    to ``--max-side`` (an EXIF rotation swaps the sides, not the pixel count). None when its header
    cannot be read: that file fails on its own later, and the choice is made on the default size."""
    try:
        if work.videos:
            width, height = frame_size(work.videos[0].source, request.max_side)
            return Workload(height, width, request.batch_size, _passes(work, (width, height), request))
        width, height = fit_max_side(*probe_image(work.images[0].source), request.max_side)
        return Workload(height, width, min(request.batch_size, len(work.images)))
    except CgdistillError:
        return None


def _passes(work: Worklist, size: tuple[int, int], request: TranslateRequest) -> int:
    """Forward passes the videos of frame ``size`` will take (their headers' frame counts at ``--batch-size``):
    what decides whether compiling the model for that shape pays (``compiled``)."""
    frames = 0
    for video in work.videos:
        try:
            video_size, count = frame_size_and_count(video.source, request.max_side)
        except CgdistillError:
            continue  # that file fails on its own later
        frames += count if video_size == size else 0
    return max(1, -(-frames // request.batch_size))


def _translate_videos(
    runner: Runner,
    share: Worklist,
    request: TranslateRequest,
    display: Display,
    *,
    alone: bool,
    sole_output: bool,
) -> tuple[list[VideoResult], list[str], CgdistillError | None]:
    """This process's videos, each with its own progress: the results, the errors of those that failed
    (one sentence each), and the error of the call's only video (``alone``), which ends the call.
    ``sole_output``: that video is all the call translates (its early end is then the call's sentence)."""
    results: list[VideoResult] = []
    errors: list[str] = []
    for job in share.videos:
        try:
            with display.video(job.source) as progress:
                result = translate_video(
                    runner,
                    job.source,
                    job.output,
                    max_side=request.max_side,
                    batch_size=request.batch_size,
                    codec=request.video_codec,
                    quality=request.video_quality,
                    stats=request.stats,
                    progress=progress.done,
                    tile_progress=progress.tiles,
                )
        except CgdistillError as exc:  # Ctrl-C (video.Interrupted) is no CgdistillError: it goes up as it is
            if alone:
                return results, errors, exc
            display.video_failed(job.source, exc.message)
            errors.append(exc.message)
            continue
        results.append(result)
        display.video_done(result, sole_output)
    return results, errors, None


def _merged(outcomes: list[TranslateOutcome], rank: int, work: Worklist) -> TranslateOutcome:
    """One outcome from every process's own (a single process's as it is), in input order."""
    if len(outcomes) == 1:
        return outcomes[0]
    images_order = {job.source: index for index, job in enumerate(work.images)}
    videos_order = {job.source: index for index, job in enumerate(work.videos)}

    def images_in_order(pairs):
        return sorted(pairs, key=lambda pair: images_order[pair[0]])

    images = TranslateResult(
        written=images_in_order(pair for o in outcomes for pair in o.images.written),
        failures=images_in_order(pair for o in outcomes for pair in o.images.failures),
        seconds=max(o.images.seconds for o in outcomes),
    )
    notes: list[str] = []
    for line in (line for o in outcomes for line in o.notes):
        if line not in notes:
            notes.append(line)
    others = [o for o in outcomes if o.rank != rank]
    return TranslateOutcome(
        images,
        sum(o.image_count for o in outcomes),
        sorted((v for o in outcomes for v in o.videos), key=lambda v: videos_order[v.source]),
        [error for o in outcomes for error in o.video_errors],
        sum(o.video_count for o in outcomes),
        outcomes[0].renamed,
        notes,
        rank,
        videos_elsewhere=[v for o in others for v in o.videos],
        video_errors_elsewhere=[error for o in others for error in o.video_errors],
    )
