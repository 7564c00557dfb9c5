"""The unpaired loader: domain A and domain B images, augmented the way the CycleGAN recipe does.

Every random choice an item makes (its B partner, crop offsets, flips) is a pure function of
(seed, epoch, index), and the visiting order is a pure function of (seed, epoch). So the batches
are the same with any number of worker processes, on any number of DDP ranks, and a training run
resumed from a checkpoint mid-epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from cgdistill.data.images import list_images, probe_images, read_image
from cgdistill.errors import CgdistillError, WorkFailed

SPLITS = ("train", "test")


class DatasetWarning(UserWarning):
    """A data problem that training survives (unreadable files skipped, small images upscaled).

    Also collected in ``dataset.warnings``, so the CLI can show each once in its own style.
    """


def _layout(root: Path) -> str:
    return f"{root}/trainA/ and {root}/trainB/ holding the images of each domain, optionally {root}/testA/ and {root}/testB/"


def _mix(*values: int) -> list[int]:
    """Seed material for numpy's SeedSequence (which needs non-negative integers)."""
    return [int(v) % 2**63 for v in values]


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of item ``index`` in ``epoch``: the same in every process and every run."""
    return np.random.default_rng(_mix(seed, epoch, index))


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """The shuffled visiting order of items 0..n-1 for ``epoch``, this rank's share of it.

    Shuffles like a DataLoader with ``shuffle=True``, but seeded from (seed, epoch) so it can be
    recomputed on resume. With several ranks the order is padded by wrap-around to a multiple of
    ``world_size`` and rank r takes positions r, r + world_size, ... (as DistributedSampler does):
    every rank gets the same number of items, and together they cover every item.
    """
    if n < 1:
        raise ValueError(f"epoch_order needs at least one item, got n={n}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    state = np.random.SeedSequence(_mix(seed, epoch, 0x5EED)).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state) % 2**63)
    order = torch.randperm(n, generator=generator).tolist()
    total = -(-n // world_size) * world_size
    while len(order) < total:
        order += order[: total - len(order)]
    return order[rank:total:world_size]


class EpochSampler(Sampler[tuple[int, int]]):
    """A DataLoader sampler over :func:`epoch_order` that yields ``(epoch, index)`` pairs.

    Carrying the epoch with each index keeps worker processes in step even with
    ``persistent_workers=True`` (where ``dataset.set_epoch`` in the main process would not reach
    them). ``set_epoch(epoch, start=k)`` resumes at position k of that epoch's order.
    """

    def __init__(self, n: int, *, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(self.n, self.seed, self.epoch, self.rank, self.world_size)
        for index in order[self.start :]:
            yield self.epoch, index

    def __len__(self) -> int:
        return max(0, -(-self.n // self.world_size) - self.start)


def _scan(
    folder: Path, root: Path, min_side: int | None
) -> tuple[list[Path], list[tuple[Path, str]], list[tuple[Path, tuple[int, int]]]]:
    """List ``folder``'s images and probe each header: (readable, unreadable, smaller than min_side)."""
    if not folder.is_dir():
        # A common slip: pointing at the folder above the dataset (the zip's top-level folder).
        nested = sorted(p.parent for p in root.glob(f"*/{folder.name}") if p.is_dir())
        hint = f" (did you mean {nested[0]}?)" if len(nested) == 1 else ""
        raise CgdistillError(f"Dataset folder {root} has no {folder.name}/ folder{hint}; expected {_layout(root)}.")
    paths = list_images(folder)
    if not paths:
        raise CgdistillError(f"Dataset folder {folder} holds no images; expected {_layout(root)}.")
    sizes, bad = probe_images(paths)
    good = list(sizes)
    small = [(p, size) for p, size in sizes.items() if min_side is not None and min(size) < min_side]
    if not good:
        raise CgdistillError(
            f"None of the {len(paths)} files in {folder} is a readable image "
            f"(first problem: {bad[0][0].name}: {bad[0][1]}); expected {_layout(root)}."
        )
    return good, bad, small


