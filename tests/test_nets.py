import pytest
import torch

from cgdistill.nets import (
    DiscriminatorConfig,
    GeneratorConfig,
    PatchDiscriminator,
    ResnetGenerator,
    count_parameters,
    init_weights,
)


def test_published_teacher_has_11378179_parameters():
    assert count_parameters(ResnetGenerator(GeneratorConfig(blocks=9, ngf=64))) == 11_378_179


def test_three_block_student_has_4297219_parameters():
    assert count_parameters(ResnetGenerator(GeneratorConfig(blocks=3, ngf=64))) == 4_297_219


def test_patchgan_has_the_published_parameter_count():
    assert count_parameters(PatchDiscriminator(DiscriminatorConfig())) == 2_764_737


@pytest.mark.parametrize("norm", ["instance", "instance-affine", "batch"])
@pytest.mark.parametrize("upsample", ["deconv", "resize-conv"])
def test_generator_keeps_the_image_shape_and_range(norm, upsample):
    g = ResnetGenerator(GeneratorConfig(blocks=2, ngf=8, norm=norm, upsample=upsample)).eval()
    x = torch.randn(2, 3, 36, 44)
    y = g(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0


def test_forward_features_returns_one_output_per_block_and_the_same_image():
    g = ResnetGenerator(GeneratorConfig(blocks=4, ngf=8)).eval()
    x = torch.randn(1, 3, 32, 32)
    out, features = g.forward_features(x)
    assert len(features) == 4
    assert all(f.shape == (1, 32, 8, 8) for f in features)
    torch.testing.assert_close(out, g(x))


def test_patchgan_scores_a_grid_of_patches():
    d = PatchDiscriminator(DiscriminatorConfig(ndf=8))
    assert d(torch.randn(1, 3, 64, 64)).shape == (1, 1, 6, 6)


def test_init_weights_draws_convs_from_a_narrow_normal():
    g = ResnetGenerator(GeneratorConfig(blocks=9, ngf=64))
    init_weights(g, generator=torch.Generator().manual_seed(0))
    weight = g.blocks[0].conv[1].weight
    assert abs(weight.std().item() - 0.02) < 0.001
    assert abs(weight.mean().item()) < 0.001
    assert torch.all(g.blocks[0].conv[1].bias == 0)


def test_invalid_config_names_the_value():
    with pytest.raises(ValueError, match="norm"):
        GeneratorConfig(norm="group")


def test_separable_blocks_are_depthwise_then_pointwise_with_a_norm_between():
    g = ResnetGenerator(GeneratorConfig(blocks=1, ngf=8, block="separable"))
    layers = list(g.blocks[0].conv)
    convs = [m for m in layers if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.groups) for c in convs] == [((3, 3), 32), ((1, 1), 1)] * 2
    kinds = [type(m).__name__ for m in layers]
    assert kinds == [
        "ReflectionPad2d", "Conv2d", "InstanceNorm", "Conv2d", "InstanceNorm", "ReLU",
        "ReflectionPad2d", "Conv2d", "InstanceNorm", "Conv2d", "InstanceNorm",
    ]  # fmt: skip


def test_separable_blocks_cut_the_block_parameters_and_keep_the_outer_layers():
    standard = ResnetGenerator(GeneratorConfig(blocks=3, ngf=64))
    separable = ResnetGenerator(GeneratorConfig(blocks=3, ngf=64, block="separable"))
    # Per block: two of (256 depthwise 3x3 + bias) + (256x256 pointwise + bias).
    assert count_parameters(separable.blocks[0]) == 2 * (256 * 9 + 256 + 256 * 256 + 256)
    outer = {k: v.shape for k, v in standard.state_dict().items() if not k.startswith("blocks.")}
    assert outer == {k: v.shape for k, v in separable.state_dict().items() if not k.startswith("blocks.")}


@pytest.mark.parametrize("norm", ["instance", "instance-affine", "batch"])
def test_separable_generator_keeps_the_image_shape_and_gives_features(norm):
    g = ResnetGenerator(GeneratorConfig(blocks=2, ngf=8, norm=norm, block="separable")).eval()
    x = torch.randn(2, 3, 36, 44)
    out, features = g.forward_features(x)
    assert out.shape == x.shape and [f.shape for f in features] == [(2, 32, 9, 11)] * 2


def test_unknown_block_kind_names_the_value():
    with pytest.raises(ValueError, match="block must be one of standard, separable"):
        GeneratorConfig(block="mobile")
