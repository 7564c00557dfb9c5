"""The embedded `toy` dataset: day scenes (A) and night scenes (B), generated locally in seconds.

A scene is a few soft-edged shapes (circles, squares, triangles) over a sky gradient with mild
noise. Domain A ("day") renders it in light, warm colours; domain B ("night") is the same picture
passed through a fixed per-pixel colour map, :func:`toy_a2b` (each 8-bit channel inverted, red and
blue swapped). The map is an exact bijection on 8-bit RGB, local and simple enough for a small
CycleGAN to learn on a CPU in minutes, and it moves almost every pixel far from its input, so
"leave the input unchanged" scores low against the ground truth.

Training images of A and B come from independent scenes (unpaired). Test scenes are rendered in
both domains, so ``testA_gt/NAME`` is the true B image of ``testA/NAME`` and ``testB_gt/NAME`` the
true A image of ``testB/NAME``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from cgdistill.fsutil import fsync_dir, storage_errors

TOY_FOLDERS = ("trainA", "trainB", "testA", "testB", "testA_gt", "testB_gt")

# Channel order of B taken from A before inverting: B = 255 - A[..., (2, 1, 0)].
_A2B_CHANNELS = (2, 1, 0)

# Independent random streams per split and domain, so changing n_train leaves the test set alone.
_STREAM_TRAIN_A, _STREAM_TRAIN_B, _STREAM_TEST_A, _STREAM_TEST_B = 1, 2, 3, 4

# Day palette: warm shape colours (RGB 0-255); the comments give what toy_a2b makes of them.
_SHAPE_COLOURS = np.array(
    [
        [250, 205, 70],  # sun yellow -> night: red-brown
        [245, 150, 80],  # orange -> night: amber
        [235, 110, 100],  # coral -> night: olive
        [200, 45, 45],  # red -> night: moon yellow
    ],
    dtype=np.float32,
)
_SKY_TOP = np.array([120, 175, 235], dtype=np.float32)
_SKY_BOTTOM = np.array([215, 232, 250], dtype=np.float32)


def toy_a2b(pixels: np.ndarray) -> np.ndarray:
    """The true day -> night map on uint8 RGB arrays [..., 3]: invert each channel, swap red and blue."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.shape[-1] != 3:
        raise ValueError("toy_a2b expects a uint8 array with 3 channels last")
    return (255 - pixels[..., _A2B_CHANNELS]).astype(np.uint8)


def render_day_scene(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Draw one random day scene as a uint8 RGB array [size, size, 3].

    Shapes are rasterised from signed distances with a one-pixel ramp, so edges are soft at any size.
    """
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    ys /= size
    xs /= size

    # Sky: vertical gradient, a random tint and a gentle horizontal tilt so no two skies are equal.
    t = np.clip(ys + rng.uniform(-0.15, 0.15) * (xs - 0.5), 0.0, 1.0)[..., None]
    tint = rng.uniform(-12.0, 12.0, size=3).astype(np.float32)
    image = (1.0 - t) * _SKY_TOP + t * _SKY_BOTTOM + tint

    edge = 1.0 / size  # one pixel of anti-aliasing
    for _ in range(int(rng.integers(2, 5))):
        kind = int(rng.integers(0, 3))
        cx, cy = rng.uniform(0.15, 0.85, size=2)
        radius = rng.uniform(0.08, 0.22)
        if kind == 0:  # circle
            distance = radius - np.hypot(xs - cx, ys - cy)
        elif kind == 1:  # square, rotated by a random angle
            angle = rng.uniform(0.0, np.pi / 2)
            c, s = np.cos(angle), np.sin(angle)
            u = (xs - cx) * c + (ys - cy) * s
            v = -(xs - cx) * s + (ys - cy) * c
            distance = radius * 0.85 - np.maximum(np.abs(u), np.abs(v))
        else:  # triangle: intersection of three half-planes around the centre
            angle = rng.uniform(0.0, 2 * np.pi)
            distance = np.full_like(xs, np.inf)
            for k in range(3):
                normal = angle + k * 2 * np.pi / 3
                projection = (xs - cx) * np.cos(normal) + (ys - cy) * np.sin(normal)
                distance = np.minimum(distance, radius * 0.6 - projection)
        alpha = np.clip(distance / edge + 0.5, 0.0, 1.0)[..., None]

        colour = _SHAPE_COLOURS[int(rng.integers(0, len(_SHAPE_COLOURS)))] + rng.uniform(-10.0, 10.0, size=3)
        # A soft light from a random side, so shapes carry a gradient rather than a flat fill.
        light = rng.uniform(-1.0, 1.0, size=2)
        shade = 1.0 + 0.12 * ((xs - cx) * light[0] + (ys - cy) * light[1]) / max(radius, 1e-3)
        fill = colour * np.clip(shade, 0.85, 1.1)[..., None]
        image = (1.0 - alpha) * image + alpha * fill

    image += rng.normal(0.0, 3.0, size=image.shape)  # mild sensor-like noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _save_png(pixels: np.ndarray, path: Path) -> None:
    # No metadata chunks, so the bytes depend on the pixels only (byte-identical rebuilds).
    Image.fromarray(pixels).save(path, format="PNG", optimize=False, compress_level=6)


def _scene_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**63, stream, index])


def make_toy_dataset(root: Path, *, size: int = 64, n_train: int = 300, n_test: int = 40, seed: int = 0) -> Path:
    """Generate the toy dataset at ``root`` and return ``root``.

    Writes ``root/{trainA,trainB,testA,testB,testA_gt,testB_gt}/NNNN.png``. The result is a pure
    function of the arguments (same seed -> byte-identical files). The folder is built beside
    ``root`` under a temporary name and renamed into place, so an interruption never leaves a half
    dataset; an existing ``root`` is replaced.
    """
    if size < 8:
        raise ValueError(f"toy image size must be at least 8 pixels, got {size}")
    if n_train < 1 or n_test < 0:
        raise ValueError("n_train must be positive and n_test non-negative")
    root = Path(root)
    with storage_errors(root):  # a full disk or read-only home: one sentence, no half dataset
        return _build_toy_dataset(root, size, n_train, n_test, seed)


def _build_toy_dataset(root: Path, size: int, n_train: int, n_test: int, seed: int) -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".building", dir=root.parent))
    try:
        for folder in TOY_FOLDERS:
            (build / folder).mkdir()
        for i in range(n_train):
            _save_png(render_day_scene(_scene_rng(seed, _STREAM_TRAIN_A, i), size), build / "trainA" / f"{i:04d}.png")
            night = toy_a2b(render_day_scene(_scene_rng(seed, _STREAM_TRAIN_B, i), size))
            _save_png(night, build / "trainB" / f"{i:04d}.png")
        for i in range(n_test):
            name = f"{i:04d}.png"
            day = render_day_scene(_scene_rng(seed, _STREAM_TEST_A, i), size)
            _save_png(day, build / "testA" / name)
            _save_png(toy_a2b(day), build / "testA_gt" / name)
            day = render_day_scene(_scene_rng(seed, _STREAM_TEST_B, i), size)
            _save_png(toy_a2b(day), build / "testB" / name)
            _save_png(day, build / "testB_gt" / name)
        _fsync_tree(build)
        _replace_dir(build, root)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return root


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder entry, so the rename publishes complete files."""
    if hasattr(os, "sync"):
        os.sync()  # one call flushes all ~800 files; far faster than fsyncing each on slow disks
        return
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb+") as handle:
                os.fsync(handle.fileno())


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is moved aside first, then removed."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / "previous")
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old / "previous", target)
        raise
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
