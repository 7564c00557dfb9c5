"""How close a copied student starts to its teacher, for each choice of teacher blocks to copy.

Builds the student as ``distill --init copy`` does (``build_student``, with the blocks to copy
overridden), runs it and the teacher on photos resized to SIDE x SIDE, and prints the PSNR of the
student's output to the teacher's before any training. The figures behind ``copied_blocks``
(train/student.py) and docs/distillation.md ("Which teacher blocks").

    python benchmarks/copy_init.py --teacher RUN_OR_FILE.safetensors --photos DIR [--count 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from cgdistill.data.images import list_images
from cgdistill.metrics import psnr
from cgdistill.train import student as student_module
from cgdistill.train.config import DistillConfig
from cgdistill.weights import load_generator

CHOICES = ([0, 4, 8], [2, 5, 8], [0, 3, 6], [1, 4, 7], [0, 1, 2], [6, 7, 8])


def photos(folder: Path, count: int, side: int) -> torch.Tensor:
    every = list_images(folder)
    files = every[:: max(1, len(every) // count)][:count]
    arrays = [np.array(Image.open(f).convert("RGB").resize((side, side), Image.BICUBIC)) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def start_psnr(
    teacher: torch.nn.Module, x: torch.Tensor, reference: torch.Tensor, chosen: list[int], ngf: int
) -> float:
    """PSNR (dB) to the teacher of a student copied from teacher blocks ``chosen`` (0-based)."""
    with mock.patch.object(student_module, "copied_blocks", lambda *_a, **_k: chosen):
        student, _ = student_module.build_student(
            DistillConfig(blocks=len(chosen), ngf=ngf), teacher, torch.Generator().manual_seed(0)
        )
    with torch.no_grad():
        out = student.generator.eval()(x)
    return psnr((out + 1) / 2, (reference + 1) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="a 9-block teacher generator (.safetensors)")
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--widths", default="64,32,16", help="student ngf values (the teacher's = same width)")
    args = parser.parse_args()
    teacher, _ = load_generator(args.teacher)
    teacher.eval()
    x = photos(args.photos, args.count, args.side)
    with torch.no_grad():
        reference = teacher(x)
    for ngf in (int(w) for w in args.widths.split(",")):
        for chosen in CHOICES:
            blocks = ", ".join(str(j + 1) for j in chosen)
            print(f"ngf {ngf}, blocks {blocks}: {start_psnr(teacher, x, reference, chosen, ngf):.2f} dB", flush=True)


if __name__ == "__main__":
    main()
