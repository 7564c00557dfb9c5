"""Video in, translated video out: every frame through the same batch forward as images, sound kept.

Three stages overlap (PyAV releases the GIL while FFmpeg decodes and encodes): a reader thread
demuxes and decodes the input, turns frames upright (rotation metadata) and sizes them for the
model; the calling thread runs batches through :func:`cgdistill.translate.translate_batch`; a writer
thread encodes the translated frames with the input's own timestamps (variable frame rates stay
variable) and muxes the audio packets unchanged beside them. PyAV is the optional extra
``cgdistill[video]``; nothing here calls an ``ffmpeg`` binary.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cgdistill import threads
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_path, prepare_output_dir
from cgdistill.options import DEFAULT_BATCH_SIZE, DEFAULT_MAX_SIDE, DEFAULT_VIDEO_CODEC, DEFAULT_VIDEO_QUALITY
from cgdistill.translate import fit_max_side, plan_outputs, prepare_generator, translate_batch

# Containers named directly on the command line that are read as video (a .gif only when animated).
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".3gp"}
)
# Audio codecs the MP4 muxer takes as they are; any other audio is copied into Matroska instead.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "opus", "flac", "alac"})
# Encoders whose quality knob is x264's constant rate factor (lower is better, 0-51).
CRF_ENCODERS = frozenset({"libx264", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1"})
# x264/x265's "veryfast": 3.6 ms a 640x480 frame against 9 ms for "medium" (one EPYC core, CRF 18, a
# similar file size), so encoding stays a few percent of a fast student's time (docs/benchmarks.md).
X264_SPEED = {"libx264": {"preset": "veryfast"}, "libx265": {"preset": "veryfast"}}
QUEUE_FRAMES = 8  # frames held between stages beyond one batch: enough to ride out jitter, bounded memory
INSTALL_HINT = "pip install 'cgdistill[video]'"


def is_video_file(path: Path | str) -> bool:
    """True for a file with a video container's suffix, or an animated GIF (a still GIF stays an image)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return os.path.isfile(path)
    if suffix == ".gif" and os.path.isfile(path):
        from PIL import Image

        try:
            with Image.open(path) as image:
                return getattr(image, "n_frames", 1) > 1
        except Exception:  # an unreadable GIF is reported by the image path, by name
            return False
    return False


def require_av(source: Path | str):
    """The ``av`` module, or one sentence saying how to install it."""
    try:
        import av
    except ImportError:
        raise CgdistillError(
            f"Translating the video {source} needs PyAV, which is not installed; run `{INSTALL_HINT}`."
        ) from None
    return av


@dataclass
class Flicker:
    """Temporal instability a model adds: how much consecutive output frames differ, beyond the input's change.

    Both are the mean absolute difference between consecutive frames in 8-bit levels (0-255), over
    all pixels and channels, at the size the model sees. On a static-camera clip the input changes
    little, so a model that treats each frame on its own and swings with small input changes shows up
    as a positive ``value``.
    """

    output_change: float
    input_change: float
    pairs: int

    @property
    def value(self) -> float:
        return self.output_change - self.input_change


class FlickerMeter:
    """Accumulates :class:`Flicker` one frame pair at a time (constant memory)."""

    def __init__(self) -> None:
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self._input_sum = 0.0
        self._output_sum = 0.0
        self.pairs = 0

    def add(self, source: np.ndarray, translated: np.ndarray) -> None:
        if self._previous is not None:
            self._input_sum += mean_abs_change(self._previous[0], source)
            self._output_sum += mean_abs_change(self._previous[1], translated)
            self.pairs += 1
        self._previous = (source, translated)

    def result(self) -> Flicker | None:
        if self.pairs == 0:
            return None
        return Flicker(self._output_sum / self.pairs, self._input_sum / self.pairs, self.pairs)


def mean_abs_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, in levels."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a video: the frames translated so far were closed into a playable ``partial`` file."""

    def __init__(self, partial: Path, frames: int) -> None:
        super().__init__(f"{partial} holds the first {frames} frames")
        self.partial = partial
        self.frames = frames


def output_suffix(audio_codecs: list[str]) -> str:
    """``.mp4``, or ``.mkv`` when an audio stream's codec cannot go into MP4 unchanged."""
    return ".mp4" if all(name in MP4_AUDIO_CODECS for name in audio_codecs) else ".mkv"


def even_size(width: int, height: int) -> tuple[int, int]:
    """Round down to even sides: 4:2:0 chroma (H.264's and every player's default) halves both."""
    return max(2, width - width % 2), max(2, height - height % 2)


