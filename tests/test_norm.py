"""Instance norm on float64 statistics (nets/norm.py): the same numbers whether an image is whole or cut."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cgdistill.nets import norm
from cgdistill.nets.norm import InstanceNorm, channel_sums, coefficients, float64_statistics, normalise


def _activations(shape=(2, 8, 37, 53), dtype=torch.bfloat16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Channels with their own offset and spread, as conv outputs have.
    offsets = torch.randn(1, shape[1], 1, 1, generator=g) * 3
    spreads = torch.rand(1, shape[1], 1, 1, generator=g) * 4 + 0.1
    return (torch.randn(shape, generator=g) * spreads + offsets).to(dtype)


def _normalised(x: torch.Tensor, module: InstanceNorm) -> torch.Tensor:
    total, squares = channel_sums(x)
    scale, shift = coefficients(
        total, squares, x.shape[2] * x.shape[3], module.weight, module.bias, module.eps, x.dtype
    )
    return normalise(x, scale, shift)


@pytest.mark.parametrize("affine", [False, True])
def test_in_fp32_it_is_torch_s_instance_norm_to_float_rounding(affine):
    """Both compute (x - mean) / sqrt(var + eps) * w + b in fp32 from accurate statistics; they differ by
    a few fp32 roundings of values up to ~10 in size (4 * 10 * 2**-24 ~ 2.4e-6), so 1e-5 holds."""
    x = _activations(dtype=torch.float32)
    module = InstanceNorm(8, affine=affine)
    if affine:
        with torch.no_grad():
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-1, 1)
    expected = F.instance_norm(x, weight=module.weight, bias=module.bias, eps=module.eps)
    torch.testing.assert_close(_normalised(x, module), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("dtype", "mantissa_bits"), [(torch.bfloat16, 7), (torch.float16, 10)])
def test_half_precision_output_is_the_exact_result_rounded_once(dtype, mantissa_bits):
    """Against fp32 instance norm of the same half-precision input: the output's own rounding (half an
    ulp: 2**-(bits + 1) of |y|), the scale's (2**-SCALE_BITS of it; the shift is taken from the rounded
    scale, so the error is relative to y = (x - mean) * scale) and fp32 rounding near zero (1e-5, as above)."""
    x = _activations(dtype=dtype)
    module = InstanceNorm(8)
    with torch.inference_mode(), float64_statistics():
        ours = module(x)
    assert ours.dtype == dtype
    reference = F.instance_norm(x.float(), eps=module.eps)
    bound = reference.abs() * (2.0 ** -(mantissa_bits + 1) + 2.0 ** -norm.SCALE_BITS[dtype])
    assert ((ours.float() - reference).abs() <= bound + 1e-5).all()


def test_statistics_do_not_depend_on_how_the_image_is_cut(monkeypatch):
    """Float64 sums of bf16 values (exact in float32, and so their squares) err by under n * 2**-53,
    far below the 2**-24 at which the coefficients are rounded: bands of 1 row or the whole image, and
    the image cut in four, give the same coefficients bit for bit."""
    x = _activations(shape=(1, 8, 64, 96))
    module = InstanceNorm(8)
    whole = coefficients(*channel_sums(x), 64 * 96, None, None, module.eps, x.dtype)
    monkeypatch.setattr(norm, "BAND_ELEMENTS", 1)
    banded = coefficients(*channel_sums(x), 64 * 96, None, None, module.eps, x.dtype)
    quarters = [channel_sums(x[:, :, r : r + 32, c : c + 48]) for r in (0, 32) for c in (0, 48)]
    total = sum(q[0] for q in quarters)
    squares = sum(q[1] for q in quarters)
    cut = coefficients(total, squares, 64 * 96, None, None, module.eps, x.dtype)
    for other in (banded, cut):
        assert torch.equal(other[0], whole[0]) and torch.equal(other[1], whole[1])


@pytest.mark.parametrize(("dtype", "bits"), [(torch.bfloat16, 8), (torch.float16, 11)])
def test_the_product_of_an_activation_and_its_scale_is_exact_in_float32(dtype, bits):
    """So x * scale + shift is rounded once, fused (FMA) or not, in a vector loop or a row's scalar tail."""
    x = _activations(dtype=dtype)
    scale, _ = coefficients(*channel_sums(x), 37 * 53, None, None, 1e-5, dtype)
    mantissa, _ = torch.frexp(scale.double())
    assert torch.equal(mantissa * 2.0 ** norm.SCALE_BITS[dtype] % 1, torch.zeros_like(mantissa))
    assert norm.SCALE_BITS[dtype] + bits <= 24
    product32 = x.float() * scale[:, :, None, None]
    product64 = x.double() * scale.double()[:, :, None, None]
    assert torch.equal(product32.double(), product64)


def test_a_tile_is_normalised_bit_for_bit_as_the_same_pixels_of_the_whole_image():
    x = _activations(shape=(1, 8, 37, 53))
    scale, shift = coefficients(*channel_sums(x), 37 * 53, None, None, 1e-5, x.dtype)
    whole = normalise(x, scale, shift)
    for top, bottom, left, right in [(0, 37, 0, 53), (3, 20, 5, 22), (0, 1, 0, 53), (11, 37, 17, 18), (4, 9, 30, 53)]:
        tile = normalise(x[:, :, top:bottom, left:right].contiguous(), scale, shift)
        assert torch.equal(tile, whole[:, :, top:bottom, left:right])


def test_under_autocast_it_keeps_the_activations_dtype():
    x = _activations(dtype=torch.bfloat16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), float64_statistics():
        assert InstanceNorm(8)(x).dtype == torch.bfloat16


def test_outside_float64_statistics_or_with_gradients_it_is_torch_s_own():
    x = _activations(dtype=torch.bfloat16)
    module, plain = InstanceNorm(8, affine=True), torch.nn.InstanceNorm2d(8, affine=True)
    plain.load_state_dict(module.state_dict())
    with torch.inference_mode():
        assert torch.equal(module(x), plain(x))
    with float64_statistics():
        y = module(x.requires_grad_())
        y.float().square().sum().backward()
    assert torch.equal(y.detach(), plain(x).detach()) and x.grad is not None


def test_float64_statistics_is_restored_after_an_error():
    with pytest.raises(RuntimeError), float64_statistics():
        raise RuntimeError("boom")
    x = _activations(dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(InstanceNorm(8)(x), F.instance_norm(x, eps=1e-5))
