"""The CycleGAN ResNet generator, with access to every residual block's output for distillation.

Layout (as published): 7x7 stem, two stride-2 downsampling convs, ``blocks`` residual blocks at
4*ngf channels, two 2x upsamplings, 7x7 output conv and tanh. Submodules carry names
(``stem``, ``down``, ``blocks``, ``up``, ``head``) so that the distiller can copy the parts that
do not depend on the number of blocks, and ``official.py`` can map the reference layout onto them.

Residual blocks come in two kinds (``block``): ``standard`` (two 3x3 convs, as published) and
``separable``, the mobile block of GAN Compression (Li et al., 2020): each 3x3 conv becomes a 3x3
depthwise conv, a norm and a 1x1 pointwise conv, about 8x fewer multiply-accumulates per block at
256 channels.

The stem and head come in two kinds (``ends``): ``full`` (as published: a 7x7 conv on the pixels,
two stride-2 convs, two 2x upsamplings and a 7x7 conv back to pixels) and ``half``, for small fast
students: the image is cut into 2x2 pixel blocks (space-to-depth, 12 channels at half resolution,
nothing lost), a 3x3 conv and one stride-2 conv reach the same quarter-resolution trunk, and one 2x
upsampling and a 3x3 conv to 12 channels are shuffled back into pixels. No layer then runs at full
resolution, where the few channels of a narrow network keep the CPU waiting on memory (the 7x7
head alone was a fifth of ``fastest``'s time at 640x480; docs/distillation.md). The trunk and the
inner downsampling and upsampling keep the published shapes, so they still start from the teacher.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from cgdistill.nets.norm import InstanceNorm
from cgdistill.options import BLOCKS, ENDS, NORMS, PADDINGS, UPSAMPLES


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator; stored in every generator file's metadata."""

    blocks: int = 9
    ngf: int = 64
    norm: str = "instance"
    upsample: str = "deconv"
    in_channels: int = 3
    out_channels: int = 3
    # Padding of the layers where public implementations differ (weights cannot show it): the
    # stride-2 convs (zero-padded as published) and the convs after a resize (reflect in ours).
    down_padding: str = "zeros"
    up_padding: str = "reflect"
    block: str = "standard"
    ends: str = "full"

    def __post_init__(self) -> None:
        if self.blocks < 1:
            raise ValueError(f"blocks must be at least 1, got {self.blocks}")
        if self.ngf < 1:
            raise ValueError(f"ngf must be at least 1, got {self.ngf}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLES)}, got {self.upsample!r}")
        for name in ("down_padding", "up_padding"):
            if getattr(self, name) not in PADDINGS:
                raise ValueError(f"{name} must be one of {', '.join(PADDINGS)}, got {getattr(self, name)!r}")
        if self.upsample == "deconv" and self.up_padding != "reflect":
            raise ValueError("up_padding applies to resize-conv upsampling only; transposed convs do not pad")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        if self.ends not in ENDS:
            raise ValueError(f"ends must be one of {', '.join(ENDS)}, got {self.ends!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The normalisation the reference code builds for ``kind``."""
    if kind == "instance":
        return InstanceNorm(channels, affine=False, track_running_stats=False)
    if kind == "instance-affine":
        return InstanceNorm(channels, affine=True, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}")


def padding_layer(mode: str, size: int) -> nn.Module:
    """Explicit padding, so the conv after it sits at the same state-dict index whatever the mode."""
    return nn.ReflectionPad2d(size) if mode == "reflect" else nn.ZeroPad2d(size)


def conv_bias(kind: str) -> bool:
    """Convs before batch norm carry no bias (the norm's shift replaces it), as in the reference."""
    return kind != "batch"


class ResnetBlock(nn.Module):
    """Two 3x3 convs with reflection padding and a skip connection: x + F(x)."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        bias = conv_bias(norm)
        self.conv = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class SeparableResnetBlock(nn.Module):
    """The mobile residual block: per conv, reflect pad, 3x3 depthwise, norm, 1x1 pointwise, norm.

    As in GAN Compression's ``MobileResnetBlock`` (its ``SeparableConv2d`` puts a norm between the
    depthwise and the pointwise conv, and the ReLU follows the first separable conv's norm).
    """

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        bias = conv_bias(norm)

        def separable() -> list[nn.Module]:
            return [
                nn.ReflectionPad2d(1),
                nn.Conv2d(channels, channels, 3, groups=channels, bias=bias),
                norm_layer(norm, channels),
                nn.Conv2d(channels, channels, 1, bias=bias),
                norm_layer(norm, channels),
            ]

        self.conv = nn.Sequential(*separable(), nn.ReLU(inplace=True), *separable())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


BLOCK_TYPES: dict[str, type[nn.Module]] = {"standard": ResnetBlock, "separable": SeparableResnetBlock}


def _upsample_stage(in_ch: int, out_ch: int, cfg: GeneratorConfig) -> nn.Sequential:
    bias = conv_bias(cfg.norm)
    if cfg.upsample == "deconv":
        up: list[nn.Module] = [nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=bias)]
    else:
        # Resize then convolve: no checkerboard artifacts (Odena et al., 2016).
        up = [
            nn.Upsample(scale_factor=2, mode="nearest"),
            padding_layer(cfg.up_padding, 1),
            nn.Conv2d(in_ch, out_ch, 3, bias=bias),
        ]
    return nn.Sequential(*up, norm_layer(cfg.norm, out_ch), nn.ReLU(inplace=True))


class ResnetGenerator(nn.Module):
    """ResNet generator of Johnson et al. as used by CycleGAN.

    ``forward(x)`` returns the image in [-1, 1]; ``forward_features(x)`` also returns the output of
    each residual block, which the distiller matches between student and teacher.
    """

    def __init__(self, config: GeneratorConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = config or GeneratorConfig(**overrides)
        if config is not None and overrides:
            cfg = GeneratorConfig(**{**config.to_dict(), **overrides})
        self.config = cfg
        ngf, bias = cfg.ngf, conv_bias(cfg.norm)
        down_mode = cfg.down_padding
        if cfg.ends == "full":
            self.stem = nn.Sequential(
                nn.ReflectionPad2d(3),
                nn.Conv2d(cfg.in_channels, ngf, 7, bias=bias),
                norm_layer(cfg.norm, ngf),
                nn.ReLU(inplace=True),
            )
            self.down = nn.Sequential(
                nn.Conv2d(ngf, ngf * 2, 3, stride=2, padding=1, bias=bias, padding_mode=down_mode),
                norm_layer(cfg.norm, ngf * 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(ngf * 2, ngf * 4, 3, stride=2, padding=1, bias=bias, padding_mode=down_mode),
                norm_layer(cfg.norm, ngf * 4),
                nn.ReLU(inplace=True),
            )
        else:  # "half": the stem reads 2x2 pixel blocks and ends where the published first downsampling does
            self.stem = nn.Sequential(
                nn.PixelUnshuffle(2),
                nn.ReflectionPad2d(1),
                nn.Conv2d(cfg.in_channels * 4, ngf * 2, 3, bias=bias),
                norm_layer(cfg.norm, ngf * 2),
                nn.ReLU(inplace=True),
            )
            self.down = nn.Sequential(
                nn.Conv2d(ngf * 2, ngf * 4, 3, stride=2, padding=1, bias=bias, padding_mode=down_mode),
                norm_layer(cfg.norm, ngf * 4),
                nn.ReLU(inplace=True),
            )
        block = BLOCK_TYPES[cfg.block]
        self.blocks = nn.ModuleList(block(ngf * 4, cfg.norm) for _ in range(cfg.blocks))
        if cfg.ends == "full":
            self.up = nn.Sequential(
                _upsample_stage(ngf * 4, ngf * 2, cfg),
                _upsample_stage(ngf * 2, ngf, cfg),
            )
            self.head = nn.Sequential(
                nn.ReflectionPad2d(3),
                nn.Conv2d(ngf, cfg.out_channels, 7),
                nn.Tanh(),
            )
        else:
            self.up = nn.Sequential(_upsample_stage(ngf * 4, ngf * 2, cfg))
            # tanh before the shuffle (the same numbers: one acts on each value, the other only moves
            # them), so that a compiled model can leave the shuffle out of its graph (``compiled``).
            self.head = nn.Sequential(
                nn.ReflectionPad2d(1),
                nn.Conv2d(ngf * 2, cfg.out_channels * 4, 3),
                nn.Tanh(),
                nn.PixelShuffle(2),
            )

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (two stride-2 stages, or 2x2 blocks and one)."""
        return 4

    @property
    def feature_channels(self) -> int:
        """Channels of each residual block's output (the features distillation matches): 4 * ngf."""
        return self.config.ngf * 4

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The stem and downsampling: the 1/4-resolution input of the residual blocks."""
        return self.down(self.stem(x))

    def forward(self, x: torch.Tensor, return_features: bool = False, encoded: bool = False):
        """The translated image; with ``return_features`` also each residual block's output.

        ``encoded``: ``x`` is already ``encode(image)`` (a distiller whose student shares the teacher's
        frozen encoder computes it once for both). Features come through ``forward`` (not a side
        method) so that DDP and torch.compile wrappers see the call.
        """
        h = x if encoded else self.encode(x)
        features = []
        for block in self.blocks:
            h = block(h)
            if return_features:
                features.append(h)
        out = self.head(self.up(h))
        return (out, features) if return_features else out

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The output image and the list of residual-block outputs (one per block)."""
        return self.forward(x, return_features=True)


SHARED_PREFIXES = ("stem.", "down.", "up.", "head.")
"""State-dict prefixes that do not depend on the number of blocks (copied by ``--init copy``)."""
