"""The tile plan: a pure function of image size, generator config, bytes per element and budget."""

from __future__ import annotations

from dataclasses import dataclass

from cgdistill.forward import padded_size
from cgdistill.nets import GeneratorConfig

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
# ``--tile auto`` tiles on a CPU, even with memory to spare, an image of TILE_FROM_PIXELS or more whose
# one pass holds full-resolution activations of TILE_FROM_ELEMENTS (ngf channels x pixels) or more:
# there the tiled run is faster (docs/benchmarks.md, "When tiles are faster"). One pass takes its
# large activations as fresh pages from the kernel on every call (the allocator gives blocks that
# large back when they are freed), and the page faults cost more than the tiles' recomputed layers;
# tiles keep every tensor small and reused. Under 1 MP one pass keeps torch's norm kernel, which
# tiles cannot use (``engines.FLOAT64_NORM_PIXELS``).
TILE_FROM_PIXELS = 2**20
TILE_FROM_ELEMENTS = 2**25  # ngf x pixels: from 1 MP at ngf 32 and more, from 2 MP at ngf 16
# The tensor memory such tiles may take however much is free: enough to keep the 1/4-resolution
# buffers in memory up to about 3 MP for the teacher (spilling them to files cost 26-52% at 1 MP),
# and for a 12 MP teacher photo the plan `--max-memory 1.5G` gives (spilled, 128 px tiles), whose
# time in-memory buffers would improve by ~5% for 0.8 GB more.
TILE_SPEED_BUDGET = 384 * 2**20


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


def round_tile(side: int) -> int:
    """A forced tile side rounded up to whole bottleneck positions (``MIN_TILE`` pixels, the generator's stride)."""
    return -(-int(side) // MIN_TILE) * MIN_TILE


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


def tiles_for_speed(height: int, width: int, config: GeneratorConfig, on_cpu: bool = True) -> bool:
    """Whether ``--tile auto`` tiles an image of this size for speed alone: on a CPU, from ``TILE_FROM_PIXELS``
    and ``TILE_FROM_ELEMENTS`` (on a GPU one pass was not measured slower)."""
    pixels = height * width
    return on_cpu and pixels >= TILE_FROM_PIXELS and pixels * config.ngf >= TILE_FROM_ELEMENTS


def plan_tiles(
    height: int,
    width: int,
    config: GeneratorConfig,
    bytes_per_element: int,
    budget: int,
    tile: str | int = "auto",
    on_cpu: bool = True,
) -> TilePlan:
    """The plan for one image of ``height`` x ``width`` under ``budget`` bytes of tensor memory.

    ``auto`` runs one pass when its estimate fits the budget, unless the image tiles for speed
    (:func:`tiles_for_speed`; ``on_cpu`` False: never). Those tiles take at most ``TILE_SPEED_BUDGET``:
    ``MAX_TILE`` tiles with the 1/4-resolution activations in memory, else spilled to temporary
    files, else smaller spilled tiles (small tiles are slow, so they spill before they shrink), else
    ``MAX_TILE`` spilled. An image over the budget gets tiles with those activations in memory (the
    largest tile up to ``MAX_TILE`` that fits); else the same spilled; else tiles of
    ``MIN_AUTO_TILE`` and the thinnest strips, spilled (``fits`` is then False). ``off`` is one
    pass; an int forces that tile side, spilled only when needed.
    """
    single = one_pass_bytes(height, width, config, bytes_per_element)
    strip = _strip_rows(width, config)
    one_pass = single <= budget and not tiles_for_speed(height, width, config, on_cpu)
    if tile == "off" or (tile == "auto" and one_pass):
        return TilePlan(0, strip, single, 0, budget)

    def estimate(side: int, rows: int, spill: bool) -> int:
        return tiled_bytes(height, width, config, bytes_per_element, side, rows, spill)

    if tile != "auto":
        side = round_tile(tile)
        spill = estimate(side, strip, False) > budget
        return TilePlan(side, strip, single, estimate(side, strip, spill), budget, spill)
    if single <= budget:  # one pass would fit: these tiles are for speed
        room = min(budget, TILE_SPEED_BUDGET)
        sides = [MAX_TILE >> shift for shift in range(MAX_TILE.bit_length()) if MAX_TILE >> shift >= MIN_AUTO_TILE]
        for side, spill in [(MAX_TILE, False)] + [(side, True) for side in sides]:  # spilled before they shrink
            if estimate(side, strip, spill) <= room:
                return TilePlan(side, strip, single, estimate(side, strip, spill), budget, spill)
        return TilePlan(MAX_TILE, strip, single, estimate(MAX_TILE, strip, True), budget, True)  # the memory is free
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
