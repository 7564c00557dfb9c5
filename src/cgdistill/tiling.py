"""Exact tiled execution of a ResNet generator: any image size in bounded memory, equal to one pass.

Instance norm normalises each channel over the *whole* image, so a tile run alone gets other
statistics than the same pixels inside the full image (the seams of naive tiling). Here every
normalisation layer's per-channel statistics are gathered over the whole image first (sum and sum
of squares in float64, tile by tile) and only then applied, and each tile is computed on a region
grown by the receptive field of the layers between two normalisations (its halo): inside the image
a tile sees its real neighbours, at the image edge the padding of the one-pass run (reflect or
zeros). Batch norm in eval mode is already pointwise: it tiles with halos alone.

What runs where (docs/usage-translate-compare.md, "Large images"):

- **Encoder** (stem, two stride-2 convs), in tiles: one pass over the image per norm layer, each
  recomputing the cheap full- and half-resolution layers before it; the last pass keeps the
  1/4-resolution conv output whole (16x fewer positions than the image, 4*ngf channels).
- **Residual blocks**, on that kept bottleneck (about 88% of the teacher's MACs, computed once):
  a second bottleneck-sized buffer holds the branch; convs run in row strips written back in place
  (only the halo rows above a strip are saved), norms gather statistics strip by strip.
- **Decoder** (two upsamplings, the 7x7 head), in tiles again: one pass per norm layer, read from
  the kept bottleneck; the last pass writes 8-bit tiles into the output image.

Memory: two bottleneck buffers at the dtype the one-pass run holds activations in (bf16 under
autocast, else fp32), the 8-bit image in and out, and one tile's working set. The tile plan is a
pure function of (image size, generator config, bytes per element, budget): :func:`plan_tiles`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cgdistill.errors import CgdistillError
from cgdistill.nets import GeneratorConfig

TILE_CHOICES = ("auto", "off")
MAX_TILE = 256  # output pixels a side; larger tiles save little recomputation (halo ~20 px) for more memory
MIN_TILE = 4  # one bottleneck position
HALO = 24  # full-resolution pixels around a tile, generously: 7x7 head + stem, stride-2 and 3x3 convs
# Bytes a tile keeps alive per full-resolution position and ngf channel (fp32): the layer input,
# its padded copy, the conv output and the normalised output, plus slack for convolution scratch.
TILE_WORK_FACTOR = 6 * 4
STRIP_WORK_FACTOR = 4 * 4  # the same for a strip of residual-block rows at 4*ngf channels
# One pass keeps a few full-resolution ngf-channel activations alive at once (measured: 9.2 GB for
# the teacher at 12 MP under bf16, docs/benchmarks.md), plus the float image in and out.
ONE_PASS_ACTIVATIONS = 6
STRIP_TARGET_BYTES = 32 * 2**20

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str, flag: str = "--max-memory") -> int:
    """Bytes from ``1.5G``, ``800M``, ``2048K`` or a plain byte count (powers of 1024)."""
    match = _SIZE.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise CgdistillError(f"{flag} {text!r} is not a size; write it like 1.5G, 800M or 2048K.")
    scale = 1024 ** " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * scale)


def parse_tile(text: str | int) -> str | int:
    """``auto``, ``off`` or a tile side in pixels (rounded up to a multiple of 4, the generator's stride)."""
    value = str(text).strip().lower()
    if value in TILE_CHOICES:
        return value
    if value.isdigit() and int(value) > 0:
        return -(-int(value) // MIN_TILE) * MIN_TILE
    raise CgdistillError(f"--tile {text!r} is not valid; use auto, off or a tile side in pixels such as 512.")


# ---------------------------------------------------------------------------------------------
# The plan: a pure function of size, architecture, precision and budget


@dataclass(frozen=True)
class TilePlan:
    """How one image runs: ``tile`` output pixels a side (0: one pass) and residual-block row ``strip``."""

    tile: int
    strip: int
    one_pass_bytes: int
    tiled_bytes: int
    budget: int

    @property
    def tiled(self) -> bool:
        return self.tile > 0

    @property
    def fits(self) -> bool:
        return (self.tiled_bytes if self.tiled else self.one_pass_bytes) <= self.budget


def padded_size(height: int, width: int, multiple: int = 4, minimum: int = 8) -> tuple[int, int]:
    """The size the generator runs at (``translate.pad_to_multiple``'s target)."""
    least = -(-minimum // multiple) * multiple
    return max(-(-height // multiple) * multiple, least), max(-(-width // multiple) * multiple, least)


def one_pass_bytes(height: int, width: int, config: GeneratorConfig, bytes_per_element: int) -> int:
    """Estimated tensor memory of translating one image in one pass (a few full-resolution activations)."""
    h, w = padded_size(height, width)
    return h * w * (ONE_PASS_ACTIVATIONS * config.ngf * bytes_per_element + 2 * config.in_channels * 4)


def tiled_bytes(height: int, width: int, config: GeneratorConfig, bytes_per_element: int, tile: int, strip: int) -> int:
    """Estimated tensor memory of the tiled run: two bottleneck buffers, 8-bit image in and out, one tile, one strip."""
    h, w = padded_size(height, width)
    bottleneck = 4 * config.ngf * (h // 4) * (w // 4) * bytes_per_element
    images = h * w * (config.in_channels + config.out_channels)
    side = min(tile, max(h, w)) + 2 * HALO
    tile_work = TILE_WORK_FACTOR * config.ngf * side * side
    strip_work = STRIP_WORK_FACTOR * 4 * config.ngf * (strip + 2) * (w // 4)
    return 2 * bottleneck + images + tile_work + strip_work


def _strip_rows(width: int, config: GeneratorConfig) -> int:
    """Residual-block rows per strip: about ``STRIP_TARGET_BYTES`` of fp32 a strip."""
    row = 4 * config.ngf * max(1, padded_size(8, width)[1] // 4) * 4
    return max(1, STRIP_TARGET_BYTES // row)


def plan_tiles(
    height: int,
    width: int,
    config: GeneratorConfig,
    bytes_per_element: int,
    budget: int,
    tile: str | int = "auto",
) -> TilePlan:
    """The plan for one image of ``height`` x ``width`` under ``budget`` bytes of tensor memory.

    ``auto`` runs one pass when its estimate fits the budget, else the largest tile (up to
    ``MAX_TILE``) whose estimate fits, else the smallest tile (``fits`` is then False: the
    bottleneck buffers alone exceed the budget). ``off`` is one pass; an int forces that tile side.
    """
    single = one_pass_bytes(height, width, config, bytes_per_element)
    strip = _strip_rows(width, config)
    if tile == "off" or (tile == "auto" and single <= budget):
        return TilePlan(0, strip, single, 0, budget)
    if tile != "auto":
        side = parse_tile(tile)
        return TilePlan(side, strip, single, tiled_bytes(height, width, config, bytes_per_element, side, strip), budget)
    side = MAX_TILE
    while side > MIN_TILE and tiled_bytes(height, width, config, bytes_per_element, side, strip) > budget:
        side //= 2
    while strip > 1 and tiled_bytes(height, width, config, bytes_per_element, side, strip) > budget:
        strip //= 2
    return TilePlan(side, strip, single, tiled_bytes(height, width, config, bytes_per_element, side, strip), budget)


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
class Norm:
    module: nn.Module

    @property
    def needs_statistics(self) -> bool:
        return not isinstance(self.module, nn.BatchNorm2d)


@dataclass(frozen=True)
class Pointwise:
    fn: Callable[[torch.Tensor], torch.Tensor]


Op = Conv | Upsample | Norm | Pointwise


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


def _out_size(op: Op, n: int) -> int:
    if isinstance(op, Conv):
        if op.transposed:
            extra = _square(op.module.output_padding)
            return (n - 1) * op.stride - 2 * op.pad + op.kernel + extra
        return (n + 2 * op.pad - op.kernel) // op.stride + 1
    if isinstance(op, Upsample):
        return 2 * n
    return n


def _need(op: Op, lo: int, hi: int, n_in: int) -> tuple[int, int]:
    """The input range (clipped to the grid) that output range [lo, hi) of ``op`` reads."""
    if isinstance(op, Conv):
        if op.transposed:
            first = -(-(lo + op.pad - op.kernel + 1) // op.stride)
            last = (hi - 1 + op.pad) // op.stride
            return max(0, first), min(n_in, last + 1)
        return max(0, lo * op.stride - op.pad), min(n_in, (hi - 1) * op.stride - op.pad + op.kernel)
    if isinstance(op, Upsample):
        return lo // 2, (hi - 1) // 2 + 1
    return lo, hi


Rect = tuple[int, int, int, int]  # top, bottom, left, right (bottom and right exclusive)


def _need_rect(op: Op, rect: Rect, size: tuple[int, int]) -> Rect:
    return (*_need(op, rect[0], rect[1], size[0]), *_need(op, rect[2], rect[3], size[1]))


def _conv_forward(op: Conv, x: torch.Tensor, src: Rect, dst: Rect) -> torch.Tensor:
    m = op.module
    if op.transposed:
        y = F.conv_transpose2d(x, m.weight, m.bias, stride=op.stride, groups=m.groups)
        top, left = src[0] * op.stride - op.pad, src[2] * op.stride - op.pad
        return y[:, :, dst[0] - top : dst[1] - top, dst[2] - left : dst[3] - left]
    # The padding the one-pass run would add, only where this region meets the image edge.
    top = src[0] - (dst[0] * op.stride - op.pad)
    bottom = (dst[1] - 1) * op.stride - op.pad + op.kernel - src[1]
    left = src[2] - (dst[2] * op.stride - op.pad)
    right = (dst[3] - 1) * op.stride - op.pad + op.kernel - src[3]
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), mode=op.mode)
    return F.conv2d(x, m.weight, m.bias, stride=op.stride, groups=m.groups)


def _forward(op: Op, x: torch.Tensor, src: Rect, dst: Rect, stats: dict[int, tuple[torch.Tensor, torch.Tensor]]):
    if isinstance(op, Conv):
        return _conv_forward(op, x, src, dst)
    if isinstance(op, Upsample):
        y = F.interpolate(x, scale_factor=op.module.scale_factor, mode="nearest")
        return y[:, :, dst[0] - 2 * src[0] : dst[1] - 2 * src[0], dst[2] - 2 * src[2] : dst[3] - 2 * src[2]]
    if isinstance(op, Norm):
        if id(op) not in stats:  # batch norm in eval mode: its running statistics
            stats[id(op)] = _norm_coefficients(op)
        alpha, beta = stats[id(op)]
        return (x.float() * alpha + beta).to(x.dtype)
    return op.fn(x)


def _norm_coefficients(op: Norm, sums: _Sums | None = None):
    """Per-channel scale and shift (float32, shaped for NCHW) from float64 sums, as the norm layer computes them.

    On bf16 (or fp16) activations torch's instance norm keeps its mean and variance in that dtype and
    rounds the inverse standard deviation to it too (measured: torch 2.x on the CPU); doing the same
    here is what keeps a bf16 tiled run on the one-pass result rather than 1-6 grey levels off it.
    """
    m = op.module
    if isinstance(m, nn.BatchNorm2d) or sums is None:
        mean, var = m.running_mean.double(), m.running_var.double()
        invstd = torch.rsqrt(var + m.eps)
    else:
        mean = sums.total / sums.count
        var = (sums.squares / sums.count - mean * mean).clamp_(min=0)  # biased, as instance norm uses
        low = sums.dtype if sums.dtype in (torch.bfloat16, torch.float16) else None
        if low is not None:
            mean, var = mean.to(low).double(), var.to(low).double()
        invstd = torch.rsqrt(var + m.eps)
        if low is not None:
            invstd = invstd.to(low).double()
    alpha = invstd * m.weight.double() if m.weight is not None else invstd
    beta = -mean * alpha
    if m.bias is not None:
        beta = beta + m.bias.double()
    return alpha.float().view(1, -1, 1, 1), beta.float().view(1, -1, 1, 1)


@dataclass
class _Sums:
    total: torch.Tensor | None = None
    squares: torch.Tensor | None = None
    count: int = 0
    dtype: torch.dtype = torch.float32

    def add(self, y: torch.Tensor) -> None:
        self.dtype = y.dtype
        y = y.double()
        total, squares = y.sum(dim=(0, 2, 3)), (y * y).sum(dim=(0, 2, 3))
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += y.shape[0] * y.shape[2] * y.shape[3]


def _tiles(size: tuple[int, int], side: int) -> Iterator[Rect]:
    for top in range(0, size[0], side):
        for left in range(0, size[1], side):
            yield top, min(size[0], top + side), left, min(size[1], left + side)


@dataclass
class _Chain:
    """Ops from a stored grid to the next point where a norm needs the whole image's statistics."""

    ops: list[Op]
    sizes: list[tuple[int, int]] = field(default_factory=list)  # input size of each op, then the output size

    def plan(self, size: tuple[int, int]) -> None:
        self.sizes = [size]
        for op in self.ops:
            self.sizes.append((_out_size(op, self.sizes[-1][0]), _out_size(op, self.sizes[-1][1])))

    def run(self, rect: Rect, read: Callable[[Rect], torch.Tensor], stats) -> torch.Tensor:
        rects = [rect]
        for op, size in zip(reversed(self.ops), reversed(self.sizes[:-1]), strict=True):
            rects.append(_need_rect(op, rects[-1], size))
        rects.reverse()
        x = read(rects[0])
        for i, op in enumerate(self.ops):
            x = _forward(op, x, rects[i], rects[i + 1], stats)
        return x


def _split(ops: list[Op]) -> list[int]:
    """Indices of the norms that need whole-image statistics."""
    return [i for i, op in enumerate(ops) if isinstance(op, Norm) and op.needs_statistics]


class TiledGenerator:
    """A ``ResnetGenerator`` run tile by tile with whole-image normalisation statistics (see the module docstring)."""

    def __init__(self, generator: nn.Module, autocast: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.generator = generator
        self.autocast = autocast
        self.encoder = layer_ops(generator.stem) + layer_ops(generator.down)
        self.blocks = [layer_ops(block.conv) for block in generator.blocks]
        self.decoder = layer_ops(generator.up) + layer_ops(generator.head)
        last = max(i for i, op in enumerate(self.encoder) if isinstance(op, Norm))
        if not all(isinstance(op, Norm | Pointwise) for op in self.encoder[last:]):
            raise NotTileable("encoder ends in a spatial layer after its last norm")
        for block in self.blocks:
            for op in block:
                if isinstance(op, Upsample) or (isinstance(op, Conv) and (op.transposed or op.stride != 1)):
                    raise NotTileable("a residual block that changes the grid")
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def units(self, size: tuple[int, int], plan: TilePlan) -> int:
        """Progress units for an image of padded ``size``: tiles of every tiled pass, plus one per block."""
        side = max(1, plan.tile // 4)
        count = math.ceil(size[0] // 4 / side) * math.ceil(size[1] // 4 / side)
        encoder_passes = 1 + len(_split(self.encoder[: self._encoder_end()]))
        decoder_passes = 1 + len(_split(self.decoder))
        return count * (encoder_passes + decoder_passes) + len(self.blocks)

    def _encoder_end(self) -> int:
        return max(i for i, op in enumerate(self.encoder) if isinstance(op, Norm))

    def __call__(
        self,
        pixels: torch.Tensor,
        plan: TilePlan,
        device: torch.device,
        crop: Rect | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Translate one padded uint8 HxWxC image; the uint8 HxWxC result inside ``crop`` (default: all of it)."""
        crop = crop or (0, pixels.shape[0], 0, pixels.shape[1])
        out = np.empty((crop[1] - crop[0], crop[3] - crop[2], self.generator.config.out_channels), dtype=np.uint8)

        def write(rect: Rect, y: torch.Tensor) -> None:
            top, bottom = max(rect[0], crop[0]), min(rect[1], crop[1])
            left, right = max(rect[2], crop[2]), min(rect[3], crop[3])
            if top >= bottom or left >= right:
                return
            y = y[:, :, top - rect[0] : bottom - rect[0], left - rect[2] : right - rect[2]].float()
            y = y.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)  # as translate_batch
            out[top - crop[0] : bottom - crop[0], left - crop[2] : right - crop[2]] = (
                y[0].permute(1, 2, 0).cpu().numpy()
            )

        self.run(pixels, plan, device, write, progress)
        return out

    def run(
        self,
        pixels: torch.Tensor,
        plan: TilePlan,
        device: torch.device,
        write: Callable[[Rect, torch.Tensor], None],
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Translate one padded uint8 HxWxC image, handing each output tile (1xCxhxw in [-1, 1]) to ``write``."""
        size = (pixels.shape[0], pixels.shape[1])
        if size[0] % 4 or size[1] % 4:
            raise ValueError(f"the image must be padded to a multiple of 4, got {size}")
        total, done = self.units(size, plan), 0

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        def read_image(rect: Rect) -> torch.Tensor:
            region = pixels[rect[0] : rect[1], rect[2] : rect[3]].to(device).permute(2, 0, 1)[None]
            return region.float().div_(127.5).sub_(1.0)  # as translate_batch converts

        with torch.inference_mode(), self.autocast():
            self.stats = {}
            end = self._encoder_end()
            bottleneck = self._tiled_passes(self.encoder[:end], size, size[0] // 4, read_image, plan.tile, tick)
            self._on_buffer(self.encoder[end:], bottleneck, bottleneck, plan.strip)
            branch = torch.empty_like(bottleneck)
            for block in self.blocks:
                self._on_buffer(block, bottleneck, branch, plan.strip)
                for i in range(0, bottleneck.shape[2], plan.strip):  # the skip connection, x + F(x)
                    rows = slice(i, i + plan.strip)
                    bottleneck[:, :, rows] = bottleneck[:, :, rows] + branch[:, :, rows]
                tick()
            del branch

            def read_bottleneck(rect: Rect) -> torch.Tensor:
                return bottleneck[:, :, rect[0] : rect[1], rect[2] : rect[3]]

            self._tiled_passes(
                self.decoder, tuple(bottleneck.shape[2:]), bottleneck.shape[2], read_bottleneck, plan.tile, tick, write
            )

    def _tiled_passes(self, ops, size, bottleneck_rows, read, tile, tick, write=None) -> torch.Tensor | None:
        """One pass over tiles per norm in ``ops`` (gathering its statistics), then a last pass that keeps
        its output whole (``write`` None) or hands each tile to ``write``.

        Tiles are ``tile // 4`` bottleneck positions a side, scaled to each pass's output grid, so every
        pass partitions its grid exactly (each position counted once in the statistics).
        """
        stops = [*_split(ops), len(ops)]
        kept = None
        for stop in stops:
            chain = _Chain(ops[:stop])
            chain.plan(size)
            out_size = chain.sizes[-1]
            side = max(1, tile // 4) * out_size[0] // bottleneck_rows
            sums = _Sums()
            for rect in _tiles(out_size, side):
                y = chain.run(rect, read, self.stats)
                if stop < len(ops):
                    sums.add(y)
                elif write is None:
                    if kept is None:
                        kept = torch.empty((1, y.shape[1], *out_size), dtype=y.dtype, device=y.device)
                    kept[:, :, rect[0] : rect[1], rect[2] : rect[3]] = y
                else:
                    write(rect, y)
                del y
                tick()
            if stop < len(ops):
                self.stats[id(ops[stop])] = _norm_coefficients(ops[stop], sums)
        return kept

    def _on_buffer(self, ops: list[Op], src: torch.Tensor, dst: torch.Tensor, strip: int) -> None:
        """Run ``ops`` (stride 1, at one resolution) from ``src`` into ``dst`` in row strips; ``dst`` may be ``src``.

        After the first op everything happens in place in ``dst``: a conv saves the rows above each
        strip that the next strip still reads before it overwrites them; a norm gathers its
        statistics over all strips, then applies them.
        """
        rows, cols = dst.shape[2], dst.shape[3]
        source = src
        for op in ops:
            if isinstance(op, Conv):
                self._conv_strips(op, source, dst, strip)
                source = dst
                continue
            if source is not dst:
                dst.copy_(source)
                source = dst
            if isinstance(op, Norm) and op.needs_statistics:
                sums = _Sums()
                for i in range(0, rows, strip):
                    sums.add(dst[:, :, i : i + strip])
                self.stats[id(op)] = _norm_coefficients(op, sums)
            for i in range(0, rows, strip):
                rect = (i, min(rows, i + strip), 0, cols)
                dst[:, :, i : i + strip] = _forward(op, dst[:, :, i : i + strip], rect, rect, self.stats)
        if source is not dst:
            dst.copy_(source)

    @staticmethod
    def _conv_strips(op: Conv, src: torch.Tensor, dst: torch.Tensor, strip: int) -> None:
        rows, cols = src.shape[2], src.shape[3]
        if strip < op.pad:
            raise ValueError(f"strips of {strip} rows are thinner than the conv's padding {op.pad}")
        saved = src[:, :, :0]  # the original rows above the current strip, already overwritten in place
        for top in range(0, rows, strip):
            bottom = min(rows, top + strip)
            dst_rect = (top, bottom, 0, cols)
            src_rect = _need_rect(op, dst_rect, (rows, cols))
            if src is not dst:
                x = src[:, :, src_rect[0] : src_rect[1]]
            elif src_rect[0] < top:
                x = torch.cat(
                    [saved[:, :, saved.shape[2] - (top - src_rect[0]) :], src[:, :, top : src_rect[1]]], dim=2
                )
            else:
                x = src[:, :, top : src_rect[1]]
            y = _conv_forward(op, x, src_rect, dst_rect)
            if src is dst:
                saved = src[:, :, max(top, bottom - op.pad) : bottom].clone()
            dst[:, :, top:bottom] = y
