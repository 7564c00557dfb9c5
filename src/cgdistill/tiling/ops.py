"""The generator as a list of layers with known geometry, each run on a region of its input grid.

A region of an op's output reads a region of its input (``need``); a conv pads only where its region
meets the image edge, as the one-pass run would; a norm applies statistics gathered over the whole
image (``Sums``), never the tile's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cgdistill.nets.norm import channel_sums, coefficients, normalise

# ---------------------------------------------------------------------------------------------
# The generator as a list of layers with known geometry


@dataclass(frozen=True)
class Conv:
    """A conv (or transposed conv) with its padding made explicit, so a tile pads only at the image edge."""

    module: nn.Module
    kernel: int
    stride: int
    pad: int
    mode: str  # "reflect" or "constant"
    transposed: bool = False


@dataclass(frozen=True)
class Upsample:
    module: nn.Upsample


@dataclass(frozen=True)
class Shuffle:
    """2x2 pixel blocks to channels (``down``: space-to-depth) or back (pixel shuffle): exact, no padding."""

    down: bool


@dataclass(frozen=True)
class Norm:
    module: nn.Module

    @property
    def needs_statistics(self) -> bool:
        return not isinstance(self.module, nn.BatchNorm2d)


@dataclass(frozen=True)
class Pointwise:
    fn: Callable[[torch.Tensor], torch.Tensor]


Op = Conv | Upsample | Shuffle | Norm | Pointwise


class NotTileable(Exception):
    """The module holds a layer this tiler does not know; it runs in one pass."""


def _square(value) -> int:
    values = set(value) if isinstance(value, tuple | list) else {value}
    if len(values) != 1:
        raise NotTileable(f"non-square geometry {value}")
    return int(values.pop())


def layer_ops(modules: nn.Module) -> list[Op]:
    """The layers of a ``Sequential`` as ops; padding modules fold into the conv after them."""
    ops: list[Op] = []
    pending: tuple[int, str] | None = None
    for module in modules.children() if isinstance(modules, nn.Sequential) else [modules]:
        if isinstance(module, nn.ReflectionPad2d | nn.ZeroPad2d):
            mode = "reflect" if isinstance(module, nn.ReflectionPad2d) else "constant"
            pending = (_square(module.padding), mode)
        elif isinstance(module, nn.Conv2d):
            if _square(module.dilation) != 1:
                raise NotTileable("dilated conv")
            pad = _square(module.padding)
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            if pending is not None:
                if pad:
                    raise NotTileable("padding twice")
                pad, mode = pending
                pending = None
            if mode not in ("reflect", "constant"):
                raise NotTileable(f"padding mode {mode}")
            ops.append(Conv(module, _square(module.kernel_size), _square(module.stride), pad, mode))
        elif isinstance(module, nn.ConvTranspose2d):
            if _square(module.dilation) != 1 or pending is not None:
                raise NotTileable("unsupported transposed conv")
            ops.append(
                Conv(module, _square(module.kernel_size), _square(module.stride), _square(module.padding), "", True)
            )
        elif isinstance(module, nn.PixelUnshuffle | nn.PixelShuffle):
            factor = module.downscale_factor if isinstance(module, nn.PixelUnshuffle) else module.upscale_factor
            if factor != 2 or pending is not None:
                raise NotTileable("pixel shuffle other than 2x2")
            ops.append(Shuffle(isinstance(module, nn.PixelUnshuffle)))
        elif isinstance(module, nn.Upsample):
            if module.mode != "nearest" or module.scale_factor not in (2, 2.0, (2.0, 2.0)):
                raise NotTileable("upsampling other than nearest x2")
            ops.append(Upsample(module))
        elif isinstance(module, nn.InstanceNorm2d | nn.BatchNorm2d):
            ops.append(Norm(module))
        elif isinstance(module, nn.ReLU):
            ops.append(Pointwise(F.relu))
        elif isinstance(module, nn.Tanh):
            ops.append(Pointwise(torch.tanh))
        elif isinstance(module, nn.Dropout | nn.Identity):
            continue  # identity in eval mode
        elif isinstance(module, nn.Sequential):
            if pending is not None:
                raise NotTileable("padding before a nested block")
            ops.extend(layer_ops(module))
        else:
            raise NotTileable(type(module).__name__)
    if pending is not None:
        raise NotTileable("padding with no conv after it")
    return ops


def out_size(op: Op, n: int) -> int:
    if isinstance(op, Conv):
        if op.transposed:
            extra = _square(op.module.output_padding)
            return (n - 1) * op.stride - 2 * op.pad + op.kernel + extra
        return (n + 2 * op.pad - op.kernel) // op.stride + 1
    if isinstance(op, Upsample):
        return 2 * n
    if isinstance(op, Shuffle):
        return n // 2 if op.down else 2 * n
    return n


def need(op: Op, lo: int, hi: int, n_in: int) -> tuple[int, int]:
    """The input range (clipped to the grid) that output range [lo, hi) of ``op`` reads."""
    if isinstance(op, Conv):
        if op.transposed:
            first = -(-(lo + op.pad - op.kernel + 1) // op.stride)
            last = (hi - 1 + op.pad) // op.stride
            return max(0, first), min(n_in, last + 1)
        return max(0, lo * op.stride - op.pad), min(n_in, (hi - 1) * op.stride - op.pad + op.kernel)
    if isinstance(op, Upsample) or (isinstance(op, Shuffle) and not op.down):
        return lo // 2, (hi - 1) // 2 + 1
    if isinstance(op, Shuffle):
        return 2 * lo, min(n_in, 2 * hi)
    return lo, hi


Rect = tuple[int, int, int, int]  # top, bottom, left, right (bottom and right exclusive)


def need_rect(op: Op, rect: Rect, size: tuple[int, int]) -> Rect:
    return (*need(op, rect[0], rect[1], size[0]), *need(op, rect[2], rect[3], size[1]))


def conv_forward(op: Conv, x: torch.Tensor, src: Rect, dst: Rect) -> torch.Tensor:
    m = op.module
    if op.transposed:
        # The module's own padding (oneDNN runs padding 0 several times slower): local output 0 is
        # then global src_start * stride, and the _need range covers [dst start, dst end).
        y = F.conv_transpose2d(
            x, m.weight, m.bias, stride=op.stride, padding=op.pad, output_padding=m.output_padding, groups=m.groups
        )
        top, left = src[0] * op.stride, src[2] * op.stride
        return y[:, :, dst[0] - top : dst[1] - top, dst[2] - left : dst[3] - left]
    # The padding the one-pass run would add, only where this region meets the image edge.
    top = src[0] - (dst[0] * op.stride - op.pad)
    bottom = (dst[1] - 1) * op.stride - op.pad + op.kernel - src[1]
    left = src[2] - (dst[2] * op.stride - op.pad)
    right = (dst[3] - 1) * op.stride - op.pad + op.kernel - src[3]
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), mode=op.mode)
    return F.conv2d(x, m.weight, m.bias, stride=op.stride, groups=m.groups)


def _doubled_crop(y: torch.Tensor, src: Rect, dst: Rect) -> torch.Tensor:
    """The ``dst`` region of ``y``, a layer's 2x output of the ``src`` region of its input."""
    return y[:, :, dst[0] - 2 * src[0] : dst[1] - 2 * src[0], dst[2] - 2 * src[2] : dst[3] - 2 * src[2]]


