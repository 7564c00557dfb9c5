"""Image quality: PSNR and SSIM between two batches, and FID/KID between two sets of features.

The batch functions take float NCHW batches in [0, 1] (``to_unit`` makes them from uint8 NHWC images).
Test images keep their own size and aspect ratio, so a test set is a list of uint8 HxWx3 images of
mixed shapes: :func:`fidelity` measures each image at its own size (images of one shape as one batch)
and averages over images. The distiller's ``psnr_to_teacher`` and ``compare``'s fidelity are that one
computation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PSNR_CAP_DB = 100.0  # identical images would give +inf, which JSON cannot hold
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div(255.0)


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each image pair of two float batches in [0, 1], capped at ``PSNR_CAP_DB``."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP_DB / 10)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the PSNR (dB) between two float batches in [0, 1]."""
    return float(psnr_per_image(a, b).mean())


def tone_matched_psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR of each pair after ``a`` is given ``b``'s per-channel mean and standard deviation: what is left
    of the difference once the image's global tone (brightness, contrast, colour cast) is the same, so
    that the gap to :func:`psnr_per_image` is the error of global tone alone."""
    a, b = a.double(), b.double()
    a_std, a_mean = torch.std_mean(a, dim=(2, 3), keepdim=True, correction=0)
    b_std, b_mean = torch.std_mean(b, dim=(2, 3), keepdim=True, correction=0)
    return psnr_per_image((a - a_mean) / a_std.clamp_min(1e-6) * b_std + b_mean, b)


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM (Gaussian window 11, sigma 1.5) of each image pair of two float batches in [0, 1]; torchmetrics
    when installed."""
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError:
        return _ssim_reference(a, b)
    return structural_similarity_index_measure(a.float(), b.float(), data_range=1.0, reduction="none")


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the SSIM of two float batches in [0, 1]."""
    return float(ssim_per_image(a, b).mean())


def _ssim_reference(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Wang et al. (2004) SSIM of each image pair, used only when torchmetrics is not installed."""
    a, b = a.double(), b.double()
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(a.shape[1], 1, window, window).contiguous()
    pad = window // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel, groups=x.shape[1])

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s[..., pad:-pad, pad:-pad].flatten(1).mean(1)


# ---------------------------------------------------------------------------------------------
# Test sets of images at their own size


def shape_groups(images: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of the images of each shape, shapes in order of first appearance: one batch per shape."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(index)
    return list(groups.values())


# Pixels measured in one batch: a 256x256 test set of up to 128 images is one batch (as it was before
# test images kept their own size, so its figures are unchanged), and SSIM's float32 intermediates of
# a batch of large photos stay under about 1 GB.
_BATCH_PIXELS = 128 * 256 * 256

PerImage = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_image(metric: PerImage, outputs: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> torch.Tensor:
    """``metric`` (a batch function like :func:`psnr_per_image`) of each pair of uint8 HxWx3 images, each
    pair at its own size, in the order given."""
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs against {len(references)} references")
    values: list[torch.Tensor | None] = [None] * len(outputs)
    for group in shape_groups(references):
        if any(outputs[i].shape != references[i].shape for i in group):
            raise ValueError("each output must have the shape of its reference")
        height, width = references[group[0]].shape[:2]
        step = max(1, _BATCH_PIXELS // (height * width))
        for start in range(0, len(group), step):
            chunk = group[start : start + step]
            a = to_unit(torch.stack([outputs[i] for i in chunk]))
            b = to_unit(torch.stack([references[i] for i in chunk]))
            for i, value in zip(chunk, metric(a, b), strict=True):
                values[i] = value
    return torch.stack(values) if values else torch.empty(0)


@dataclass(frozen=True)
class Fidelity:
    """How closely one set of images matches another: means over images, and each image's PSNR."""

    psnr: float  # mean over images of each image's PSNR (dB), as for batches of one size
    ssim: float  # mean over images of each image's mean SSIM
    psnr_per_image: list[float]


def fidelity(outputs: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> Fidelity:
    """PSNR and SSIM of uint8 HxWx3 ``outputs`` to ``references``, each image at its own size."""
    psnr_values = per_image(psnr_per_image, outputs, references)
    return Fidelity(
        psnr=float(psnr_values.mean()),
        ssim=float(per_image(ssim_per_image, outputs, references).mean()),
        psnr_per_image=psnr_values.tolist(),
    )


def tone_matched_psnr(outputs: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> list[float]:
    """:func:`tone_matched_psnr_per_image` of uint8 HxWx3 ``outputs`` to ``references``, each at its own size."""
    return per_image(tone_matched_psnr_per_image, outputs, references).tolist()


def tone_error_share(psnr_values: Sequence[float], tone_matched_values: Sequence[float]) -> float:
    """The mean over images of the share of each image's squared error that matching its global tone removed
    (from its PSNR before and after :func:`tone_matched_psnr`)."""
    shares = [max(0.0, 1.0 - 10 ** ((p - t) / 10)) for p, t in zip(psnr_values, tone_matched_values, strict=True)]
    return sum(shares) / len(shares) if shares else 0.0


def mean_psnr(outputs: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> float:
    """Mean over images of the PSNR (dB) of uint8 HxWx3 ``outputs`` to ``references``, each at its own size."""
    return float(per_image(psnr_per_image, outputs, references).mean())


class _Precomputed(nn.Module):
    """Passes features through, so torchmetrics' FID and KID share one pass of the feature network."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def extract_features(
    network: nn.Module, images: Sequence[torch.Tensor], device: torch.device, batch_size: int = 16
) -> torch.Tensor:
    """Features of uint8 HxWx3 ``images`` of any sizes (fed to ``network`` as float NCHW in [0, 1], images of
    one shape batched together; the FID network resizes every input to 299x299), on the CPU, in input order."""
    network = network.eval().to(device)
    out: list[torch.Tensor | None] = [None] * len(images)
    with torch.inference_mode():
        for group in shape_groups(images):
            for start in range(0, len(group), batch_size):
                chunk = group[start : start + batch_size]
                batch = torch.stack([images[i] for i in chunk]).to(device).permute(0, 3, 1, 2).float().div_(255.0)
                for i, features in zip(chunk, network(batch).float().cpu(), strict=True):
                    out[i] = features
    return torch.stack(out)


def fid_kid(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> tuple[float | None, float | None, list[str]]:
    """FID and KID (mean over subsets) between two feature sets, by torchmetrics; notes say why one is missing."""
    notes: list[str] = []
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        return None, None, ["FID/KID need torchmetrics: pip install 'cgdistill[metrics]'."]
    n = min(len(real), len(fake))
    if n < 2:
        return None, None, ["FID/KID need at least 2 test images in each set."]
    passthrough = _Precomputed(real.shape[1])
    fid_metric = FrechetInceptionDistance(feature=passthrough, normalize=True)
    fid_metric.update(real.double(), real=True)
    fid_metric.update(fake.double(), real=False)
    fid = float(fid_metric.compute())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")  # small sets here
        kid_metric = KernelInceptionDistance(
            feature=passthrough, subsets=KID_SUBSETS, subset_size=min(KID_SUBSET_SIZE, n)
        )
    kid_metric.update(real.double(), real=True)
    kid_metric.update(fake.double(), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # KID draws random subsets: same images, same number
        kid = float(kid_metric.compute()[0])
    if n < 50:
        notes.append(f"FID/KID from only {n} images are noisy; compare them only between models on the same images.")
    return fid, kid, notes
