"""The 70x70 PatchGAN discriminator: a grid of real/fake scores, one per overlapping patch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from cgdistill.nets.generator import NORMS, conv_bias, norm_layer


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Everything needed to rebuild a discriminator; stored in its file's metadata."""

    ndf: int = 64
    n_layers: int = 3
    norm: str = "instance"
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {self.n_layers}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class PatchDiscriminator(nn.Module):
    """With ``n_layers=3`` each output score sees a 70x70 patch of the input."""

    def __init__(self, config: DiscriminatorConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = config or DiscriminatorConfig(**overrides)
        self.config = cfg
        ndf, bias = cfg.ndf, conv_bias(cfg.norm)
        layers: list[nn.Module] = [
            nn.Conv2d(cfg.in_channels, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, cfg.n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < cfg.n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                norm_layer(cfg.norm, ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
