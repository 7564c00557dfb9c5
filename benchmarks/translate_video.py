"""Video translate speed: frames/s end to end (decode + model + encode, as `cgdistill translate clip.mp4`)
beside the model alone on the same frames, for the teacher and each student preset's shape.

Usage: .venv/bin/python benchmarks/translate_video.py [--sizes 320x240,640x480] [--frames 48]
       [--teacher-frames 8] [--batch-size 4] [--repeats 3] [--threads N] [--engine torch,onnxruntime,auto]
       [--photo IMAGE]

Goals (issue 23): the fastest preset >= 25 frames/s end to end at 320x240 on a 2-core CPU, and at
640x480 the whole pipeline costs <= 15% over the model alone. The clip is a pan and zoom over one
picture (a static camera, so its flicker figure means something): ``--photo`` a real photo, else a
generated smooth picture. H.264 CRF 18 at 25 frames/s with an AAC track, so the audio is remuxed as
in real use. Weights are random (speed does not depend on them): the teacher is 9 blocks at ngf 64,
the presets are the `distill --preset` shapes (train/presets.py: default 3 blocks at ngf 64, fast 3 at
ngf 32, fastest 3 at ngf 16); ``identity`` (no model) gives the pipeline's own cost. "model" is `translate_batch` over frames already decoded into memory, batch ``--batch-size``
(the forward code the pipeline runs, uint8 in and out); "end to end" is `translate_video` on the
file. Each repeat times every model both ways in turn, so load from other processes hits all alike;
the medians are reported, and the pipeline's cost as model fps / end-to-end fps - 1. On a loaded
machine wall time is noisy, so CPU time per frame (all threads of this process) is reported too: its
cost is the decode/encode work added per frame, the wall-clock cost if nothing overlapped while the
model used every core (an upper bound; with overlap and a spare core the wall cost is lower).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from cgdistill.device import cpu_name
from cgdistill.engines import Engine, Workload, choose_engine
from cgdistill.forward import translate_batch
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.policy import Runner
from cgdistill.train.presets import PRESETS, preset_generator
from cgdistill.video import translate_video

CPU = torch.device("cpu")
TEACHER = GeneratorConfig(blocks=9, ngf=64)
# Each `distill --preset` shape for that teacher, as distill builds it.
SHAPES = {"teacher": TEACHER} | {name: preset_generator(p, TEACHER) for name, p in PRESETS.items()}


class Identity(torch.nn.Module):
    """No model: what decoding, conversion, batching and encoding cost on their own (``--models identity``)."""

    multiple = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def generated_picture(side: int = 1024) -> Image.Image:
    """Smooth random colours with some texture: compresses like a photo, unlike noise."""
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), "RGB").resize((side, side), 3)
    fine = Image.fromarray(rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8), "RGB").resize((side, side))
    return Image.blend(coarse, fine, 0.15)


def pan_zoom_clip(
    picture: Image.Image,
    path: Path,
    size: tuple[int, int],
    frames: int,
    rate: int = 25,
    motion: float = 1.0,
    noise: float = 0.0,
) -> Path:
    """A slow pan and zoom over ``picture`` (static scene, moving camera), H.264 CRF 18 with an AAC track.

    ``motion`` scales the pan and zoom: 0 holds one view (a still camera). ``noise`` adds fresh Gaussian
    noise of that many 8-bit levels to each frame, as a camera sensor does (seeded: the same clip each run).
    """
    width, height = size
    picture = picture.convert("RGB")
    output = av.open(str(path), "w")
    stream = output.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"crf": "18"}
    sound = output.add_stream("aac", rate=44100)
    sound.layout = "stereo"
    aspect = width / height
    for index in range(frames):
        t = motion * index / max(1, frames - 1)
        crop_w = picture.width * (0.8 - 0.15 * t)  # zoom in from 80% to 65% of the width while panning right
        crop_h = min(crop_w / aspect, picture.height * 0.95)
        crop_w = crop_h * aspect
        left = (picture.width - crop_w) * (0.2 + 0.5 * t)
        top = (picture.height - crop_h) * 0.5
        view = picture.resize((width, height), Image.Resampling.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
        if noise > 0:
            grain = np.random.default_rng(index).normal(0, noise, (height, width, 3))
            view = Image.fromarray(np.clip(np.asarray(view) + grain, 0, 255).astype(np.uint8), "RGB")
        frame = av.VideoFrame.from_image(view)
        frame.pts = index
        frame.time_base = Fraction(1, rate)
        output.mux(stream.encode(frame))
    output.mux(stream.encode(None))
    seconds = frames / rate
    samples = (0.1 * np.sin(np.arange(int(44100 * seconds)) * 2 * np.pi * 440 / 44100)).astype(np.float32)
    chunk = av.AudioFrame.from_ndarray(np.stack([samples, samples]), format="fltp", layout="stereo")
    chunk.sample_rate, chunk.pts = 44100, 0
    output.mux(sound.encode(chunk))
    output.mux(sound.encode(None))
    output.close()
    return path


def decoded_frames(path: Path) -> torch.Tensor:
    with av.open(str(path)) as container:
        return torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))


def cpu_seconds() -> float:
    """CPU time of this process, all threads: unlike wall time, other processes' load barely moves it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def model_fps(model: torch.nn.Module, frames: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(frames/s, CPU ms per frame) of the forward code alone."""
    cpu, start = cpu_seconds(), time.perf_counter()
    for first in range(0, len(frames), batch_size):
        translate_batch(model, frames[first : first + batch_size], CPU)
    wall = time.perf_counter() - start
    return len(frames) / wall, (cpu_seconds() - cpu) * 1000 / len(frames)


