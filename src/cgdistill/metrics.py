"""Image quality: PSNR and SSIM between two batches, and FID/KID between two sets of features.

Every function takes float NCHW batches in [0, 1] (``to_unit`` makes them from uint8 NHWC images),
so the distiller's ``psnr_to_teacher`` and ``compare``'s fidelity are one computation.
"""

from __future__ import annotations

import warnings

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


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5) of two float batches in [0, 1]; torchmetrics when installed."""
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError:
        return _ssim_reference(a, b)
    return float(structural_similarity_index_measure(a.float(), b.float(), data_range=1.0))


def _ssim_reference(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. (2004) SSIM, used only when torchmetrics is not installed."""
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
    return float(s[..., pad:-pad, pad:-pad].mean())


class _Precomputed(nn.Module):
    """Passes features through, so torchmetrics' FID and KID share one pass of the feature network."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def extract_features(
    network: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 16
) -> torch.Tensor:
    """Features of uint8 NHWC ``images`` (fed to ``network`` as float NCHW in [0, 1]), on the CPU."""
    network = network.eval().to(device)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(device).permute(0, 3, 1, 2).float().div_(255.0)
            out.append(network(chunk).float().cpu())
    return torch.cat(out)


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
