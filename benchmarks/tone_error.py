"""How much of a student's difference from its teacher is the photo's global tone.

Both models translate the same test photos with `cgdistill translate`, each at its own size as `compare`
measures them. For each photo this prints the student's PSNR to the teacher as it is, and again after
the student's output is given the teacher's per-channel mean and standard deviation
(`metrics.tone_matched_psnr`, which `compare` reports too). Those are six numbers a photo, which no
network layer needs to see the whole image to get right. The gap between the two columns is the error
that global tone makes: brightness, contrast and colour cast (for `fastest` on the vintagify teacher,
a third of its error: docs/distillation.md).

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
import torch
from PIL import Image

from cgdistill.data.images import list_images
from cgdistill.metrics import per_image, psnr_per_image, tone_error_share, tone_matched_psnr


def translate(model: str, photos: Path, out: Path) -> None:
    command = [sys.executable, "-m", "cgdistill", "translate", str(photos), "--model", model, "--output", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def read(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy())


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
        names = sorted(path.name for path in (Path(scratch) / "teacher").iterdir())
        teacher = [read(Path(scratch) / "teacher" / name) for name in names]
        student = [read(Path(scratch) / "student" / name) for name in names]
    as_is = per_image(psnr_per_image, student, teacher).numpy()
    matched = np.array(tone_matched_psnr(student, teacher))
    print(f"{len(names)} photos; student {args.student} against teacher {args.teacher}")
    print()
    print("| | as it is | tone matched (per-channel mean and std) |")
    print("|---|---:|---:|")
    print(f"| mean PSNR | {as_is.mean():.2f} dB | {matched.mean():.2f} dB |")
    print(f"| worst photo | {as_is.min():.2f} dB | {matched.min():.2f} dB |")
    print(f"| photos under 24 dB | {(as_is < 24).sum()} | {(matched < 24).sum()} |")
    print()
    share = tone_error_share(as_is.tolist(), matched.tolist())
    print(f"Global tone is {share:.1%} of the squared error, on average over the photos.")
    print()
    print("| worst photos | as it is | tone matched |")
    print("|---|---:|---:|")
    for index in np.argsort(as_is)[: args.worst]:
        print(f"| {names[index]} | {as_is[index]:.2f} dB | {matched[index]:.2f} dB |")


if __name__ == "__main__":
    main()
