"""What the teacher-run tests compare (every model file of a run, as one flat dict of tensors), and the
tiny teacher run the distillation tests learn from."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from cgdistill import paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.train.config import TeacherConfig
from cgdistill.train.teacher import train_teacher

MODEL_FILES = ("G_A2B.safetensors", "G_B2A.safetensors", "D_A.safetensors", "D_B.safetensors")


def weights(run: Path) -> dict[str, torch.Tensor]:
    """``{"G_A2B.safetensors/<tensor>": tensor, ...}`` for both generators and both discriminators."""
    return {f"{name}/{k}": v for name in MODEL_FILES for k, v in load_file(str(run / name)).items()}


def tiny_teacher_run() -> Path:
    """Run ``teacher`` in the current home: 4 blocks at ngf 8, two steps on a toy set of 6 images of 32 px."""
    make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=6, n_test=3)
    config = TeacherConfig(
        data="toy", name="teacher", blocks=4, ngf=8, ndf=4, image_size=24, load_size=28, max_steps=2, pool_size=2,
        sample_every=1000,
    )  # fmt: skip
    return train_teacher(config)
