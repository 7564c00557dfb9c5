"""Flicker of teachers and students on a static-scene clip made from a real photo: how much each model
makes consecutive frames differ beyond the input's own change (`translate --stats`, cgdistill.flicker.Flicker).

Usage: .venv/bin/python benchmarks/video_flicker.py --photo IMAGE --model RUN|FILE [--model ...]
       [--direction B2A] [--size 320x240] [--frames 48] [--threads 1] [--strip docs/images/video-strip.jpg]

Three clips from the one photo, H.264 CRF 18: "still" holds one view (the frames differ only by
coding noise, so any change in the output is flicker the model adds), "noisy" is the same view with
fresh sensor-like noise in each frame (``--noise`` levels: how much a model amplifies small input
changes), "pan" pans and zooms slowly (the scene is static, the camera moves; the output changes less
than the input wherever a model smooths detail, so its flicker figure is negative). Each model translates both through `translate_video`, as the
command line does (torch engine); the table gives the mean absolute change between consecutive frames
of the input and of the output (8-bit levels), their difference (the flicker figure) and their ratio.
``--strip FILE`` also writes a small JPEG of the pan clip: first, middle and last frame in rows,
input then each model in columns (for the README).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from cgdistill.engines import engine_for_file
from cgdistill.policy import Runner
from cgdistill.runs import resolve_generator
from cgdistill.video import translate_video
from translate_video import pan_zoom_clip

CPU = torch.device("cpu")


def frames_at(path: Path) -> list[np.ndarray]:
    """The first, middle and last frames of a clip, as RGB arrays."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return [frames[0], frames[len(frames) // 2], frames[-1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="run name or model file (repeatable)")
    parser.add_argument("--direction", default="B2A")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--strip", type=Path, help="write input | model ... frames of the pan clip to this JPEG")
    parser.add_argument("--noise", type=float, default=3.0, help="sensor noise of the noisy still clip, in levels")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"photo {args.photo}, {width}x{height}, {args.frames} frames, H.264 CRF 18 in and out, {args.direction}")
    print(f"{'clip':>6} {'model':>34} {'input change':>13} {'output change':>14} {'flicker':>8} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with Image.open(args.photo) as photo:
            clips = {
                "still": pan_zoom_clip(photo, root / "still.mp4", (width, height), args.frames, motion=0.0),
                "noisy": pan_zoom_clip(
                    photo, root / "noisy.mp4", (width, height), args.frames, motion=0.0, noise=args.noise
                ),
                "pan": pan_zoom_clip(photo, root / "pan.mp4", (width, height), args.frames),
            }
        strip = [frames_at(clips["pan"])]
        for name in args.model:
            resolved = resolve_generator(name, args.direction, role="any")
            engine = engine_for_file(resolved.path, CPU, args.engine)
            config = engine.model.config
            label = f"{name} ({config.blocks} {config.block}, ngf {config.ngf})"
            for clip_name, clip in clips.items():
                target = root / "out" / f"{clip.stem}_{args.direction}.mp4"
                result = translate_video(Runner.for_engine(engine, CPU), clip, target, stats=True)
                f = result.flicker
                print(
                    f"{clip_name:>6} {label:>34} {f.input_change:>13.2f} {f.output_change:>14.2f} {f.value:>+8.2f}"
                    f" {f.output_change / f.input_change:>6.2f}"
                )
                if clip_name == "pan":
                    strip.append(frames_at(result.output))
        if args.strip is not None:
            rows = [np.concatenate([column[row] for column in strip], axis=1) for row in range(len(strip[0]))]
            args.strip.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate(rows, axis=0)).save(args.strip, quality=82, optimize=True)
            print(f"wrote {args.strip}: rows = first, middle, last frame; columns = input, {', '.join(args.model)}")


if __name__ == "__main__":
    main()
