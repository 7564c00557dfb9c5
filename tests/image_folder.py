"""``ImageFolderDataset``: one folder of images as square centre crops, in file order (for tests that
line up a test folder with its ground truth), and ``check_images``, the header check it runs first.
The package's evaluation reads test images at their own aspect ratio instead (``cgdistill.testset``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from cgdistill.data.images import list_images, probe_images, read_image
from cgdistill.data.unpaired import DatasetWarning, _list_some, to_tensor
from cgdistill.errors import CgdistillError


def check_images(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split ``paths`` into (readable, [(unreadable path, reason), ...]) with a header-only check
    (``probe_images`` without the sizes)."""
    sizes, bad = probe_images(paths)
    return list(sizes), bad


class ImageFolderDataset(Dataset):
    """One folder of images for evaluation: resize the short side, centre-crop, no randomness.

    Items are {"image": tensor [3, S, S] in [-1, 1], "path": str} in sorted file order, so two
    folders with the same file names (testA and testA_gt) line up item by item.
    """

    def __init__(self, folder: Path, image_size: int, *, recursive: bool = False) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise CgdistillError(f"Image folder {folder} does not exist.")
        paths = list_images(folder, recursive=recursive)
        if not paths:
            raise CgdistillError(f"Image folder {folder} holds no images.")
        self.paths, self.skipped = check_images(paths)
        self.warnings: list[str] = []
        if self.skipped:
            names = [f"{p.name} ({reason})" for p, reason in self.skipped]
            message = f"Skipping {len(names)} unreadable image file(s) in {folder}: {_list_some(names)}."
            self.warnings.append(message)
            warnings.warn(message, DatasetWarning, stacklevel=2)
        if not self.paths:
            raise CgdistillError(f"None of the {len(paths)} files in {folder} is a readable image.")
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        path = self.paths[index]
        image = read_image(path)
        width, height = image.size
        scale = self.image_size / min(width, height)
        resized = (max(self.image_size, round(width * scale)), max(self.image_size, round(height * scale)))
        image = image.resize(resized, Image.Resampling.BICUBIC)
        left = (resized[0] - self.image_size) // 2
        top = (resized[1] - self.image_size) // 2
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        return {"image": to_tensor(image), "path": str(path)}
