"""An exponential moving average of a network's weights: the distiller saves and evaluates it.

Averaging the last few hundred optimizer steps removes the step-to-step jitter that the GAN and the
small batch put into the raw weights, so the file a run leaves does not depend on where it stopped.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage(nn.Module):
    """``average`` follows ``model`` as  w_avg <- d * w_avg + (1 - d) * w  after each optimizer step.

    The decay warms up as d_n = min(decay, (1 + n) / (10 + n)) over the first updates (n counts them),
    so a short run averages roughly its last tenth instead of being anchored to the initial weights.
    Buffers (batch-norm statistics) are copied, not averaged. The update counter is a buffer, so the
    average resumes exactly from a training checkpoint.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.average = copy.deepcopy(model).eval().requires_grad_(False)
        # On the weights' device: a counter on the CPU would be copied to the GPU at every update, and
        # such a copy waits for the GPU (the training loop keeps the host free of syncs within a step).
        device = next(self.average.parameters()).device
        self.register_buffer("updates", torch.zeros((), dtype=torch.float32, device=device))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (no host sync: the decay stays a tensor)."""
        current = [p.detach() for p in model.parameters()]
        averaged = list(self.average.parameters())
        n = self.updates
        weight = 1.0 - torch.clamp((1.0 + n) / (10.0 + n), max=self.decay).to(averaged[0].dtype)
        # w_avg + weight * (w - w_avg), spelled out: torch._foreach_lerp_ takes its weight as a Python
        # number, and a tensor given there is read with .item(), which waits for the GPU every step.
        step = torch._foreach_sub(current, averaged)
        torch._foreach_mul_(step, weight)
        torch._foreach_add_(averaged, step)
        for mine, theirs in zip(self.average.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)
        self.updates.add_(1)

    def forward(self, *args, **kwargs):
        return self.average(*args, **kwargs)
