"""A video file through a :class:`~cgdistill.policy.Runner`: every frame translated as images are, sound kept.

Three stages overlap (``videoio``): a reader thread decodes, turns frames upright and sizes them
for the model; the calling thread hands batches of frames to the runner, which runs them in one pass
or, for frames over the memory budget, in exact tiles (translate's policy, the same as for images); a
writer thread encodes the translated frames with the input's own timestamps (variable frame rates
stay variable) and muxes the audio packets unchanged beside them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from cgdistill.errors import CgdistillError
from cgdistill.flicker import Flicker
from cgdistill.fsutil import atomic_path
from cgdistill.options import DEFAULT_BATCH_SIZE, DEFAULT_MAX_SIDE, DEFAULT_VIDEO_CODEC, DEFAULT_VIDEO_QUALITY
from cgdistill.policy import Runner, check_sizes
from cgdistill.videoio import (
    END,
    Frame,
    Reader,
    Writer,
    add_video_stream,
    ffmpeg_reason,
    no_video_stream,
    open_input,
    require_av,
)


@dataclass
class VideoResult:
    """What a video translation did: where it wrote, how many frames, where the input stopped, how fast."""

    source: Path
    output: Path
    frames: int
    size: tuple[int, int]  # (width, height) of the translated frames
    audio_streams: int
    seconds: float
    expected_frames: int | None = None  # what the container announces, when it does
    stopped: str | None = None  # where and why decoding stopped early, as the end of a sentence
    skipped: str | None = None  # damaged packets passed over (the frames around them were kept)
    flicker: Flicker | None = None

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def stopped_sentence(self) -> str:
        """Where the input ended early and what the output holds, as one sentence (``stopped`` is set)."""
        held = f"{self.frames} frame{'s' if self.frames != 1 else ''}"
        return f"{self.source} stopped decoding {self.stopped}; {self.output} holds the {held} before it."


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a video: the frames translated so far were closed into a playable ``partial`` file."""

    def __init__(self, partial: Path, frames: int) -> None:
        super().__init__(f"{partial} holds the first {frames} frames")
        self.partial = partial
        self.frames = frames


def _ended_early(reader: Reader, info: _Input) -> str | None:
    """Where decoding stopped, when the last frame falls short of the duration the header announces.

    Containers such as Matroska announce no frame count, only a duration; a last frame more than two
    frame intervals before it means the rest of the file is missing.
    """
    if reader.last_pts is None or not info.seconds:
        return None
    reached = float((reader.last_pts - (info.stream.start_time or 0)) * info.time_base)
    if reached + 2 / float(info.rate) < info.seconds:
        return f"{reader._where()}, {info.seconds - reached:.2f} s before the end its header announces ({info.seconds:.2f} s)"
    return None


def check_video_options(codec: str, quality: int) -> None:
    """Refuse a bad ``--video-quality`` before any work (the codec is checked when the output opens)."""
    if not 0 <= quality <= 51:
        raise CgdistillError(f"--video-quality must be between 0 (best) and 51, got {quality}.")
    if not codec:
        raise CgdistillError("--video-codec is empty; use libx264 (the default).")


