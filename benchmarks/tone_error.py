"""How much of a student's difference from its teacher is the photo's global tone.

Both models translate the same test photos with `cgdistill translate`, each at its own size as `compare`
measures them. For each photo this prints the student's PSNR to the teacher as it is, and again after
the student's output is given the teacher's per-channel mean and standard deviation. Those are six
numbers a photo, which no network layer needs to see the whole image to get right. The gap between the
two columns is the error that global tone makes: brightness, contrast and colour cast. It matters most
for a student whose receptive field is too small to judge a whole photo's haze or light.

Usage:
  .venv/bin/python benchmarks/tone_error.py --teacher RUN|FILE --student RUN|FILE --test DIR [DIR ...] [--worst 5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from cgdistill.data.images import list_images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / max(((a - b) ** 2).mean(), 1e-12)))


def tone_matched(student: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """``student`` with the teacher's per-channel mean and standard deviation (arrays H x W x 3, 0-255)."""
    spread = np.maximum(student.std(axis=(0, 1)), 1e-6)
    return (student - student.mean(axis=(0, 1))) / spread * teacher.std(axis=(0, 1)) + teacher.mean(axis=(0, 1))


def translate(model: str, photos: Path, out: Path) -> None:
    command = [sys.executable, "-m", "cgdistill", "translate", str(photos), "--model", model, "--output", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--test", nargs="+", required=True, help="folders of test photos")
    parser.add_argument("--worst", type=int, default=5, help="list this many of the worst photos")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cgdistill-tone-") as scratch:
        photos = Path(scratch) / "photos"
        photos.mkdir()
        for number, folder in enumerate(args.test):
            for path in list_images(Path(folder)):
                shutil.copyfile(path, photos / f"{number}-{path.name}")
        translate(args.teacher, photos, Path(scratch) / "teacher")
        translate(args.student, photos, Path(scratch) / "student")
        rows = []
        for taught in sorted((Path(scratch) / "teacher").iterdir()):
            teacher = np.asarray(Image.open(taught).convert("RGB"), dtype=np.float64)
            student = np.asarray(Image.open(Path(scratch) / "student" / taught.name).convert("RGB"), dtype=np.float64)
            rows.append((psnr(student, teacher), psnr(tone_matched(student, teacher), teacher), taught.name))
    as_is = np.array([row[0] for row in rows])
    matched = np.array([row[1] for row in rows])
    error_share = 1 - 10 ** ((as_is - matched) / 10)  # the share of the squared error that matching removed
    print(f"{len(rows)} photos; student {args.student} against teacher {args.teacher}")
    print()
    print("| | as it is | tone matched (per-channel mean and std) |")
    print("|---|---:|---:|")
    print(f"| mean PSNR | {as_is.mean():.2f} dB | {matched.mean():.2f} dB |")
    print(f"| worst photo | {as_is.min():.2f} dB | {matched.min():.2f} dB |")
    print(f"| photos under 24 dB | {(as_is < 24).sum()} | {(matched < 24).sum()} |")
    print()
    print(f"Global tone is {error_share.mean():.1%} of the squared error, on average over the photos.")
    print()
    print("| worst photos | as it is | tone matched |")
    print("|---|---:|---:|")
    for value, after, name in sorted(rows)[: args.worst]:
        print(f"| {name} | {value:.2f} dB | {after:.2f} dB |")


if __name__ == "__main__":
    main()
