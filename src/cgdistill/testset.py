"""The test set as ``compare`` and the distiller's periodic evaluation see it: images prepared once,
each at its own aspect ratio, and run through a model.

One module for both, so that the distiller's ``psnr_to_teacher`` and ``compare``'s fidelity are
measured on the same pixels (tests/test_fidelity_sizes.py holds them equal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from cgdistill.data.images import list_images, read_image
from cgdistill.engines import at_inference_precision
from cgdistill.errors import CgdistillError
from cgdistill.forward import MIN_SIDE, shrink_to_max_side, translate_batch
from cgdistill.metrics import shape_groups
from cgdistill.options import DEFAULT_MAX_SIDE

Images = list[torch.Tensor]  # uint8 H x W x 3 images, each at its own size


@dataclass
class TestSet:
    """Test images of the source domain (and their ground truth), and real target-domain images, each
    prepared by :func:`prepare_image` at its own aspect ratio."""

    names: list[str]
    inputs: Images
    ground_truth: Images | None  # each the size of its input, or None when the dataset has none
    real_target: Images  # for FID/KID


def scale_shorter_side(width: int, height: int, shorter_side: int) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is ``shorter_side`` pixels, aspect ratio kept."""
    scale = shorter_side / min(width, height)
    if width <= height:
        return shorter_side, max(shorter_side, round(height * scale))
    return max(shorter_side, round(width * scale)), shorter_side


def prepare_image(image: Image.Image, shorter_side: int | None = None) -> np.ndarray:
    """uint8 HxWx3 at its own aspect ratio: the one preprocessing of every fidelity figure.

    By default the image as ``translate`` gives it to the generator: its own size, shrunk (Lanczos)
    to fit translate's default ``--max-side``; one under the generator's minimum side is enlarged to
    it. With ``shorter_side`` (``compare --image-size``) it is resized bicubically, as ``compare``
    always resized, until its shorter side is that many pixels. Sides need not be multiples of 4: the
    generator reflect-pads its input and crops the result back, as in ``translate`` (``translate_batch``).
    """
    if shorter_side is None:
        image = shrink_to_max_side(image, DEFAULT_MAX_SIDE)
        shorter_side = max(MIN_SIDE, min(image.size))
    size = scale_shorter_side(image.width, image.height, shorter_side)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.array(image, dtype=np.uint8)


def load_images(files: Sequence[Path], shorter_side: int | None = None) -> Images:
    """Each file read and prepared by :func:`prepare_image`, in order."""
    return [torch.from_numpy(prepare_image(read_image(f), shorter_side)) for f in files]


def _load_ground_truth(files: Sequence[Path], inputs: Images, shorter_side: int | None) -> Images:
    """Ground-truth files prepared as their inputs were, and made exactly their input's size if they differ."""
    matched = []
    for path, reference in zip(files, inputs, strict=True):
        image = Image.fromarray(prepare_image(read_image(path), shorter_side))
        size = (reference.shape[1], reference.shape[0])
        if image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        matched.append(torch.from_numpy(np.array(image, dtype=np.uint8)))
    return matched


def source_test_files(data_dir: Path, direction: str, limit: int | None = None) -> list[Path]:
    """The source domain's test images (testA for A2B, testB for B2A), in sorted order."""
    source = direction[0]
    source_dir = data_dir / f"test{source}"
    if not source_dir.is_dir():
        raise CgdistillError(f"Dataset {data_dir} has no test{source}/ folder of test images for {direction}.")
    files = list_images(source_dir)[:limit]
    if not files:
        raise CgdistillError(f"{source_dir} holds no images to compare on.")
    return files


def load_test_set(data_dir: Path, direction: str, shorter_side: int | None = None, limit: int | None = None) -> TestSet:
    """testA (A2B) or testB (B2A), each image at its own aspect ratio (see :func:`prepare_image`)."""
    target_dir = data_dir / f"test{direction[-1]}"
    files = source_test_files(data_dir, direction, limit)
    source = direction[0]
    gt_dir = data_dir / f"test{source}_gt"
    gt_files = [gt_dir / f.name for f in files] if gt_dir.is_dir() else []
    has_gt = bool(gt_files) and all(p.is_file() for p in gt_files)
    targets = list_images(target_dir) if target_dir.is_dir() else []
    if limit is not None:
        targets = targets[:limit]
    inputs = load_images(files, shorter_side)
    return TestSet(
        names=[f.name for f in files],
        inputs=inputs,
        ground_truth=_load_ground_truth(gt_files, inputs, shorter_side) if has_gt else None,
        real_target=load_images(targets, shorter_side),
    )


def size_counts(images: Images) -> dict[str, int]:
    """How many images were measured at each size, as ``"WxH"``, sizes in order of first appearance."""
    counts: dict[str, int] = {}
    for image in images:
        key = f"{image.shape[1]}x{image.shape[0]}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def run_model(model: nn.Module, images: Sequence[torch.Tensor], device: torch.device, batch_size: int = 8) -> Images:
    """Translate uint8 HxWx3 ``images`` of any sizes with a prepared model, images of one shape in batches;
    uint8 images on the CPU, in input order.

    The model runs at the precision the torch engine runs on ``device`` (``engines.at_inference_precision``:
    autocast on CUDA, fp32 on the CPU), so the distiller's ``psnr_to_teacher`` is compare's fidelity.
    """
    model = at_inference_precision(model, device)
    out: list[torch.Tensor | None] = [None] * len(images)
    for group in shape_groups(images):
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            translated = translate_batch(model, torch.stack([images[i] for i in chunk]), device)
            for i, image in zip(chunk, translated, strict=True):
                out[i] = image
    return out