def translate_video(
    runner: Runner,
    source: Path | str,
    target: Path | str,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    codec: str = DEFAULT_VIDEO_CODEC,
    quality: int = DEFAULT_VIDEO_QUALITY,
    stats: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    tile_progress: Callable[[int, int], None] | None = None,
) -> VideoResult:
    """Translate every frame of ``source`` into ``target`` (named by ``worklist``: ``.mp4``, or ``.mkv``
    for audio that MP4 cannot hold).

    Same frame count and timestamps as the input, frames turned upright as a player shows them and
    fitted to ``max_side`` (even sides, for 4:2:0), audio streams copied packet for packet. The file
    is written under a temporary name and renamed when complete. A damaged or truncated input gives
    every frame that decodes and ``stopped`` says where it ended; Ctrl-C closes the frames done so far
    into ``<target stem>.partial<suffix>`` and raises :class:`Interrupted`. ``progress(done, total)``
    is called on this thread (``total`` is the announced frame count, else one estimated from the
    duration, else None); ``tile_progress`` counts the tiles of a frame that runs in tiles.
    """
    av = require_av(source)
    source, target = Path(source), Path(target)
    check_video_options(codec, quality)
    check_sizes(max_side, batch_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    container = open_input(av, source)
    try:
        if not container.streams.video:
            raise no_video_stream(source)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-parallel decoding where the codec allows it
        audio_streams = list(container.streams.audio)
        reader = Reader(container, stream, audio_streams, max_side)
        reader.start()
        try:
            info = _Input.of(source, container, stream, audio_streams)
            options = _Options(batch_size, codec, quality, stats, progress, tile_progress)
            return _run(av, runner, reader, info, target, options)
        finally:
            reader.stop.set()
            reader.join()
    finally:
        container.close()


@dataclass
class _Input:
    """What the input container says about itself, read once before decoding."""

    source: Path
    stream: object  # av.VideoStream
    audio_streams: list
    rate: Fraction  # the nominal frame rate (timestamps rule; this only fills gaps and guides rate control)
    time_base: Fraction
    expected: int | None  # the announced frame count
    seconds: float  # the announced duration, 0 when unknown

    @classmethod
    def of(cls, source: Path, container, stream, audio_streams: list) -> _Input:
        time_base = stream.time_base or Fraction(1, 1000)
        # The stream's own duration, else the container's (in AV_TIME_BASE, microseconds).
        seconds = float(stream.duration * time_base) if stream.duration else (container.duration or 0) / 1_000_000
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        return cls(source, stream, audio_streams, rate, time_base, stream.frames or None, seconds)


@dataclass
class _Options:
    batch_size: int
    codec: str
    quality: int
    stats: bool
    progress: Callable[[int, int | None], None] | None
    tile_progress: Callable[[int, int], None] | None


def _first_frame(reader: Reader, info: _Input) -> Frame:
    """The first decoded frame, or one sentence saying why there is none."""
    first = reader.frames.get()
    if first is END:
        if reader.error is not None:
            raise reader.error
        why = reader.stopped or (f"{reader.first_decode_error}" if reader.decode_errors else "it holds no frames")
        raise CgdistillError(f"No frame of {info.source} decodes ({why}); pass a video file FFmpeg can play.")
    return first


def _run(av, runner: Runner, reader: Reader, info: _Input, target: Path, options: _Options) -> VideoResult:
    start = time.perf_counter()
    first = _first_frame(reader, info)
    size = (first.pixels.shape[1], first.pixels.shape[0])
    frame_step = max(1, round(1 / (info.rate * info.time_base)))
    partial = target.with_name(f"{target.stem}.partial{target.suffix}")
    with atomic_path(target) as tmp:
        output = av.open(str(tmp), "w", format="mp4" if target.suffix == ".mp4" else "matroska")
        writer = None
        try:
            video_out = add_video_stream(av, output, options.codec, options.quality, info.rate, info.time_base, size)
            audio_map = {a.index: output.add_stream_from_template(a) for a in info.audio_streams}
            writer = Writer(output, video_out, audio_map, reader.audio, frame_step, options.stats)
            writer.start()
            try:
                _translate_frames(runner, reader, writer, first, info, options)
            except KeyboardInterrupt:
                reader.stop.set()
                writer.put(END)
                writer.join()
                output.close()
                output = None
                os.replace(tmp, partial)
                raise Interrupted(partial, writer.written) from None
            writer.put(END)
            writer.join()
            writer_error = writer.error
        finally:
            if output is not None:
                if writer is not None and writer.is_alive():
                    writer.put(END)
                    writer.join()
                output.close()
        if writer_error is not None:
            raise CgdistillError(
                f"Cannot encode {target} with --video-codec {options.codec} ({ffmpeg_reason(writer_error)})."
            ) from writer_error
    if reader.error is not None:
        raise reader.error
    skipped = None
    if reader.decode_errors:
        skipped = f"{reader.decode_errors} damaged packet{'s' if reader.decode_errors != 1 else ''} ({reader.first_decode_error})"
    return VideoResult(
        source=info.source,
        output=target,
        frames=writer.written,
        size=size,
        audio_streams=len(info.audio_streams),
        seconds=time.perf_counter() - start,
        expected_frames=info.expected,
        stopped=_where_stopped(reader, info),
        skipped=skipped,
        flicker=writer.meter.result() if writer.meter is not None else None,
    )


def _translate_frames(
    runner: Runner, reader: Reader, writer: Writer, first: Frame, info: _Input, options: _Options
) -> None:
    """Batches of decoded frames through the runner, each translated frame handed to the writer in order."""
    estimate = round(info.seconds * info.rate) or None  # for the progress bar when no frame count is announced
    done = 0
    pending = [first]
    finished = False
    while not finished:
        while len(pending) < options.batch_size:
            item = reader.frames.get()
            if item is END:
                finished = True
                break
            pending.append(item)
        if pending:
            chunks = runner.translate_same_size([frame.pixels for frame in pending], options.tile_progress)
            translated = [pixels for chunk in chunks for pixels in chunk]
            for frame, pixels in zip(pending, translated, strict=True):
                writer.put((frame.pixels, pixels, frame.pts))
            done += len(pending)
            pending = []
            if options.progress is not None:
                options.progress(done, info.expected or estimate)
        if writer.error is not None:
            return


def _where_stopped(reader: Reader, info: _Input) -> str | None:
    """Where decoding stopped early, as the end of a sentence; None when every announced frame came."""
    if reader.stopped is not None:
        return reader.stopped
    if info.expected is not None and reader.decoded < info.expected:
        missing = info.expected - reader.decoded
        return f"{reader._where()}, {missing} frames before the {info.expected} its header announces"
    if info.expected is None:
        return _ended_early(reader, info)
    return None