def forward_op(op: Op, x: torch.Tensor, src: Rect, dst: Rect, stats: dict[int, tuple[torch.Tensor, torch.Tensor]]):
    if isinstance(op, Conv):
        return conv_forward(op, x, src, dst)
    if isinstance(op, Upsample):
        return _doubled_crop(F.interpolate(x, scale_factor=op.module.scale_factor, mode="nearest"), src, dst)
    if isinstance(op, Shuffle):
        if op.down:  # the region read is exactly the 2x2 blocks of the region written
            return F.pixel_unshuffle(x, 2)
        return _doubled_crop(F.pixel_shuffle(x, 2), src, dst)
    if isinstance(op, Norm):
        m = op.module
        if not op.needs_statistics:  # batch norm in eval mode: pointwise with its running statistics
            return m(x.contiguous())  # the kernel path one pass takes (a strided view takes another)
        scale, shift = stats[id(op)]
        return normalise(x, scale, shift)
    return op.fn(x)


@dataclass
class Sums:
    """Float64 sums of one norm's input over the whole image, gathered tile by tile (``nets.norm.channel_sums``)."""

    total: torch.Tensor | None = None
    squares: torch.Tensor | None = None
    count: int = 0
    dtype: torch.dtype = torch.float32

    def add(self, y: torch.Tensor) -> None:
        total, squares = channel_sums(y)
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += y.shape[2] * y.shape[3]
        self.dtype = y.dtype

    def coefficients(self, norm: Norm) -> tuple[torch.Tensor, torch.Tensor]:
        m = norm.module
        return coefficients(self.total, self.squares, self.count, m.weight, m.bias, m.eps, self.dtype)


def tiles(size: tuple[int, int], side: int) -> Iterator[Rect]:
    for top in range(0, size[0], side):
        for left in range(0, size[1], side):
            yield top, min(size[0], top + side), left, min(size[1], left + side)


@dataclass
class Chain:
    """Ops from a stored grid to the next point where a norm needs the whole image's statistics."""

    ops: list[Op]
    sizes: list[tuple[int, int]] = field(default_factory=list)  # input size of each op, then the output size

    def plan(self, size: tuple[int, int]) -> None:
        self.sizes = [size]
        for op in self.ops:
            self.sizes.append((out_size(op, self.sizes[-1][0]), out_size(op, self.sizes[-1][1])))

    def run(self, rect: Rect, read: Callable[[Rect], torch.Tensor], stats) -> torch.Tensor:
        rects = [rect]
        for op, size in zip(reversed(self.ops), reversed(self.sizes[:-1]), strict=True):
            rects.append(need_rect(op, rects[-1], size))
        rects.reverse()
        x = read(rects[0])
        for i, op in enumerate(self.ops):
            x = forward_op(op, x, rects[i], rects[i + 1], stats)
        return x


def norm_splits(ops: list[Op]) -> list[int]:
    """Indices of the norms that need whole-image statistics."""
    return [i for i, op in enumerate(ops) if isinstance(op, Norm) and op.needs_statistics]