def pipeline_fps(model: torch.nn.Module, clip: Path, out: Path, batch_size: int) -> tuple[float, float]:
    """(frames/s, CPU ms per frame) of `translate_video` on the file, from opening it to the renamed output."""
    cpu, start = cpu_seconds(), time.perf_counter()
    target = out / f"{clip.stem}_A2B.mp4"
    result = translate_video(Runner.for_model(model, CPU), clip, target, batch_size=batch_size, max_side=0)
    wall = time.perf_counter() - start
    return result.frames / wall, (cpu_seconds() - cpu) * 1000 / result.frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="320x240,640x480")
    parser.add_argument("--frames", type=int, default=48, help="frames per clip for the students")
    parser.add_argument("--teacher-frames", type=int, default=8, help="frames per clip for the (slow) teacher")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    parser.add_argument(
        "--engine",
        default="torch",
        help="torch (bf16 where it keeps 40 dB), onnxruntime or auto (chosen for the clip's size and batch, as "
        "translate chooses), or several, comma-separated",
    )
    parser.add_argument("--models", default=",".join(SHAPES))
    parser.add_argument("--photo", type=Path, help="picture to pan over (default: a generated one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    picture = Image.open(args.photo) if args.photo else generated_picture()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {args.threads} threads, engine {args.engine}; load: {load}"
    )
    print(f"clip: pan/zoom over {args.photo or 'a generated picture'}, H.264 CRF 18 + AAC; batch {args.batch_size}")
    print(
        f"{'size':>9} {'model':>8} {'engine':>23} {'frames':>6} {'model fps':>10} {'end-to-end fps':>15} {'cost':>7}"
        f" {'model CPU ms/f':>15} {'e2e CPU ms/f':>13} {'CPU cost':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["CGDISTILL_HOME"] = str(root / "home")  # auto times afresh: no verdict cached by an earlier run
        for spec in args.sizes.split(","):
            width, height = (int(v) for v in spec.lower().split("x"))
            runners = {}
            for name in args.models.split(","):
                count = args.teacher_frames if name == "teacher" else args.frames
                # What translate hands auto and torch for this clip: its frame size, batch and passes.
                work = Workload(height, width, args.batch_size, passes=-(-count // args.batch_size))
                clip = pan_zoom_clip(picture, root / f"{name}_{spec}.mp4", (width, height), count)
                frames = decoded_frames(clip)
                for choice in args.engine.split(",") if name != "identity" else ["none"]:
                    torch.manual_seed(0)
                    if name == "identity":
                        engine = Engine("none", Identity(), "the pipeline alone")
                    else:
                        engine = choose_engine(ResnetGenerator(SHAPES[name]), CPU, choice, work)
                    if choice == "auto":
                        engine.name = f"auto: {engine.name}"
                    print(f"  {spec} {name} {choice}: {engine.reason}", flush=True)
                    runners[f"{name}|{choice}"] = (engine, clip, frames)
            alone: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
            whole: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
            for engine, _clip, frames in runners.values():  # warm-up: first-call allocations, x264 init
                translate_batch(engine.model, frames[: args.batch_size], CPU)
            for _ in range(args.repeats):
                for key, (engine, clip, frames) in runners.items():
                    alone[key].append(model_fps(engine.model, frames, args.batch_size))
                    whole[key].append(pipeline_fps(engine.model, clip, root / "out", args.batch_size))
            for key, (engine, _clip, frames) in runners.items():
                name = key.split("|")[0]
                m = statistics.median(fps for fps, _ in alone[key])
                e = statistics.median(fps for fps, _ in whole[key])
                mc = statistics.median(ms for _, ms in alone[key])
                ec = statistics.median(ms for _, ms in whole[key])
                print(
                    f"{spec:>9} {name:>8} {engine.name:>23} {len(frames):>6} {m:>10.1f} {e:>15.1f} {m / e - 1:>+7.1%}"
                    f" {mc:>15.1f} {ec:>13.1f} {ec / mc - 1:>+9.1%}"
                )
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
