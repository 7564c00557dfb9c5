#!/usr/bin/env bash
# Rebuilds this fixture with the code before issue 14 (see README.md). Usage, from the repository root:
#   git archive 9fab38d src | tar -x -C /tmp/old14
#   OLD_SRC=/tmp/old14/src PYTHON=.venv/bin/python tests/data/run-before-issue-14/make.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${OLD_SRC:?set OLD_SRC to the src folder of commit 9fab38d}"
PYTHON=${PYTHON:-python}
export PYTHONPATH=$OLD_SRC OMP_NUM_THREADS=1
work=$(mktemp -d)
export CGDISTILL_HOME=$work/home
old() { "$PYTHON" -m cgdistill "$@"; }

"$PYTHON" - <<'PY'
import os
from pathlib import Path

import cgdistill

assert Path(cgdistill.__file__).is_relative_to(os.environ["PYTHONPATH"]), cgdistill.__file__
from cgdistill.data.toy import make_toy_dataset

make_toy_dataset(Path(os.environ["CGDISTILL_HOME"]) / "datasets" / "toy", size=32, n_train=3, n_test=1)
PY

teacher=(--data toy --name teacher --epochs 1 --epochs-decay 1 --image-size 24 --load-size 28 --blocks 2
         --ngf 2 --ndf 1 --pool-size 1 --seed 3 --save-every 2 --log-every 1 --sample-every 1000
         --device cpu --no-amp)
old train-teacher "${teacher[@]}" --max-steps 2
old train-teacher "${teacher[@]}" --max-steps 3 --resume  # 3 images: step 3 ends epoch 1

student=(--teacher teacher --name student --objective domain --blocks 1 --batch-size 1 --epochs 1
         --epochs-decay 1 --image-size 24 --load-size 28 --pool-size 1 --seed 5 --save-every 1000
         --log-every 1 --eval-every 1 --sample-every 1000 --device cpu --no-amp)
old distill "${student[@]}" --max-steps 2

# What the old code does next, each from its own copy (a student resumes with its teacher run's
# generators as they are then, so the teacher must stay at step 3 for it): continue each run,
# distill the other direction, compare, translate.
ref=$work/reference
mkdir -p "$ref"
for copy in teacher student a2b; do cp -r "$CGDISTILL_HOME" "$work/$copy"; done
CGDISTILL_HOME=$work/teacher old train-teacher "${teacher[@]}" --max-steps 6 --resume
CGDISTILL_HOME=$work/student old distill "${student[@]}" --max-steps 4 --resume
CGDISTILL_HOME=$work/a2b old distill "${student[@]}" --name student-a2b --direction A2B --max-steps 1
cp "$work/teacher/runs/teacher/metrics.jsonl" "$ref/teacher-continued-to-6.jsonl"
cp "$work/student/runs/student/metrics.jsonl" "$ref/student-continued-to-4.jsonl"
cp "$work/a2b/runs/student-a2b/metrics.jsonl" "$ref/distill-a2b-step-1.jsonl"
old compare --teacher teacher --student student --device cpu --json > "$ref/compare.json"

"$PYTHON" - "$ref/outputs.safetensors" <<'PY'
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from cgdistill.checkpoint import load_generator

home = Path(os.environ["CGDISTILL_HOME"])


def image(path: Path) -> torch.Tensor:
    """An RGB PNG as translate feeds it to a generator: 1x3xHxW in [-1, 1]."""
    pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8))
    return pixels.permute(2, 0, 1)[None].float().div(127.5).sub(1.0)


a = image(home / "datasets/toy/testA/0000.png")
b = image(home / "datasets/toy/testB/0000.png")
outputs = {}
with torch.inference_mode():
    for name, path, x in (
        ("teacher_A2B", "runs/teacher/G_A2B.safetensors", a),
        ("teacher_B2A", "runs/teacher/G_B2A.safetensors", b),
        ("student_B2A", "runs/student/G.safetensors", b),
    ):
        generator, _ = load_generator(home / path)
        outputs[name] = generator.eval()(x).contiguous()
save_file(outputs, sys.argv[1], metadata={"inputs": "testA/0000.png for A2B, testB/0000.png for B2A"})
PY

# Sample grids are not read by anything and are most of the size; the rest is as the old code left it.
rm -r "$CGDISTILL_HOME"/runs/*/samples
rm -rf "$here/home" "$here/reference"
cp -r "$CGDISTILL_HOME" "$here/home"
cp -r "$ref" "$here/reference"
rm -r "$work"
du -sh "$here"
