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
autocast, else fp32), the 8-bit image in and out, and one tile's working set. When the budget
cannot hold the two buffers they live in unlinked temporary files read back in strips (the OS page
cache holds them while it has room), and the process keeps only a tile, a strip and a band of rows.
The tile plan is a pure function of (image size, generator config, bytes per element, budget):
:func:`plan_tiles`.

Precision: both runs normalise with a scale and shift from float64 sums (``nets.norm``): under
bf16/fp16 autocast the engine's one pass does so too (``nets.norm.float64_statistics``), so a tiled
run differs from it only where a convolution, run on another region, rounds one accumulator to the
other side of a bf16 step; in fp32 one pass keeps torch's kernel and the two differ by float
rounding only.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cgdistill.errors import CgdistillError
from cgdistill.nets import GeneratorConfig
from cgdistill.nets.norm import channel_sums, coefficients, normalise

TILE_CHOICES = ("auto", "off")
MAX_TILE = 256  # output pixels a side; larger tiles save little recomputation (halo ~20 px) for more memory
MIN_TILE = 4  # one bottleneck position
MIN_AUTO_TILE = 32  # below this per-tile overhead dominates and the memory saved is small
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
    spill: bool = False  # keep the 1/4-resolution activations in temporary files, not in memory

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


def tiled_bytes(
    height: int,
    width: int,
    config: GeneratorConfig,
    bytes_per_element: int,
    tile: int,
    strip: int,
    spill: bool = False,
) -> int:
    """Estimated tensor memory of the tiled run: the two bottleneck buffers (unless spilled to files),
    the 8-bit image in and out, one tile's and one strip's working set, and a band of bottleneck rows."""
    h, w = padded_size(height, width)
    channels, row = 4 * config.ngf, 4 * config.ngf * (w // 4) * bytes_per_element
    bottleneck = 0 if spill else 2 * row * (h // 4)
    images = h * w * (config.in_channels + config.out_channels)
    side = min(tile, max(h, w)) + 2 * HALO
    tile_work = TILE_WORK_FACTOR * config.ngf * side * side
    strip_work = STRIP_WORK_FACTOR * channels * (strip + 2) * (w // 4)
    band = 2 * row * (min(tile, h) // 4 + 2 * HALO // 4) if spill else 0  # a band being stored, one being read
    return bottleneck + images + tile_work + strip_work + band


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

    ``auto`` runs one pass when its estimate fits the budget; else tiles with the 1/4-resolution
    activations in memory (the largest tile up to ``MAX_TILE`` that fits); else the same with those
    activations spilled to temporary files; else tiles of ``MIN_AUTO_TILE`` and the thinnest strips,
    spilled (``fits`` is then False). ``off`` is one pass; an int forces that tile side, spilled only when needed.
    """
    single = one_pass_bytes(height, width, config, bytes_per_element)
    strip = _strip_rows(width, config)
    if tile == "off" or (tile == "auto" and single <= budget):
        return TilePlan(0, strip, single, 0, budget)

    def estimate(side: int, rows: int, spill: bool) -> int:
        return tiled_bytes(height, width, config, bytes_per_element, side, rows, spill)

    if tile != "auto":
        side = parse_tile(tile)
        spill = estimate(side, strip, False) > budget
        return TilePlan(side, strip, single, estimate(side, strip, spill), budget, spill)
    for spill in (False, True):
        side = MAX_TILE
        while side > MIN_AUTO_TILE and estimate(side, strip, spill) > budget:
            side //= 2
        if estimate(side, strip, spill) <= budget:
            return TilePlan(side, strip, single, estimate(side, strip, spill), budget, spill)
    side = MIN_AUTO_TILE
    while strip > 1 and estimate(side, strip, True) > budget:
        strip //= 2
    return TilePlan(side, strip, single, estimate(side, strip, True), budget, True)


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


def _forward(op: Op, x: torch.Tensor, src: Rect, dst: Rect, stats: dict[int, tuple[torch.Tensor, torch.Tensor]]):
    if isinstance(op, Conv):
        return _conv_forward(op, x, src, dst)
    if isinstance(op, Upsample):
        y = F.interpolate(x, scale_factor=op.module.scale_factor, mode="nearest")
        return y[:, :, dst[0] - 2 * src[0] : dst[1] - 2 * src[0], dst[2] - 2 * src[2] : dst[3] - 2 * src[2]]
    if isinstance(op, Norm):
        m = op.module
        if not op.needs_statistics:  # batch norm in eval mode: pointwise with its running statistics
            return m(x.contiguous())  # the kernel path one pass takes (a strided view takes another)
        scale, shift = stats[id(op)]
        return normalise(x, scale, shift)
    return op.fn(x)


@dataclass
class _Sums:
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


class _RamStore:
    """A (1, C, H, W) activation kept whole in memory (on ``home``, handed out on ``device``)."""

    def __init__(self, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device, home: torch.device):
        self.shape, self.dtype, self.device = shape, dtype, device
        self.tensor = torch.empty((1, *shape), dtype=dtype, device=home)

    def rows(self, top: int, bottom: int) -> torch.Tensor:
        return self.tensor[:, :, top:bottom].to(self.device)

    def put(self, top: int, x: torch.Tensor) -> None:
        self.tensor[:, :, top : top + x.shape[2]] = x.to(self.tensor.device)

    def close(self) -> None:
        self.tensor = None


class _FileStore:
    """A (1, C, H, W) activation in an unlinked temporary file, row by row ((H, C, W) order, so a strip is one read).

    Used when even one bottleneck-sized buffer is over the budget: the OS keeps the file in its page
    cache while it has room (no copy counts against this process) and writes it to disk otherwise.
    """

    def __init__(self, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device):
        self.shape, self.dtype, self.device = shape, dtype, device
        self.file = tempfile.TemporaryFile(prefix="cgdistill-tiles-")  # noqa: SIM115 (closed by close(), in a finally)
        self.row_bytes = shape[0] * shape[2] * torch.empty((), dtype=dtype).element_size()
        self.cached: tuple[int, int, torch.Tensor] | None = None  # the last rows read, reread by a band of tiles

    def rows(self, top: int, bottom: int) -> torch.Tensor:
        if self.cached is not None and self.cached[0] <= top and bottom <= self.cached[1]:
            return self.cached[2][:, :, top - self.cached[0] : bottom - self.cached[0]]
        buffer = torch.empty((bottom - top, self.shape[0], self.shape[2]), dtype=self.dtype)
        self.file.seek(top * self.row_bytes)
        self.file.readinto(memoryview(buffer.view(torch.uint8).numpy()))
        x = buffer.permute(1, 0, 2)[None].contiguous().to(self.device)
        self.cached = (top, bottom, x)
        return x

    def put(self, top: int, x: torch.Tensor) -> None:
        bottom = top + x.shape[2]
        if self.cached is not None and top < self.cached[1] and self.cached[0] < bottom:
            self.cached = None
        rows = x[0].permute(1, 0, 2).to("cpu", self.dtype).contiguous()
        self.file.seek(top * self.row_bytes)
        self.file.write(memoryview(rows.view(torch.uint8).numpy()))

    def close(self) -> None:
        self.cached = None
        self.file.close()


Store = _RamStore | _FileStore


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
            stores: list[Store] = []

            def store(shape: tuple[int, int, int], dtype: torch.dtype) -> Store:
                home = torch.device("cpu") if plan.spill and device.type != "cpu" else device
                made = _FileStore(shape, dtype, device) if plan.spill and home.type == "cpu" else None
                stores.append(made or _RamStore(shape, dtype, device, home))
                return stores[-1]

            try:
                bottleneck = self._tiled_passes(
                    self.encoder[:end], size, size[0] // 4, read_image, plan.tile, tick, keep=store
                )
                self._on_store(self.encoder[end:], bottleneck, bottleneck, plan.strip)
                branch = store(bottleneck.shape, bottleneck.dtype)
                rows = bottleneck.shape[1]
                for block in self.blocks:
                    self._on_store(block, bottleneck, branch, plan.strip)
                    for top in range(0, rows, plan.strip):  # the skip connection, x + F(x)
                        bottom = min(rows, top + plan.strip)
                        bottleneck.put(top, bottleneck.rows(top, bottom) + branch.rows(top, bottom))
                    tick()
                branch.close()

                def read_bottleneck(rect: Rect) -> torch.Tensor:
                    return bottleneck.rows(rect[0], rect[1])[:, :, :, rect[2] : rect[3]]

                self._tiled_passes(
                    self.decoder,
                    bottleneck.shape[1:],
                    bottleneck.shape[1],
                    read_bottleneck,
                    plan.tile,
                    tick,
                    write=write,
                )
            finally:
                for made in stores:
                    made.close()

    def _tiled_passes(self, ops, size, bottleneck_rows, read, tile, tick, keep=None, write=None) -> Store | None:
        """One pass over tiles per norm in ``ops`` (gathering its statistics), then a last pass that
        keeps its output in a store made by ``keep``, or hands each tile to ``write``.

        Tiles are ``tile // 4`` bottleneck positions a side, scaled to each pass's output grid, so every
        pass partitions its grid exactly (each position counted once in the statistics). Tiles run
        row by row: a kept output is stored one band of rows at a time.
        """
        stops = [*_split(ops), len(ops)]
        kept = band = None
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
                elif keep is not None:
                    if kept is None:
                        kept = keep((y.shape[1], *out_size), y.dtype)
                    if rect[2] == 0:
                        band = torch.empty(
                            (1, y.shape[1], rect[1] - rect[0], out_size[1]), dtype=y.dtype, device=y.device
                        )
                    band[:, :, :, rect[2] : rect[3]] = y
                    if rect[3] == out_size[1]:
                        kept.put(rect[0], band)
                else:
                    write(rect, y)
                del y
                tick()
            if stop < len(ops):
                self.stats[id(ops[stop])] = sums.coefficients(ops[stop])
        return kept

    def _on_store(self, ops: list[Op], src: Store, dst: Store, strip: int) -> None:
        """Run ``ops`` (stride 1, at one resolution) from ``src`` into ``dst`` in row strips; ``dst`` may be ``src``.

        After the first op everything happens in place in ``dst``: a conv saves the rows above each
        strip that the next strip still reads before it overwrites them; a norm gathers its
        statistics over all strips, then applies them.
        """
        rows, cols = dst.shape[1], dst.shape[2]
        source = src
        for op in ops:
            if isinstance(op, Conv):
                self._conv_strips(op, source, dst, strip)
                source = dst
                continue
            if isinstance(op, Norm) and op.needs_statistics:
                sums = _Sums()
                for top in range(0, rows, strip):
                    sums.add(source.rows(top, min(rows, top + strip)))
                self.stats[id(op)] = sums.coefficients(op)
            for top in range(0, rows, strip):
                rect = (top, min(rows, top + strip), 0, cols)
                dst.put(top, _forward(op, source.rows(rect[0], rect[1]), rect, rect, self.stats))
            source = dst
        if source is not dst:
            for top in range(0, rows, strip):
                dst.put(top, source.rows(top, min(rows, top + strip)))

    @staticmethod
    def _conv_strips(op: Conv, src: Store, dst: Store, strip: int) -> None:
        rows, cols = src.shape[1], src.shape[2]
        if strip < op.pad:
            raise ValueError(f"strips of {strip} rows are thinner than the conv's padding {op.pad}")
        saved = None  # the original rows above the current strip, already overwritten in place
        for top in range(0, rows, strip):
            bottom = min(rows, top + strip)
            dst_rect = (top, bottom, 0, cols)
            src_rect = _need_rect(op, dst_rect, (rows, cols))
            if src is not dst:
                x = src.rows(src_rect[0], src_rect[1])
            elif src_rect[0] < top:
                x = torch.cat([saved[:, :, saved.shape[2] - (top - src_rect[0]) :], src.rows(top, src_rect[1])], dim=2)
            else:
                x = src.rows(top, src_rect[1])
            y = _conv_forward(op, x, src_rect, dst_rect)
            if src is dst:
                saved = src.rows(max(top, bottom - op.pad), bottom).clone()
            dst.put(top, y)


# ---------------------------------------------------------------------------------------------
# Integration with translate: budget, engine, padding


def available_memory(device: torch.device) -> int:
    """Memory free for tensors now: MemAvailable on the CPU (/proc/meminfo), the free CUDA memory on a GPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30  # no /proc (macOS, Windows): assume a modest machine


def memory_in_use(device: torch.device) -> int:
    """What this process already holds where the tensors go: resident memory, or allocated CUDA memory."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096)
    except (OSError, ValueError, IndexError):
        return 0


DEFAULT_SHARE = 0.6  # of the free memory: room for the decoded images, the encoder threads and other programs


def tensor_budget(max_memory: int | None, device: torch.device) -> int:
    """Bytes the image's tensors may take: ``max_memory`` (a peak for the whole process) less what it
    holds already, or by default a share of the free memory."""
    if max_memory is None:
        return int(DEFAULT_SHARE * available_memory(device))
    return max(0, max_memory - memory_in_use(device))


def tiler_for(model: nn.Module) -> TiledGenerator | None:
    """A tiled runner for a torch engine's model (plain, or under its engine's autocast); None for other engines."""
    from cgdistill.engines import Autocast
    from cgdistill.nets import ResnetGenerator

    if isinstance(model, Autocast):
        generator, autocast = model.generator, model.context
    elif isinstance(model, ResnetGenerator):
        generator, autocast = model, nullcontext
    else:
        return None
    try:
        return TiledGenerator(generator, autocast)
    except NotTileable:
        return None


def bytes_per_element(model: nn.Module) -> int:
    """2 where activations are bf16/fp16 (an engine under autocast: CPU bf16, CUDA), else 4."""
    from cgdistill.engines import Autocast

    return 2 if isinstance(model, Autocast) else 4


def human_bytes(n: int) -> str:
    """Bytes for a person: ``1.5 GB`` or ``300 MB``."""
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{max(1, round(n / 2**20))} MB"


@dataclass
class TileDecider:
    """What translate asks per image size: run in one pass (in batches that fit), or tile with which runner."""

    model: nn.Module
    device: torch.device
    tile: str | int = "auto"
    max_memory: int | None = None
    tiled_model: nn.Module | None = None  # the torch model for images that tile when ``model`` cannot
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tiler = tiler_for(self.model)
        runner = self.model
        if self.tiler is None and self.tiled_model is not None:
            self.tiler = tiler_for(self.tiled_model)
            runner = self.tiled_model
        self.config = getattr(self.model, "config", None)
        self.bytes = bytes_per_element(runner)

    def plan(self, height: int, width: int) -> TilePlan | None:
        """The plan for this size; None when the model's architecture is unknown (one pass, as always)."""
        if self.config is None or self.tile == "off":
            return None
        budget = tensor_budget(self.max_memory, self.device)
        plan = plan_tiles(height, width, self.config, self.bytes, budget, self.tile)
        if plan.tiled and self.tiler is None:
            note = (
                f"Images of {width}x{height} need about {human_bytes(plan.one_pass_bytes)} in one pass, over the budget of "
                f"{human_bytes(budget)}; this engine cannot tile them exactly, so they run in one pass (--engine torch tiles them)."
            )
            if note not in self.notes:
                self.notes.append(note)
            return TilePlan(0, plan.strip, plan.one_pass_bytes, 0, budget)
        if plan.tiled and not plan.fits:
            note = (
                f"Images of {width}x{height} need about {human_bytes(plan.tiled_bytes)} even in tiles of {plan.tile} px with "
                f"the 1/4-resolution activations in temporary files, over the budget of {human_bytes(budget)}; they run anyway."
            )
            if note not in self.notes:
                self.notes.append(note)
        return plan

    def batches(self, count: int, plan: TilePlan | None) -> int:
        """Images per one-pass batch so that a batch's estimate fits the budget (at least one)."""
        if plan is None or plan.one_pass_bytes <= 0:
            return count
        return max(1, min(count, plan.budget // plan.one_pass_bytes))

    def translate(
        self, pixels: np.ndarray, plan: TilePlan, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """One HxWx3 uint8 image through the tiled runner, padded as ``translate_batch`` pads and cropped back."""
        from cgdistill.translate import padding_to_multiple

        h, w = pixels.shape[:2]
        pads, mode = padding_to_multiple(h, w, 4)
        if any(pads):
            left, right, top, bottom = pads
            pixels = np.pad(
                pixels, ((top, bottom), (left, right), (0, 0)), mode="reflect" if mode == "reflect" else "edge"
            )
        else:
            top = left = 0
        crop = (top, top + h, left, left + w)
        return self.tiler(torch.from_numpy(np.ascontiguousarray(pixels)), plan, self.device, crop, progress)
