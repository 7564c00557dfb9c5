"""Generators and discriminators as public CycleGAN implementations build them, for the import tests.

Each class is written here from the structure of the public code it names (layer order, padding,
bias, norm, upsampling: facts read from that code, which these tests do not download), so that its
``state_dict()`` has that implementation's keys and its ``forward`` that implementation's function.
Widths the public code hard-codes are parameters here only where a test needs a small network.
"""

from __future__ import annotations

import torch
from torch import nn


def instance_norm(channels: int, affine: bool = False) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=affine)


# --- eriklindernoren/PyTorch-GAN, implementations/cyclegan/models.py ---------------------------------


class PyTorchGanResidualBlock(nn.Module):
    """``ResidualBlock``: ``self.block`` = pad, conv, IN, ReLU, pad, conv, IN; output x + block(x)."""

    def __init__(self, features: int, affine: bool = False) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(features, features, 3),
            instance_norm(features, affine),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(features, features, 3),
            instance_norm(features, affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class PyTorchGanGenerator(nn.Module):
    """``GeneratorResNet(input_shape, num_residual_blocks)``.

    The stem and output pads are ``ReflectionPad2d(channels)``; upsampling is ``nn.Upsample(scale_factor=2)``
    (nearest) then a 3x3 conv with zero padding 1. The published code fixes 64 features and plain
    instance norm: ``features`` and ``affine`` let a test make the small affine variant a user might
    have trained with it.
    """

    def __init__(self, channels: int = 3, blocks: int = 2, features: int = 64, affine: bool = False) -> None:
        super().__init__()
        out = features
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(channels),
            nn.Conv2d(channels, out, 7),
            instance_norm(out, affine),
            nn.ReLU(inplace=True),
        ]
        inp = out
        for _ in range(2):
            out *= 2
            layers += [nn.Conv2d(inp, out, 3, stride=2, padding=1), instance_norm(out, affine), nn.ReLU(inplace=True)]
            inp = out
        layers += [PyTorchGanResidualBlock(out, affine) for _ in range(blocks)]
        for _ in range(2):
            out //= 2
            layers += [
                nn.Upsample(scale_factor=2),
                nn.Conv2d(inp, out, 3, stride=1, padding=1),
                instance_norm(out, affine),
                nn.ReLU(inplace=True),
            ]
            inp = out
        layers += [nn.ReflectionPad2d(channels), nn.Conv2d(out, channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PyTorchGanDiscriminator(nn.Module):
    """``Discriminator(input_shape)``: four 4x4 stride-2 blocks (64..512, no norm on the first),
    ``ZeroPad2d((1, 0, 1, 0))``, and a 4x4 conv to one channel."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()

        def block(inp: int, out: int, normalize: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(inp, out, 4, stride=2, padding=1)]
            if normalize:
                layers.append(nn.InstanceNorm2d(out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.model = nn.Sequential(
            *block(channels, 64, normalize=False),
            *block(64, 128),
            *block(128, 256),
            *block(256, 512),
            nn.ZeroPad2d((1, 0, 1, 0)),
            nn.Conv2d(512, 1, 4, padding=1),
        )


# --- aitorzip/PyTorch-CycleGAN, models.py ----------------------------------------------------------


class AitorzipResidualBlock(nn.Module):
    """``ResidualBlock``: ``self.conv_block`` = pad, conv, IN, ReLU, pad, conv, IN."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(features, features, 3),
            nn.InstanceNorm2d(features),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(features, features, 3),
            nn.InstanceNorm2d(features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class AitorzipGenerator(nn.Module):
    """``Generator(input_nc, output_nc, n_residual_blocks)``: 64 features (fixed), reflection pads of 3
    around the 7x7 convs, zero-padded stride-2 convs, transposed-conv upsampling."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, n_residual_blocks: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, 64, 7),
            nn.InstanceNorm2d(64),
            nn.ReLU(inplace=True),
        ]
        inp, out = 64, 128
        for _ in range(2):
            layers += [nn.Conv2d(inp, out, 3, stride=2, padding=1), nn.InstanceNorm2d(out), nn.ReLU(inplace=True)]
            inp, out = out, out * 2
        layers += [AitorzipResidualBlock(inp) for _ in range(n_residual_blocks)]
        out = inp // 2
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(inp, out, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            inp, out = out, out // 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(64, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --- the "CycleGAN from scratch" tutorial (aladdinpersson/Machine-Learning-Collection) -----------------


class TutorialConvBlock(nn.Module):
    """``ConvBlock``: ``self.conv`` = conv (``padding_mode="reflect"``) or transposed conv, IN, ReLU or Identity."""

    def __init__(self, inp: int, out: int, down: bool = True, use_act: bool = True, **kwargs) -> None:
        super().__init__()
        conv = nn.Conv2d(inp, out, padding_mode="reflect", **kwargs) if down else nn.ConvTranspose2d(inp, out, **kwargs)
        self.conv = nn.Sequential(conv, nn.InstanceNorm2d(out), nn.ReLU(inplace=True) if use_act else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TutorialResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            TutorialConvBlock(channels, channels, kernel_size=3, padding=1),
            TutorialConvBlock(channels, channels, use_act=False, kernel_size=3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class TutorialGenerator(nn.Module):
    """``Generator(img_channels, num_features, num_residuals)``: ``initial``, ``down_blocks``,
    ``res_blocks``, ``up_blocks``, ``last``; every conv, the stride-2 ones included, pads by reflection."""

    def __init__(self, img_channels: int = 3, num_features: int = 8, num_residuals: int = 2) -> None:
        super().__init__()
        f = num_features
        self.initial = nn.Sequential(
            nn.Conv2d(img_channels, f, kernel_size=7, stride=1, padding=3, padding_mode="reflect"),
            nn.InstanceNorm2d(f),
            nn.ReLU(inplace=True),
        )
        self.down_blocks = nn.ModuleList(
            [
                TutorialConvBlock(f, f * 2, kernel_size=3, stride=2, padding=1),
                TutorialConvBlock(f * 2, f * 4, kernel_size=3, stride=2, padding=1),
            ]
        )
        self.res_blocks = nn.Sequential(*[TutorialResidualBlock(f * 4) for _ in range(num_residuals)])
        self.up_blocks = nn.ModuleList(
            [
                TutorialConvBlock(f * 4, f * 2, down=False, kernel_size=3, stride=2, padding=1, output_padding=1),
                TutorialConvBlock(f * 2, f, down=False, kernel_size=3, stride=2, padding=1, output_padding=1),
            ]
        )
        self.last = nn.Conv2d(f, img_channels, kernel_size=7, stride=1, padding=3, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial(x)
        for layer in self.down_blocks:
            x = layer(x)
        x = self.res_blocks(x)
        for layer in self.up_blocks:
            x = layer(x)
        return torch.tanh(self.last(x))


# --- OpenMMLab mmagic ResnetGenerator (mmcv ConvModule) ----------------------------------------------


class ConvModule(nn.Module):
    """mmcv's ``ConvModule`` as the generator uses it: an explicit ``padding_layer`` for reflect padding,
    ``conv`` (or a transposed conv for ``deconv``), the norm registered under its abbreviation
    (``in`` for instance norm, ``bn`` for batch norm), then the activation."""

    def __init__(
        self,
        inp: int,
        out: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool | str = "auto",
        deconv: bool = False,
        norm: str | None = None,
        affine: bool = False,
        act: str | None = "relu",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.explicit_padding = padding_mode not in ("zeros", "circular")
        if self.explicit_padding:
            self.padding_layer = nn.ReflectionPad2d(padding)
        conv_padding = 0 if self.explicit_padding else padding
        if bias == "auto":
            bias = norm is None
        if deconv:
            self.conv = nn.ConvTranspose2d(
                inp, out, kernel, stride=stride, padding=conv_padding, output_padding=1, bias=bias
            )
        else:
            self.conv = nn.Conv2d(inp, out, kernel, stride=stride, padding=conv_padding, bias=bias)
        self.norm_name = None
        if norm == "IN":
            self.norm_name = "in"
            self.add_module("in", nn.InstanceNorm2d(out, affine=affine))
        elif norm == "BN":
            self.norm_name = "bn"
            self.add_module("bn", nn.BatchNorm2d(out))
        self.activate = {"relu": nn.ReLU(inplace=True), "tanh": nn.Tanh(), None: nn.Identity()}[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit_padding:
            x = self.padding_layer(x)
        x = self.conv(x)
        if self.norm_name:
            x = getattr(self, self.norm_name)(x)
        return self.activate(x)


class MmagicResidualBlockWithDropout(nn.Module):
    """``ResidualBlockWithDropout``: ``self.block`` = ConvModule, [Dropout(0.5)], ConvModule (no activation)."""

    def __init__(self, channels: int, norm: str, affine: bool, use_dropout: bool, padding_mode: str) -> None:
        super().__init__()
        use_bias = norm == "IN"
        block: list[nn.Module] = [
            ConvModule(
                channels, channels, 3, padding=1, bias=use_bias, norm=norm, affine=affine, padding_mode=padding_mode
            )
        ]
        if use_dropout:
            block.append(nn.Dropout(0.5))
        block.append(
            ConvModule(
                channels,
                channels,
                3,
                padding=1,
                bias=use_bias,
                norm=norm,
                affine=affine,
                act=None,
                padding_mode=padding_mode,
            )  # fmt: skip
        )
        self.block = nn.Sequential(*block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class MmagicResnetGenerator(nn.Module):
    """``ResnetGenerator(in_channels, out_channels, base_channels, norm_cfg, use_dropout, num_blocks,
    padding_mode='reflect')``: the stride-2 and transposed convs take no ``padding_mode`` (zeros)."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 8,
        norm: str = "IN",
        affine: bool = False,
        use_dropout: bool = False,
        num_blocks: int = 2,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__()
        use_bias = norm == "IN"
        c = base_channels
        model: list[nn.Module] = [
            ConvModule(in_channels, c, 7, padding=3, bias=use_bias, norm=norm, affine=affine, padding_mode=padding_mode)
        ]
        for i in range(2):
            m = 2**i
            model.append(ConvModule(c * m, c * m * 2, 3, stride=2, padding=1, bias=use_bias, norm=norm, affine=affine))
        model += [
            MmagicResidualBlockWithDropout(c * 4, norm, affine, use_dropout, padding_mode) for _ in range(num_blocks)
        ]
        for i in range(2):
            m = 2 ** (2 - i)
            model.append(
                ConvModule(
                    c * m, c * m // 2, 3, stride=2, padding=1, bias=use_bias, deconv=True, norm=norm, affine=affine
                )
            )
        model.append(ConvModule(c, out_channels, 7, padding=3, bias=True, act="tanh", padding_mode=padding_mode))
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --- non-members: the CycleGAN authors' U-Net and PatchGAN discriminator -------------------------------


class UnetSkipConnectionBlock(nn.Module):
    """The authors' U-Net block: down conv (4x4, stride 2), the inner block, transposed up conv; the
    output is concatenated with the input (skip connection) except at the outermost level."""

    def __init__(
        self, outer: int, inner: int, input_nc: int | None = None, submodule: nn.Module | None = None,
        outermost: bool = False, innermost: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.outermost = outermost
        input_nc = input_nc or outer
        downconv = nn.Conv2d(input_nc, inner, 4, stride=2, padding=1, bias=False)
        if outermost:
            up = [nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1), nn.Tanh()]
            model = [downconv, submodule, *up]
        elif innermost:
            up = [
                nn.ReLU(True),
                nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(outer),
            ]
            model = [nn.LeakyReLU(0.2, True), downconv, *up]
        else:
            down = [nn.LeakyReLU(0.2, True), downconv, nn.BatchNorm2d(inner)]
            up = [
                nn.ReLU(True),
                nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(outer),
            ]
            model = [*down, submodule, *up]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """The authors' ``UnetGenerator(input_nc, output_nc, num_downs, ngf)`` (pix2pix), batch norm."""

    def __init__(self, num_downs: int = 8, ngf: int = 8) -> None:
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block)
        self.model = UnetSkipConnectionBlock(3, ngf, input_nc=3, submodule=block, outermost=True)


class NLayerDiscriminator(nn.Module):
    """The authors' 70x70 PatchGAN: 4x4 convs (stride 2, 2, 2, then 1), batch norm, a 1-channel map."""

    def __init__(self, ndf: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, 3):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, 8
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)


def randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere (biases too, so a dropped bias would show), norm scales near 1, real
    batch-norm statistics; in eval mode, as a trained network is used.

    The ``fan_in`` of a transposed conv's weight ``[in, out, k, k]`` read this way is out*k*k rather
    than in*k*k; the scale only needs to keep activations of order one.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(1000)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.ndim == 1 and name.endswith("weight"):
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=generator))
            elif tensor.ndim == 4:
                # unit-variance outputs, so tanh is not saturated and differences stay visible
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
            else:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
    return net.eval()