def _upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded frame as a player would: ``rotation`` is the counter-clockwise display rotation."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


@dataclass
class _Frame:
    pts: int | None
    pixels: np.ndarray  # HxWx3 uint8, upright, at the model's size


_END = object()


class _Reader(threading.Thread):
    """Demux and decode on its own thread: video frames into ``frames``, audio packets into ``audio``."""

    def __init__(self, container, stream, audio_streams, max_side: int) -> None:
        super().__init__(name="video-decode", daemon=True)
        self.container, self.stream, self.audio_streams = container, stream, audio_streams
        self.max_side = max_side
        self.frames: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.audio: deque = deque()
        self.stop = threading.Event()
        self.decoded = 0
        self.stopped: str | None = None
        self.decode_errors = 0
        self.first_decode_error: str | None = None
        self.last_pts: int | None = None
        self.size: tuple[int, int] | None = None  # upright (width, height) given to the model
        self.error: BaseException | None = None

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _convert(self, frame) -> np.ndarray:
        rotation = frame.rotation
        sideways = round(rotation / 90) % 2 == 1
        if self.size is None:
            width, height = (frame.height, frame.width) if sideways else (frame.width, frame.height)
            self.size = even_size(*fit_max_side(width, height, self.max_side))
        width, height = (self.size[1], self.size[0]) if sideways else self.size
        kwargs = {}
        if frame.color_range:  # full-range (JPEG) input would otherwise be read as TV range
            kwargs["src_color_range"] = frame.color_range
        if (frame.width, frame.height) != (width, height):
            kwargs.update(width=width, height=height, interpolation="LANCZOS")
        pixels = frame.reformat(format="rgb24", **kwargs).to_ndarray()
        return _upright(pixels, rotation)

    def _where(self) -> str:
        seconds = ""
        if self.last_pts is not None and self.stream.time_base:
            seconds = f" at {float(self.last_pts * self.stream.time_base):.2f} s"
        return f"after frame {self.decoded}{seconds}"

    def run(self) -> None:
        import av

        try:
            packets = self.container.demux(self.stream, *self.audio_streams)
            while not self.stop.is_set():
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as exc:
                    self.stopped = f"{self._where()} ({_ffmpeg_reason(exc)})"
                    break
                if packet.stream.type == "audio":
                    if packet.dts is not None:  # the flush packet at the end carries nothing to copy
                        self.audio.append(packet)
                    continue
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:  # a damaged packet: keep every frame that still decodes
                    self.decode_errors += 1
                    self.first_decode_error = self.first_decode_error or _ffmpeg_reason(exc)
                    continue
                for frame in frames:
                    pixels = self._convert(frame)
                    if not self._put(_Frame(frame.pts, pixels)):
                        return
                    self.decoded += 1
                    self.last_pts = frame.pts if frame.pts is not None else self.last_pts
        except Exception as exc:  # a frame FFmpeg or PyAV cannot hand over: keep what came before it
            self.stopped = f"{self._where()} ({_ffmpeg_reason(exc)})"
        except BaseException as exc:  # surfaced on the calling thread, which owns error reporting
            self.error = exc
        finally:
            self._put(_END)


def _ended_early(reader: _Reader, info: _Input) -> str | None:
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


def _ffmpeg_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip().rstrip(".") or type(exc).__name__


class _Writer(threading.Thread):
    """Encode translated frames with their input timestamps and mux them with the copied audio packets."""

    def __init__(self, container, stream, audio_map: dict, audio: deque, frame_step: int, stats: bool) -> None:
        super().__init__(name="video-encode", daemon=True)
        self.container, self.stream, self.audio_map, self.audio = container, stream, audio_map, audio
        self.frame_step = frame_step
        self.items: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.written = 0
        self.meter = FlickerMeter() if stats else None
        self.error: BaseException | None = None
        self._last_pts: int | None = None

    def _mux_audio(self) -> None:
        while self.audio:
            packet = self.audio.popleft()
            packet.stream = self.audio_map[packet.stream.index]
            self.container.mux(packet)

    def _pts(self, pts: int | None) -> int:
        # Encoders need strictly increasing timestamps; a missing or repeated one follows the last by a frame.
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self.frame_step
        elif self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def run(self) -> None:
        import av

        try:
            while True:
                item = self.items.get()
                if item is _END:
                    break
                source, translated, pts = item
                frame = av.VideoFrame.from_ndarray(translated, format="rgb24")
                frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
                frame.pts = self._pts(pts)
                frame.time_base = self.stream.time_base
                self.container.mux(self.stream.encode(frame))
                self.written += 1
                if self.meter is not None:
                    self.meter.add(source, translated)
                self._mux_audio()
            self.container.mux(self.stream.encode(None))
            self._mux_audio()
        except BaseException as exc:
            self.error = exc
            while True:  # keep the producer from blocking on a full queue
                if self.items.get() is _END:
                    break

    def put(self, item) -> None:
        while self.is_alive():
            try:
                self.items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def _open_input(av, source: Path):
    try:
        return av.open(str(source), "r")
    except av.FFmpegError as exc:
        raise CgdistillError(
            f"Cannot read the video {source} ({_ffmpeg_reason(exc)}); pass a video file FFmpeg can open."
        ) from None


