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
