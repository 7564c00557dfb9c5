"""Losses of CycleGAN and of the distillation, written as the paper names them. Pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gan_loss(prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """LSGAN: mean squared error of the patch scores against 1 (real) or 0 (fake)."""
    prediction = prediction.float()
    target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
    return F.mse_loss(prediction, target)


def discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Half the sum of the real and fake LSGAN terms (the halving slows D relative to G, as published)."""
    return 0.5 * (gan_loss(real_scores, True) + gan_loss(fake_scores, False))


def cycle_loss(reconstructed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between an image and its round trip through both generators."""
    return F.l1_loss(reconstructed.float(), real.float())


def identity_loss(same: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between G_A2B(b) and b: keeps colours when the input is already in the target domain."""
    return F.l1_loss(same.float(), real.float())


def output_loss(student_out: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
    """L1 between student and teacher images."""
    return F.l1_loss(student_out.float(), teacher_out.float())


def feature_loss(student_features: list[torch.Tensor], teacher_features: list[torch.Tensor]) -> torch.Tensor:
    """Mean over matched pairs of the L2 (mean squared error) between hidden states."""
    if len(student_features) != len(teacher_features):
        raise ValueError("feature lists must pair up")
    terms = [F.mse_loss(s.float(), t.float()) for s, t in zip(student_features, teacher_features, strict=True)]
    return torch.stack(terms).mean()