def _add_video_stream(av, container, codec: str, quality: int, rate: Fraction, time_base, size: tuple[int, int]):
    try:
        stream = container.add_stream(codec, rate=rate)
    except (av.FFmpegError, ValueError) as exc:
        raise CgdistillError(
            f"--video-codec {codec} is not an encoder this FFmpeg has ({_ffmpeg_reason(exc)}); use libx264 (the default), "
            "libx265, libvpx-vp9 or mpeg4."
        ) from None
    if stream.type != "video":
        raise CgdistillError(f"--video-codec {codec} is not a video encoder; use libx264 (the default) or libx265.")
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    # Tag what the writer converted with, so players read the colours back as they were made.
    stream.codec_context.colorspace = 1  # BT.709
    stream.codec_context.color_primaries = 1
    stream.codec_context.color_trc = 1
    stream.codec_context.color_range = 1  # TV (limited) range
    if codec in CRF_ENCODERS:
        stream.options = (
            {"crf": str(quality)} | X264_SPEED.get(codec, {}) | ({"b": "0"} if codec.startswith("libvpx") else {})
        )
    else:  # encoders without a CRF take a fixed quantiser on the same scale, clamped to theirs
        stream.codec_context.qscale = max(1, min(31, round(quality * 31 / 51)))
        stream.codec_context.flags |= 2  # AV_CODEC_FLAG_QSCALE
    return stream


def _no_video_stream(source: Path) -> CgdistillError:
    return CgdistillError(f"{source} holds no video stream; pass a video file, or images.")


def probe_video(source: Path | str) -> None:
    """Refuse, before a model is loaded, a video FFmpeg cannot open or one without a video stream."""
    av = require_av(source)
    container = _open_input(av, Path(source))
    try:
        if not container.streams.video:
            raise _no_video_stream(Path(source))
    finally:
        container.close()


def check_video_options(codec: str, quality: int) -> None:
    """Refuse a bad ``--video-quality`` before any work (the codec is checked when the output opens)."""
    if not 0 <= quality <= 51:
        raise CgdistillError(f"--video-quality must be between 0 (best) and 51, got {quality}.")
    if not codec:
        raise CgdistillError("--video-codec is empty; use libx264 (the default).")


def translate_video(
    generator: nn.Module,
    source: Path | str,
    output_dir: Path | str,
    direction: str,
    *,
    device: torch.device,
    max_side: int = DEFAULT_MAX_SIDE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    codec: str = DEFAULT_VIDEO_CODEC,
    quality: int = DEFAULT_VIDEO_QUALITY,
    stats: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    taken: set[Path] | None = None,
) -> VideoResult:
    """Translate every frame of ``source`` into ``<output_dir>/<stem>_<direction>.mp4`` (``.mkv`` for audio MP4 cannot hold).

    Same frame count and timestamps as the input, frames turned upright as a player shows them and
    fitted to ``max_side`` (even sides, for 4:2:0), audio streams copied packet for packet. The file
    is written under a temporary name and renamed when complete. A damaged or truncated input gives
    every frame that decodes and ``stopped`` says where it ended; Ctrl-C closes the frames done so far
    into ``<stem>_<direction>.partial.mp4`` and raises :class:`Interrupted`. ``progress(done, total)``
    is called on this thread (``total`` is the announced frame count, else one estimated from the
    duration, else None). ``taken`` holds the outputs of earlier videos of the same call (resolved):
    a video with the same stem gets ``-2``, ``-3``, ... instead of overwriting one; its own is added.
    """
    av = require_av(source)
    source = Path(source)
    check_video_options(codec, quality)
    if batch_size < 1:
        raise CgdistillError(f"--batch-size must be at least 1, got {batch_size}.")
    if max_side < 0:
        raise CgdistillError(f"--max-side must be 0 (no limit) or positive, got {max_side}.")
    output_dir = prepare_output_dir(output_dir, "--output")
    model = prepare_generator(generator, device)
    container = _open_input(av, source)
    try:
        if not container.streams.video:
            raise _no_video_stream(source)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-parallel decoding where the codec allows it
        audio_streams = list(container.streams.audio)
        suffix = output_suffix([s.codec_context.name for s in audio_streams])
        target = _plan_target(source, output_dir, direction, suffix, taken)
        reader = _Reader(container, stream, audio_streams, max_side)
        reader.start()
        try:
            info = _Input.of(source, container, stream, audio_streams)
            return _run(av, model, device, reader, info, target, _Options(batch_size, codec, quality, stats, progress))
        finally:
            reader.stop.set()
            reader.join()
    finally:
        container.close()


