"""What the teacher-run tests compare: every model file of a run, as one flat dict of tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

MODEL_FILES = ("G_A2B.safetensors", "G_B2A.safetensors", "D_A.safetensors", "D_B.safetensors")


def weights(run: Path) -> dict[str, torch.Tensor]:
    """``{"G_A2B.safetensors/<tensor>": tensor, ...}`` for both generators and both discriminators."""
    return {f"{name}/{k}": v for name in MODEL_FILES for k, v in load_file(str(run / name)).items()}
