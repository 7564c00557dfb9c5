"""The public implementations whose generators cgdistill imports, told apart by their module names.

Shapes give the structure (``structure.py``); what weights cannot show is how each implementation
pads, and that is all a layout adds. Facts checked against each project's published code:

- CycleGAN authors (junyanz/pytorch-CycleGAN-and-pix2pix) and aitorzip/PyTorch-CycleGAN: one
  ``nn.Sequential`` ``model``, blocks ``model.K.conv_block``; reflection pads around the 7x7 and
  block convs, zero-padded stride-2 convs, transposed convs.
- eriklindernoren/PyTorch-GAN ``GeneratorResNet``: the same ``model`` sequence, blocks
  ``model.K.block``, upsampling by ``nn.Upsample`` (nearest) then a zero-padded 3x3 conv. Its stem
  and output pads are ``ReflectionPad2d(channels)``, which is 3 only for 3-channel images.
- The "CycleGAN from scratch" tutorial ``Generator``: ``initial``, ``down_blocks``, ``res_blocks``,
  ``up_blocks``, ``last``; every conv pads with ``padding_mode="reflect"``, the stride-2 ones too.
- OpenMMLab mmagic/mmgeneration ``ResnetGenerator``: ``model.K.conv`` and ``model.K.block.J.conv``
  (ConvModule), norms named ``in``/``bn``; reflect padding (its default ``padding_mode``) for the
  7x7 and block convs, zero-padded stride-2 convs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cgdistill.layouts.structure import ResnetStructure


@dataclass(frozen=True)
class Layout:
    """One implementation's names and the padding its weights do not record."""

    name: str
    title: str
    recognises: Callable[[ResnetStructure], bool]
    down_padding: str = "zeros"
    up_padding: str = "reflect"
    refuses: Callable[[ResnetStructure], str | None] = lambda structure: None


def _stem_is(module: str, blocks: str) -> Callable[[ResnetStructure], bool]:
    """Stem and block convs named so, under any prefix (``state_dict.``, a network's name)."""
    stem = re.compile(rf"(?:.*\.)?{re.escape(module)}")
    block = re.compile(rf"(?:.*\.)?{blocks}")
    return lambda s: bool(stem.fullmatch(s.stem.module)) and all(block.fullmatch(c.module) for c in s.block_convs)


def _pads_by_channels(structure: ResnetStructure) -> str | None:
    if structure.in_channels == 3 and structure.out_channels == 3:
        return None
    return (
        f"PyTorch-GAN's generator pads its stem and output conv by the image channel count "
        f"({structure.in_channels}), not by 3 as cgdistill's generator does"
    )


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "cgdistill",
        "cgdistill's ResnetGenerator",
        _stem_is("stem.1", r"blocks\.\d+\.conv\.\d+"),
    ),
    Layout(
        "cyclegan-authors",
        "CycleGAN authors' ResnetGenerator (junyanz/pytorch-CycleGAN-and-pix2pix, aitorzip/PyTorch-CycleGAN)",
        _stem_is("model.1", r"model\.\d+\.conv_block\.\d+"),
    ),
    Layout(
        "pytorch-gan",
        "eriklindernoren/PyTorch-GAN GeneratorResNet",
        _stem_is("model.1", r"model\.\d+\.block\.\d+"),
        up_padding="zeros",
        refuses=_pads_by_channels,
    ),
    Layout(
        "cyclegan-tutorial",
        '"CycleGAN from scratch" tutorial Generator (initial/down_blocks/res_blocks/up_blocks/last)',
        _stem_is("initial.0", r"res_blocks\.\d+\.block\.\d+\.conv\.0"),
        down_padding="reflect",
    ),
    Layout(
        "mmagic",
        "OpenMMLab mmagic/mmgeneration ResnetGenerator (ConvModule conv/norm)",
        _stem_is("model.0.conv", r"model\.\d+\.block\.\d+\.conv"),
    ),
)

UNRECOGNISED = Layout(
    "unrecognised-names",
    "unrecognised module names (padding assumed as in the CycleGAN authors' code)",
    lambda structure: True,
)
"""Any other naming: zero-padded stride-2 convs, reflection elsewhere, as published."""


def identify(structure: ResnetStructure) -> Layout:
    """The public layout whose names these are, or ``UNRECOGNISED``."""
    return next((layout for layout in LAYOUTS if layout.recognises(structure)), UNRECOGNISED)
