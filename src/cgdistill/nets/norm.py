"""Instance norm whose half-precision result does not depend on how the image is cut into tiles.

Torch's bf16/fp16 instance norm sums each channel in float32 in an order of its own and keeps the
mean and inverse deviation rounded to bf16, so a run that gathers the same statistics tile by tile
(``tiling``) cannot reproduce them bit for bit, and nine residual blocks amplify that one rounding
step into grey levels (issue 20: up to 24 at 12 MP on a random-initialised teacher).

Inside :func:`float64_statistics` (entered by the inference engines that run under autocast) an
:class:`InstanceNorm` on bf16/fp16 activations instead sums them, and their squares, in float64: a
bf16 or fp16 value and its square are exact in float32, and float64 sums of up to 2**26 such terms
(a channel of a 50 MP image) carry a relative error below 2**-27 (worst case, n * 2**-53), far
under the 2**-24 at which the per-channel shift is rounded and the 2**-16 of the scale
(:func:`coefficients`). So however the image is cut, scale and shift come out the same (unless the
exact value lies within that error of a rounding boundary), and :func:`normalise` then applies them
element by element, rounding once, in both runs. Training, fp32 activations and anything run with
gradients on keep torch's own kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

BAND_ELEMENTS = 2**18  # elements converted to float64 at a time on a CPU (2 MB: stays in cache, no page faults)
BAND_ELEMENTS_CUDA = 2**24  # on a GPU, fewer and larger bands (a launch costs more than 128 MB of float64)

_float64_statistics = False  # a plain module global: torch.compile guards on it without a graph break


@contextmanager
def float64_statistics() -> Iterator[None]:
    """For a while, half-precision :class:`InstanceNorm` layers use float64 statistics (see the module docstring)."""
    global _float64_statistics
    previous, _float64_statistics = _float64_statistics, True
    try:
        yield
    finally:
        _float64_statistics = previous


def channel_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel sum and sum of squares (N x C, float64) of ``x`` (N x C x H x W).

    Large tensors go band by band of rows, so that the float64 copy stays small; partial sums of a
    band add up in float64 like those of any other cut.
    """
    n, c, h, w = x.shape
    target = BAND_ELEMENTS_CUDA if x.device.type == "cuda" else BAND_ELEMENTS
    rows = max(1, target // max(1, n * c * w))
    total = torch.zeros((n, c), dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for top in range(0, h, rows):
        band = x[:, :, top : top + rows].double()
        total += band.sum(dim=(2, 3))
        squares += (band * band).sum(dim=(2, 3))
    return total, squares


# Significant bits of the per-channel scale: with an 8-bit (bf16) or 11-bit (fp16) activation the
# product has at most 24 bits, exact in float32, so ``x * scale + shift`` is rounded once whether a
# kernel fuses it (FMA, in vectorised loops) or not (in the scalar tail of a row, whose position
# moves with the tile's width). The scale's own rounding (2**-16 or 2**-13 of the output, the
# shift being taken from the rounded scale) is below the output's (2**-8 or 2**-11).
SCALE_BITS = {torch.bfloat16: 16, torch.float16: 13}
HALF_PRECISION = tuple(SCALE_BITS)  # the activations this module's float64 statistics are for


def coefficients(
    total: torch.Tensor,
    squares: torch.Tensor,
    count: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel scale and shift (float32, N x C) of an instance norm, from float64 sums over ``count`` positions.

    ``x * scale + shift = (x - mean) / sqrt(var + eps) * weight + bias``, with the biased variance
    instance norm divides by; for ``dtype`` bf16/fp16 activations the scale keeps ``SCALE_BITS``.
    """
    mean = total / count
    scale = ((squares / count - mean * mean).clamp_(min=0) + eps).rsqrt_()
    if weight is not None:
        scale *= weight
    scale = scale.float()
    if dtype in SCALE_BITS:  # round half up to SCALE_BITS significant bits (a carry moves into the exponent)
        drop = 24 - SCALE_BITS[dtype]
        scale = ((scale.view(torch.int32) + (1 << (drop - 1))) & -(1 << drop)).view(torch.float32)
    shift = mean.mul_(scale).neg_()
    if bias is not None:
        shift += bias
    return scale, shift.float()


def normalise(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x * scale + shift`` per sample and channel (``scale``, ``shift``: N x C), in x's dtype.

    Torch's inference batch norm does it (mean 0, variance 1, eps 0: its own scale is exactly
    ``scale``): one pointwise kernel, float arithmetic on half inputs, the same for a whole image and
    any tile of it. Autocast is paused so that it cannot cast ``x`` up.
    """
    n, c = x.shape[:2]
    flat = x.contiguous().view(1, n * c, *x.shape[2:])  # one kernel path (a strided view would take another)
    mean = torch.zeros(n * c, device=x.device)
    var = torch.ones(n * c, device=x.device)
    with torch.autocast(x.device.type, enabled=False):
        y = F.batch_norm(flat, mean, var, scale.reshape(-1), shift.reshape(-1), False, 0.0, 0.0)
    return y.view_as(x)


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` with float64 statistics on half-precision inference inside :func:`float64_statistics`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _float64_statistics and not torch.is_grad_enabled() and x.dtype in HALF_PRECISION and x.dim() == 4:
            total, squares = channel_sums(x)
            scale, shift = coefficients(
                total, squares, x.shape[2] * x.shape[3], self.weight, self.bias, self.eps, x.dtype
            )
            return normalise(x, scale, shift)
        return super().forward(x)