def _plan_target(source: Path, output_dir: Path, direction: str, suffix: str, taken: set[Path] | None) -> Path:
    """translate's output name for ``source``, numbered past the names in ``taken``."""
    (target,), _ = plan_outputs([source], output_dir, direction, suffix=suffix)
    taken = set() if taken is None else taken
    index = 1
    while target.resolve() in taken:
        index += 1
        target = output_dir / f"{source.stem}_{direction}-{index}{suffix}"
    taken.add(target.resolve())
    return target


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


def _run(av, model, device, reader: _Reader, info: _Input, target: Path, options: _Options) -> VideoResult:
    start = time.perf_counter()
    first = reader.frames.get()
    if first is _END:
        if reader.error is not None:
            raise reader.error
        why = reader.stopped or (f"{reader.first_decode_error}" if reader.decode_errors else "it holds no frames")
        raise CgdistillError(f"No frame of {info.source} decodes ({why}); pass a video file FFmpeg can play.")
    size = (first.pixels.shape[1], first.pixels.shape[0])
    frame_step = max(1, round(1 / (info.rate * info.time_base)))
    estimate = round(info.seconds * info.rate) or None  # for the progress bar when no frame count is announced
    batch_size, codec, progress = options.batch_size, options.codec, options.progress
    partial = target.with_name(f"{target.stem}.partial{target.suffix}")
    with atomic_path(target) as tmp:
        output = av.open(str(tmp), "w", format="mp4" if target.suffix == ".mp4" else "matroska")
        writer = None
        try:
            video_out = _add_video_stream(av, output, codec, options.quality, info.rate, info.time_base, size)
            audio_map = {a.index: output.add_stream_from_template(a) for a in info.audio_streams}
            writer = _Writer(output, video_out, audio_map, reader.audio, frame_step, options.stats)
            writer.start()
            done = 0
            pending = [first]
            finished = False
            try:
                while not finished:
                    while len(pending) < batch_size:
                        item = reader.frames.get()
                        if item is _END:
                            finished = True
                            break
                        pending.append(item)
                    if pending:
                        batch = torch.from_numpy(np.stack([f.pixels for f in pending]))
                        if device.type == "cpu":
                            threads.tick()  # as for images: a job that started or ended beside us
                        translated = translate_batch(model, batch, device).numpy()
                        for frame, pixels in zip(pending, translated, strict=True):
                            writer.put((frame.pixels, pixels, frame.pts))
                        done += len(pending)
                        pending = []
                        if progress is not None:
                            progress(done, info.expected or estimate)
                    if writer.error is not None:
                        break
            except KeyboardInterrupt:
                reader.stop.set()
                writer.put(_END)
                writer.join()
                output.close()
                output = None
                os.replace(tmp, partial)
                raise Interrupted(partial, writer.written) from None
            writer.put(_END)
            writer.join()
            writer_error = writer.error
        finally:
            if output is not None:
                if writer is not None and writer.is_alive():
                    writer.put(_END)
                    writer.join()
                output.close()
        if writer_error is not None:
            raise CgdistillError(
                f"Cannot encode {target} with --video-codec {codec} ({_ffmpeg_reason(writer_error)})."
            ) from writer_error
    if reader.error is not None:
        raise reader.error
    stopped = reader.stopped
    if stopped is None and info.expected is not None and reader.decoded < info.expected:
        missing = info.expected - reader.decoded
        stopped = f"{reader._where()}, {missing} frames before the {info.expected} its header announces"
    elif stopped is None and info.expected is None:
        stopped = _ended_early(reader, info)
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
        stopped=stopped,
        skipped=skipped,
        flicker=writer.meter.result() if writer.meter is not None else None,
    )
