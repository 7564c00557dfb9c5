"""A generator's forward pass on 8-bit pixels: what every inference path shares.

The one place that prepares a generator for a device (eval mode, no gradients, the memory format
that runs fastest there), pads an image to the generator's multiple and crops it back, and converts
between uint8 pixels and the model's [-1, 1] range. Images, tiles, video frames, the engines'
timing, the test set and the export all call these, so a pixel means the same thing on every road:
the same rounding, the same padding, the same layout.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

# The generator's stem pads by 3 and each block by 1 at a quarter of the resolution, so an input
# smaller than 8 pixels cannot be reflect-padded inside the network: pad tiny images up to this.
MIN_SIDE = 8
# Two stride-2 downsamplings: a ResNet generator's input sides must be multiples of 4.
DEFAULT_MULTIPLE = 4


def use_channels_last(device: torch.device) -> bool:
    """Channels-last pays on CUDA (tensor cores); on the CPU it measured slower (docs/benchmarks.md)."""
    return device.type == "cuda"


def prepare_generator(generator: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, no gradients, on ``device``, in the memory format that runs fastest there."""
    generator = generator.eval().requires_grad_(False).to(device)
    if use_channels_last(device):
        generator = generator.to(memory_format=torch.channels_last)
    return generator


def generator_multiple(generator: nn.Module) -> int:
    """The multiple both input sides must have (engines and wrappers carry their generator's)."""
    return int(getattr(generator, "multiple", DEFAULT_MULTIPLE))


def padded_size(height: int, width: int, multiple: int = DEFAULT_MULTIPLE, minimum: int = MIN_SIDE) -> tuple[int, int]:
    """The size the generator runs an image of ``height`` x ``width`` at: each side rounded up to
    ``multiple``, and at least ``minimum`` (itself rounded up)."""
    least = -(-minimum // multiple) * multiple
    return max(-(-height // multiple) * multiple, least), max(-(-width // multiple) * multiple, least)


def padding_to_multiple(
    height: int, width: int, multiple: int, minimum: int = MIN_SIDE
) -> tuple[tuple[int, int, int, int], str]:
    """``(left, right, top, bottom)`` padding to :func:`padded_size`, and its mode.

    The padding is split between both sides; "reflect" continues the image naturally so the border of
    the result looks like the rest; sides too small to reflect fall back to "replicate".
    """
    target_h, target_w = padded_size(height, width, multiple, minimum)
    pad_h, pad_w = target_h - height, target_w - width
    top, left = pad_h // 2, pad_w // 2
    pads = (left, pad_w - left, top, pad_h - top)
    mode = "reflect" if max(pads[0], pads[1]) < width and max(pads[2], pads[3]) < height else "replicate"
    return pads, mode


def pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int = MIN_SIDE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad an NCHW batch as :func:`padding_to_multiple` says; the padded batch and the (top, left)
    offset of the original inside it."""
    pads, mode = padding_to_multiple(*x.shape[-2:], multiple, minimum)
    if not any(pads):
        return x, (0, 0)
    return F.pad(x, pads, mode=mode), (pads[2], pads[0])


def pad_pixels(pixels: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One HxWxC uint8 image padded exactly as :func:`pad_to_multiple` pads a batch, and the crop
    ``(top, bottom, left, right)`` that holds the original (what the tiler runs on and cuts back)."""
    h, w = pixels.shape[:2]
    pads, mode = padding_to_multiple(h, w, multiple)
    left, right, top, bottom = pads
    if any(pads):
        pixels = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="reflect" if mode == "reflect" else "edge")
    return pixels, (top, top + h, left, left + w)


def to_model_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC pixels to the float32 NCHW batch in [-1, 1] a generator takes."""
    return pixels.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_pixels(y: torch.Tensor) -> torch.Tensor:
    """A generator's NCHW output in [-1, 1] (any float dtype) to uint8 NHWC, rounded to the nearest level.

    Returned as a view in NHWC order: callers copy it where they need it (``.contiguous()``, ``.numpy()``).
    """
    return y.float().add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def translate_batch(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Translate a uint8 NHWC batch (any size) and return a uint8 NHWC batch of the same size on the CPU.

    ``model`` runs as it is: an engine's model carries its precision (``engines.Autocast``).
    """
    n, h, w, _ = images.shape
    with torch.inference_mode():
        x = to_model_range(images.to(device, non_blocking=True))
        x, (top, left) = pad_to_multiple(x, generator_multiple(model))
        if use_channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        y = model(x)
        return to_pixels(y[:, :, top : top + h, left : left + w]).contiguous().cpu()


def fit_max_side(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Shrink (never enlarge) to fit ``max_side`` keeping the aspect ratio; 0 means no limit."""
    longest = max(width, height)
    if max_side <= 0 or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink_to_max_side(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` as the generator gets it: shrunk (Lanczos, never enlarged) to fit ``max_side``, aspect kept.

    ``compare`` prepares its test images with this too, so fidelity is measured on what translate runs.
    """
    size = fit_max_side(image.width, image.height, max_side)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
