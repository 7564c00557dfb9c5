"""Weight initialisation of the CycleGAN paper: N(0, 0.02) for convs, N(1, 0.02) for norm scales."""

from __future__ import annotations

import torch
from torch import nn


def init_weights(module: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> None:
    """Initialise every conv and norm layer of ``module`` in place; biases start at zero."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, gain, generator=generator)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.InstanceNorm2d)) and layer.weight is not None:
            nn.init.normal_(layer.weight, 1.0, gain, generator=generator)
            nn.init.zeros_(layer.bias)
