"""``TiledGenerator``: the passes of an exact tiled run over one padded image (see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from torch import nn

from cgdistill.forward import to_model_range, to_pixels
from cgdistill.tiling.ops import (
    Chain,
    Conv,
    Norm,
    NotTileable,
    Op,
    Pointwise,
    Rect,
    Shuffle,
    Sums,
    Upsample,
    conv_forward,
    forward_op,
    layer_ops,
    need_rect,
    norm_splits,
    tiles,
)
from cgdistill.tiling.plan import TilePlan
from cgdistill.tiling.stores import FileStore, RamStore, Store


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
                if isinstance(op, Upsample | Shuffle) or (isinstance(op, Conv) and (op.transposed or op.stride != 1)):
                    raise NotTileable("a residual block that changes the grid")
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def units(self, size: tuple[int, int], plan: TilePlan) -> int:
        """Progress units for an image of padded ``size``: tiles of every tiled pass, plus one per block."""
        side = max(1, plan.tile // 4)
        count = math.ceil(size[0] // 4 / side) * math.ceil(size[1] // 4 / side)
        encoder_passes = 1 + len(norm_splits(self.encoder[: self._encoder_end()]))
        decoder_passes = 1 + len(norm_splits(self.decoder))
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
            y = to_pixels(y[:, :, top - rect[0] : bottom - rect[0], left - rect[2] : right - rect[2]])
            out[top - crop[0] : bottom - crop[0], left - crop[2] : right - crop[2]] = y[0].cpu().numpy()

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
            return to_model_range(pixels[None, rect[0] : rect[1], rect[2] : rect[3]].to(device))

        with torch.inference_mode(), self.autocast():
            self.stats = {}
            end = self._encoder_end()
            stores: list[Store] = []

            def store(shape: tuple[int, int, int], dtype: torch.dtype) -> Store:
                home = torch.device("cpu") if plan.spill and device.type != "cpu" else device
                made = FileStore(shape, dtype, device) if plan.spill and home.type == "cpu" else None
                stores.append(made or RamStore(shape, dtype, device, home))
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
        stops = [*norm_splits(ops), len(ops)]
        kept = band = None
        for stop in stops:
            chain = Chain(ops[:stop])
            chain.plan(size)
            out_size = chain.sizes[-1]
            side = max(1, tile // 4) * out_size[0] // bottleneck_rows
            sums = Sums()
            for rect in tiles(out_size, side):
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
                sums = Sums()
                for top in range(0, rows, strip):
                    sums.add(source.rows(top, min(rows, top + strip)))
                self.stats[id(op)] = sums.coefficients(op)
            for top in range(0, rows, strip):
                rect = (top, min(rows, top + strip), 0, cols)
                dst.put(top, forward_op(op, source.rows(rect[0], rect[1]), rect, rect, self.stats))
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
            src_rect = need_rect(op, dst_rect, (rows, cols))
            if src is not dst:
                x = src.rows(src_rect[0], src_rect[1])
            elif src_rect[0] < top:
                x = torch.cat([saved[:, :, saved.shape[2] - (top - src_rect[0]) :], src.rows(top, src_rect[1])], dim=2)
            else:
                x = src.rows(top, src_rect[1])
            y = conv_forward(op, x, src_rect, dst_rect)
            if src is dst:
                saved = src.rows(max(top, bottom - op.pad), bottom).clone()
            dst.put(top, y)
