"""Where a tiled run keeps a (1, C, H, W) activation: whole in memory, or in an unlinked temporary file."""

from __future__ import annotations

import tempfile

import torch


class RamStore:
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


class FileStore:
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


Store = RamStore | FileStore
