"""Video files through PyAV (the ``video`` extra): which inputs are videos, opening and probing them, and the
decode and encode threads that run beside the model.

PyAV releases the GIL while FFmpeg decodes and encodes, so a reader thread (demux, decode, turn
frames upright, size them for the model) and a writer thread (encode with the input's own
timestamps, mux the audio packets unchanged) overlap with the model on the calling thread. Nothing
here calls an ``ffmpeg`` binary.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from cgdistill.errors import CgdistillError
from cgdistill.flicker import FlickerMeter
from cgdistill.forward import fit_max_side

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


def output_suffix(audio_codecs: list[str]) -> str:
    """``.mp4``, or ``.mkv`` when an audio stream's codec cannot go into MP4 unchanged."""
    return ".mp4" if all(name in MP4_AUDIO_CODECS for name in audio_codecs) else ".mkv"


def even_size(width: int, height: int) -> tuple[int, int]:
    """Round down to even sides: 4:2:0 chroma (H.264's and every player's default) halves both."""
    return max(2, width - width % 2), max(2, height - height % 2)


def upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded frame as a player would: ``rotation`` is the counter-clockwise display rotation."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


@dataclass
class Frame:
    pts: int | None
    pixels: np.ndarray  # HxWx3 uint8, upright, at the model's size


END = object()


class Reader(threading.Thread):
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
        return upright(pixels, rotation)

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
                    self.stopped = f"{self._where()} ({ffmpeg_reason(exc)})"
                    break
                if packet.stream.type == "audio":
                    if packet.dts is not None:  # the flush packet at the end carries nothing to copy
                        self.audio.append(packet)
                    continue
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:  # a damaged packet: keep every frame that still decodes
                    self.decode_errors += 1
                    self.first_decode_error = self.first_decode_error or ffmpeg_reason(exc)
                    continue
                for frame in frames:
                    pixels = self._convert(frame)
                    if not self._put(Frame(frame.pts, pixels)):
                        return
                    self.decoded += 1
                    self.last_pts = frame.pts if frame.pts is not None else self.last_pts
        except Exception as exc:  # a frame FFmpeg or PyAV cannot hand over: keep what came before it
            self.stopped = f"{self._where()} ({ffmpeg_reason(exc)})"
        except BaseException as exc:  # surfaced on the calling thread, which owns error reporting
            self.error = exc
        finally:
            self._put(END)


def ffmpeg_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip().rstrip(".") or type(exc).__name__


class Writer(threading.Thread):
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
                if item is END:
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
                if self.items.get() is END:
                    break

    def put(self, item) -> None:
        while self.is_alive():
            try:
                self.items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def open_input(av, source: Path):
    try:
        return av.open(str(source), "r")
    except av.FFmpegError as exc:
        raise CgdistillError(
            f"Cannot read the video {source} ({ffmpeg_reason(exc)}); pass a video file FFmpeg can open."
        ) from None


def add_video_stream(av, container, codec: str, quality: int, rate: Fraction, time_base, size: tuple[int, int]):
    try:
        stream = container.add_stream(codec, rate=rate)
    except (av.FFmpegError, ValueError) as exc:
        raise CgdistillError(
            f"--video-codec {codec} is not an encoder this FFmpeg has ({ffmpeg_reason(exc)}); use libx264 (the default), "
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


def no_video_stream(source: Path) -> CgdistillError:
    return CgdistillError(f"{source} holds no video stream; pass a video file, or images.")


@contextmanager
def _opened_video(source: Path | str) -> Iterator:
    """``source`` opened by FFmpeg, refused in one sentence when it holds no video stream; closed after."""
    av = require_av(source)
    container = open_input(av, Path(source))
    try:
        if not container.streams.video:
            raise no_video_stream(Path(source))
        yield container
    finally:
        container.close()


def probe_video(source: Path | str) -> str:
    """The suffix the translation of ``source`` is written with (:func:`output_suffix`); a video FFmpeg
    cannot open, or one without a video stream, is refused before a model is loaded."""
    with _opened_video(source) as container:
        return output_suffix([stream.codec_context.name for stream in container.streams.audio])


def _fitted_size(container, max_side: int) -> tuple[int, int]:
    context = container.streams.video[0].codec_context
    return even_size(*fit_max_side(context.width, context.height, max_side))


def frame_size(source: Path | str, max_side: int) -> tuple[int, int]:
    """(width, height) of the frames ``translate`` gives the model for ``source``, from the stream's header:
    fitted to ``max_side`` with even sides, as :class:`Reader` fits them (a display rotation would swap
    the two; the pixel count, all the engine choice needs, is the same)."""
    with _opened_video(source) as container:
        return _fitted_size(container, max_side)


def frame_size_and_count(source: Path | str, max_side: int) -> tuple[tuple[int, int], int]:
    """:func:`frame_size` and the frames in the video stream as its header states them (or duration x
    rate; 0 when unknown), from one opening of the file."""
    with _opened_video(source) as container:
        stream = container.streams.video[0]
        if stream.frames:
            frames = int(stream.frames)
        elif stream.duration is not None and stream.time_base is not None and stream.average_rate:
            frames = int(stream.duration * stream.time_base * stream.average_rate)
        elif container.duration is not None and stream.average_rate:
            frames = int(container.duration / 1_000_000 * stream.average_rate)
        else:
            frames = 0
        return _fitted_size(container, max_side), frames
