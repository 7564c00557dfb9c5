"""Peak memory of `cgdistill translate CLIP.mp4` at 3840x2160 through the vintagify teacher: tiles vs one pass.

    PYTHONPATH=src python benchmarks/video_memory.py [--frames 2] [--max-memory 1.5G] [--work DIR]

The teacher is the vintagify 0.1.2 generator (9 blocks, ngf 64; fetched and imported as in
``real_teacher.py``). The clip is synthetic (smooth colour regions plus noise, H.264), ``--frames``
frames long. Each run is one `cgdistill translate CLIP --model vintage --max-side 0` in its own
process with the default engine (``auto``), so its peak RSS (``/usr/bin/time -v``) is that process's
alone: once with ``--max-memory`` (frames over the budget tile), once with ``--tile off`` (one pass).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

from real_teacher import TEACHER, fetch_teacher
from translate_memory import photo

WIDTH, HEIGHT = 3840, 2160


def clip(path: Path, frames: int) -> Path:
    """``frames`` frames of a synthetic 4K photo, drifting a few pixels a frame, as H.264 at CRF 18."""
    still = np.asarray(Image.open(photo(path.with_suffix(".jpg"), WIDTH + 4 * frames, HEIGHT)).convert("RGB"))
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(still[:, 4 * index : 4 * index + WIDTH]), "rgb24")
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def run(home: Path, source: Path, out: Path, *flags: str) -> dict:
    """One translate in a fresh process: peak RSS (MiB), its wall time, the frame rate and engine it reports."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "cgdistill", "--home", str(home), "translate", str(source)]
    command += ["--model", TEACHER, "--direction", "A2B", "--max-side", "0", "-o", str(out), *flags]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    text = done.stderr + done.stdout
    if done.returncode != 0:
        return {"flags": flags, "error": text.strip().splitlines()[-3:]}
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    rate = re.search(r"\(([\d.]+) frames/s\)", text)
    engine = re.search(r" with ([^()]+?) \(", text)
    return {
        "flags": flags,
        "peak_mib": round(peak_kb / 1024),
        "wall_s": round(wall, 1),
        "frames_per_s": float(rate.group(1)) if rate else None,
        "engine": engine.group(1) if engine else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--max-memory", default="1.5G")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgdistill-video-memory"))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    home = args.work / "home"
    fetch_teacher(home, args.work)
    source = clip(args.work / "clip4k.mp4", args.frames)
    rows = [
        run(home, source, args.work / "tiled", "--max-memory", args.max_memory),
        run(home, source, args.work / "one-pass", "--tile", "off"),
    ]
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