def _list_some(paths: list[str], limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown if len(paths) <= limit else f"{shown} and {len(paths) - limit} more"


def to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> float tensor [3, H, W] in [-1, 1] (the generators' tanh range)."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class UnpairedDataset(Dataset):
    """Images of domain A and domain B under ``root/{split}A`` and ``root/{split}B``, unpaired.

    Item i is A image ``i % len(A)`` with a B image drawn at random, as the reference CycleGAN
    loader does; the length is the larger domain's count. ``primary="B"`` swaps the roles, so that
    a B2A distiller sees every B image in every epoch instead of a random draw of them. Each image is resized to
    ``load_size`` (square, bicubic), randomly cropped to ``image_size``, randomly flipped
    horizontally when ``flip``, and scaled to [-1, 1]. Unreadable files are found here, by a
    header check, and skipped; ``skipped`` lists them and ``warnings`` says so once.
    """

    def __init__(
        self,
        root: Path,
        split: str = "train",
        *,
        load_size: int = 286,
        image_size: int = 256,
        flip: bool = True,
        seed: int = 0,
        domains: tuple[str, ...] = ("A", "B"),
        primary: str = "A",
    ) -> None:
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if primary not in ("A", "B"):
            raise ValueError(f"primary must be A or B, got {primary!r}")
        if image_size < 1 or load_size < image_size:
            raise CgdistillError(
                f"The crop size {image_size} must be positive and at most the load size {load_size}; "
                "raise --load-size or lower --image-size."
            )
        if not root.is_dir():
            raise CgdistillError(f"Dataset folder {root} does not exist; expected {_layout(root)}.")
        self.root, self.split = root, split
        self.load_size, self.image_size, self.flip, self.seed = load_size, image_size, flip, seed
        self.epoch = 0
        self.primary = primary
        self.warnings: list[str] = []
        self.skipped: list[tuple[Path, str]] = []

        # A distiller whose data has only the source domain loads just that one (``domains``).
        self.A_paths, bad_a, small_a = _scan(root / f"{split}A", root, image_size) if "A" in domains else ([], [], [])
        self.B_paths, bad_b, small_b = _scan(root / f"{split}B", root, image_size) if "B" in domains else ([], [], [])
        self.skipped = bad_a + bad_b
        if self.skipped:
            names = [f"{p.relative_to(root)} ({reason})" for p, reason in self.skipped]
            self._warn(f"Skipping {len(names)} unreadable image file(s) in {root}: {_list_some(names)}.")
        small = small_a + small_b
        if small:
            path, (width, height) = min(small, key=lambda item: min(item[1]))
            self._warn(
                f"{len(small)} image(s) in {root} are smaller than the {image_size}-pixel crop and are resized up "
                f"(smallest: {path.relative_to(root)}, {width}x{height})."
            )
        self._failed_at_load: set[Path] = set()

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, DatasetWarning, stacklevel=3)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random choices ``__getitem__`` makes (call before each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return max(len(self.A_paths), len(self.B_paths))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | str]:
        """Item ``key`` of the current epoch, or of the given one when ``key`` is (epoch, index)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = item_rng(self.seed, epoch, index)
        # Draw everything up front, in a fixed order, so each choice is independent of file contents.
        domain_paths = {"A": self.A_paths, "B": self.B_paths}
        partner = "B" if self.primary == "A" else "A"
        partner_index = int(rng.integers(0, max(1, len(domain_paths[partner]))))
        offsets = rng.integers(0, self.load_size - self.image_size + 1, size=4)
        flips = rng.random(2) < 0.5
        # The primary domain is visited in order; the other one (when loaded) is drawn at random.
        chosen = {self.primary: index, partner: partner_index if domain_paths[self.primary] else index}
        item: dict[str, torch.Tensor | str] = {}
        for slot, domain in enumerate(("A", "B")):
            paths = domain_paths[domain]
            if not paths:
                continue
            path, image = self._load(paths, chosen[domain] % len(paths))
            item[domain] = self._transform(image, int(offsets[2 * slot]), int(offsets[2 * slot + 1]), bool(flips[slot]))
            item[f"{domain}_path"] = str(path)
        return item

    def _load(self, paths: list[Path], index: int) -> tuple[Path, Image.Image]:
        """Decode ``paths[index]``; a file that passed the header check but fails to decode is
        replaced by the next readable one (deterministically), so an epoch never crashes."""
        for step in range(len(paths)):
            path = paths[(index + step) % len(paths)]
            if path in self._failed_at_load:
                continue
            try:
                return path, read_image(path)
            except CgdistillError as error:
                self._failed_at_load.add(path)
                warnings.warn(f"{error.message} Using another image in its place.", DatasetWarning, stacklevel=2)
        raise WorkFailed(f"No image in {paths[0].parent} could be decoded.")

    def _transform(self, image: Image.Image, left: int, top: int, flip: bool) -> torch.Tensor:
        size = self.image_size
        image = image.resize((self.load_size, self.load_size), Image.Resampling.BICUBIC)
        image = image.crop((left, top, left + size, top + size))
        if flip and self.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(image)
