"""Importing ResNet CycleGAN generators of every public layout, whatever their module names.

Each test builds the network as its implementation defines it (``layout_networks.py``), saves its
``state_dict()``, imports it, and checks that cgdistill's generator computes what the original does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cgdistill import paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.errors import CgdistillError
from cgdistill.layouts import inspect_weights
from cgdistill.layouts.networks import direction_in_name
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.official import import_official
from cgdistill.train.config import DistillConfig
from cgdistill.train.distill import distill
from cgdistill.train.loop import Observer
from cgdistill.train.student import build_student
from cgdistill.weights import load_generator
from layout_networks import (
    AitorzipGenerator,
    MmagicResnetGenerator,
    NLayerDiscriminator,
    PyTorchGanDiscriminator,
    PyTorchGanGenerator,
    TutorialGenerator,
    UnetGenerator,
    randomised,
)
from official_state import load_official_state_dict
from test_official import Payload, official_network

TOLERANCE = 1e-5
"""The original and the import run the same float32 arithmetic except for the order of some sums
(an explicit pad layer instead of a conv's own padding, a bias folded into a running mean): a few
units in the last place (about 1e-7) per layer on activations of order one, so about 1e-6 after the
dozen layers of these networks. A wrong padding, norm or bias moves outputs by 1e-2 or more
(``test_padding_that_weights_cannot_show_changes_the_output`` shows it)."""


def max_difference(original: nn.Module, ours: nn.Module, channels: int = 3, size: int = 32) -> float:
    x = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected, got = original.eval()(x), ours.eval()(x)
    assert expected.shape == got.shape
    assert (expected.abs() < 0.9).float().mean() > 0.5, "tanh is saturated; the comparison would prove little"
    return (expected - got).abs().max().item()


def imported(path: Path, key: str | None = None) -> ResnetGenerator:
    config, state = load_official_state_dict(path, key)
    generator = ResnetGenerator(config)
    generator.load_state_dict(state, strict=True)
    return generator.eval()


def saved(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


LAYOUTS = {
    # name: (network factory, layout recognised, GeneratorConfig fields that must follow)
    "pytorch-gan": (lambda: PyTorchGanGenerator(blocks=2), "pytorch-gan", dict(upsample="resize-conv", up_padding="zeros")),
    "pytorch-gan-affine": (
        lambda: PyTorchGanGenerator(blocks=2, features=8, affine=True),
        "pytorch-gan",
        dict(norm="instance-affine", upsample="resize-conv", up_padding="zeros", ngf=8),
    ),
    "aitorzip": (lambda: AitorzipGenerator(n_residual_blocks=2), "cyclegan-authors", dict(upsample="deconv", ngf=64)),
    "tutorial": (lambda: TutorialGenerator(num_features=8), "cyclegan-tutorial", dict(down_padding="reflect")),
    "mmagic-instance": (lambda: MmagicResnetGenerator(), "mmagic", dict(norm="instance")),
    "mmagic-batch": (lambda: MmagicResnetGenerator(norm="BN"), "mmagic", dict(norm="batch")),
    "mmagic-affine-dropout": (
        lambda: MmagicResnetGenerator(affine=True, use_dropout=True),
        "mmagic",
        dict(norm="instance-affine"),
    ),
    "mmagic-batch-dropout": (lambda: MmagicResnetGenerator(norm="BN", use_dropout=True), "mmagic", dict(norm="batch")),
}  # fmt: skip


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_each_public_layout_imports_with_identical_outputs(tmp_path: Path, name: str):
    factory, layout, fields = LAYOUTS[name]
    net = randomised(factory())
    path = saved(net.state_dict(), tmp_path / f"{name}.pth")
    ours = imported(path)
    assert max_difference(net, ours) <= TOLERANCE
    assert all(getattr(ours.config, field) == value for field, value in fields.items()), ours.config
    assert ours.config.blocks == 2
    (network,) = inspect_weights(path).networks
    assert network.generator is not None and network.generator.layout.name == layout


def test_padding_that_weights_cannot_show_changes_the_output(tmp_path: Path):
    """Why the layout matters: the same tensors with another implementation's padding differ visibly."""
    for net, wrong in (
        (randomised(TutorialGenerator()), {"down_padding": "zeros"}),
        (randomised(PyTorchGanGenerator(features=8)), {"up_padding": "reflect"}),
    ):
        path = saved(net.state_dict(), tmp_path / "net.pth")
        config, state = load_official_state_dict(path)
        assert max_difference(net, imported(path)) <= TOLERANCE
        other = ResnetGenerator(GeneratorConfig(**{**config.to_dict(), **wrong}))
        other.load_state_dict(state, strict=True)
        assert max_difference(net, other) > 1e-3


def test_a_safetensors_file_is_read_in_natural_key_order(tmp_path: Path):
    """Safetensors keeps no order (``down_blocks`` sorts before ``initial``): shapes and positions
    relative to the residual blocks still place every layer."""
    net = randomised(TutorialGenerator())
    path = tmp_path / "tutorial.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    assert max_difference(net, imported(path)) <= TOLERANCE


def test_the_tutorial_checkpoint_with_its_optimizer_state_imports(tmp_path: Path):
    net = randomised(TutorialGenerator())
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    net(torch.rand(1, 3, 16, 16)).mean().backward()
    optimizer.step()
    net.eval()
    path = saved({"state_dict": net.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "genh.pth.tar")
    assert max_difference(net, imported(path)) <= TOLERANCE
    report = inspect_weights(path)
    assert [n.label for n in report.networks] == ["state_dict"]
    assert report.skipped == ["optimizer (optimizer state)"]


def test_convs_without_bias_before_instance_norm_get_zero_biases(tmp_path: Path):
    net = randomised(MmagicResnetGenerator(norm="IN"))
    state = {k: v for k, v in net.state_dict().items() if not (k.endswith(".bias") and not k.startswith("model.7."))}
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d) and not name.startswith("model.7."):
            module.bias = None  # the network these tensors describe: convs without bias but the last
    path = saved(state, tmp_path / "nobias.pth")
    assert max_difference(net, imported(path)) <= TOLERANCE


class UnnamedBatchNormGenerator(nn.Module):
    """A ResNet generator under names no known implementation uses (``encoder``/``transformer``/``decoder``),
    with batch norm, a stem without conv bias and residual convs with one (folded into the norm)."""

    def __init__(self, ngf: int = 8, blocks: int = 2) -> None:
        super().__init__()

        def norm_relu(channels: int) -> list[nn.Module]:
            return [nn.BatchNorm2d(channels), nn.ReLU(True)]

        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=False), *norm_relu(ngf),
            nn.Conv2d(ngf, ngf * 2, 3, stride=2, padding=1, bias=False), *norm_relu(ngf * 2),
            nn.Conv2d(ngf * 2, ngf * 4, 3, stride=2, padding=1, bias=False), *norm_relu(ngf * 4),
        )  # fmt: skip
        self.transformer = nn.ModuleList(
            nn.Sequential(
                nn.ReflectionPad2d(1),
                nn.Conv2d(ngf * 4, ngf * 4, 3),
                *norm_relu(ngf * 4),
                nn.ReflectionPad2d(1),
                nn.Conv2d(ngf * 4, ngf * 4, 3),
                nn.BatchNorm2d(ngf * 4),
            )  # fmt: skip
            for _ in range(blocks)
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 3, stride=2, padding=1, output_padding=1, bias=False),
            *norm_relu(ngf * 2),
            nn.ConvTranspose2d(ngf * 2, ngf, 3, stride=2, padding=1, output_padding=1, bias=False),
            *norm_relu(ngf),
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, 3, 7),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        for block in self.transformer:
            h = h + block(h)
        return self.decoder(h)


def test_unknown_names_import_by_structure_with_the_assumption_said(tmp_path: Path):
    net = randomised(UnnamedBatchNormGenerator())
    path = saved(net.state_dict(), tmp_path / "mine.pth")
    assert max_difference(net, imported(path)) <= TOLERANCE
    (network,) = inspect_weights(path).networks
    assert network.generator.config.norm == "batch"
    assert network.generator.layout.name == "unrecognised-names"
    assert any("padding assumed" in note for note in network.generator.notes)


def test_pytorch_gan_generator_for_one_channel_images_is_refused_naming_its_padding(tmp_path: Path):
    path = saved(PyTorchGanGenerator(channels=1, features=8).state_dict(), tmp_path / "gray.pth")
    with pytest.raises(CgdistillError, match=r"gray\.pth holds a ResNet generator .*image channel count \(1\)") as info:
        load_official_state_dict(path)
    assert "\n" not in info.value.message


# --- files holding several networks -------------------------------------------------------------------


def cyclegan_pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    return randomised(PyTorchGanGenerator(features=8), seed), randomised(PyTorchGanGenerator(features=8), seed + 1)


def test_a_dict_of_state_dicts_imports_both_directions_named_by_their_keys(tmp_path: Path):
    g_ab, g_ba = cyclegan_pair()
    checkpoint = {
        "G_AB": g_ab.state_dict(),
        "G_BA": g_ba.state_dict(),
        "D_A": PyTorchGanDiscriminator().state_dict(),
        "D_B": PyTorchGanDiscriminator().state_dict(),
    }
    path = saved(checkpoint, tmp_path / "cyclegan.pth")
    result = import_official(path, "both")
    assert result.directions == ["A2B", "B2A"]
    assert sorted(p.name for p in result.run.iterdir()) == ["G_A2B.safetensors", "G_B2A.safetensors", "config.json"]
    a2b, info = load_generator(result.run / "G_A2B.safetensors")
    b2a, _ = load_generator(result.run / "G_B2A.safetensors")
    assert max_difference(g_ab, a2b) <= TOLERANCE and max_difference(g_ba, b2a) <= TOLERANCE
    assert info.extra == {
        "source": "imported",
        "source_file": "cyclegan.pth",
        "layout": "pytorch-gan",
        "network": "G_AB",
    }
    config = json.loads((result.run / "config.json").read_text())
    assert config["generators"]["B2A"]["network"] == "G_BA"


def test_the_authors_netg_a_and_netg_b_with_dataparallel_prefixes_map_a_to_b_and_b_to_a(tmp_path: Path):
    g_a, g_b = official_network(seed=1), official_network(seed=2)
    checkpoint = {
        "netG_A": {f"module.{k}": v for k, v in g_a.state_dict().items()},
        "netG_B": {f"module.{k}": v for k, v in g_b.state_dict().items()},
        "netD_A": NLayerDiscriminator().state_dict(),
    }
    path = saved(checkpoint, tmp_path / "latest.pth")
    run = import_official(path, "authors").run
    assert max_difference(g_a, load_generator(run / "G_A2B.safetensors")[0]) <= TOLERANCE
    assert max_difference(g_b, load_generator(run / "G_B2A.safetensors")[0]) <= TOLERANCE


def lightning_checkpoint(g_ab: nn.Module, g_ba: nn.Module) -> dict:
    """A Lightning module's checkpoint: one state dict keyed by attribute, a compiled G_AB, optimizer lists."""
    state = {f"G_AB._orig_mod.{k}": v for k, v in g_ab.state_dict().items()}
    state.update({f"G_BA.{k}": v for k, v in g_ba.state_dict().items()})
    state.update({f"D_A.{k}": v for k, v in PyTorchGanDiscriminator().state_dict().items()})
    optimizer = torch.optim.Adam(g_ba.parameters())
    return {
        "epoch": 7,
        "global_step": 1400,
        "pytorch-lightning_version": "2.1.3",
        "state_dict": state,
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [{"base_lrs": [0.0002], "last_epoch": 7}],
        "hyper_parameters": {"lr": 0.0002, "lambda_cycle": 10.0},
    }


def test_a_lightning_checkpoint_imports_both_generators(tmp_path: Path):
    g_ab, g_ba = cyclegan_pair()
    path = saved(lightning_checkpoint(g_ab, g_ba), tmp_path / "epoch=7.ckpt")
    run = import_official(path, "lightning").run
    assert max_difference(g_ab, load_generator(run / "G_A2B.safetensors")[0]) <= TOLERANCE
    assert max_difference(g_ba, load_generator(run / "G_B2A.safetensors")[0]) <= TOLERANCE
    report = inspect_weights(path)
    assert [(n.path, n.kind) for n in report.networks] == [
        ("state_dict.G_AB", "generator"),
        ("state_dict.G_BA", "generator"),
        ("state_dict.D_A", "discriminator"),
    ]
    assert report.metadata["epoch"] == "7" and report.metadata["hyper_parameters.lambda_cycle"] == "10.0"
    assert report.skipped == ["optimizer_states (a list of 1 states)", "lr_schedulers (a list of 1 states)"]


def mmagic_checkpoint() -> tuple[dict, nn.Module]:
    """An mmagic model checkpoint: generators and discriminators keyed by the domain they produce."""
    zebra, horse = randomised(MmagicResnetGenerator(), 3), randomised(MmagicResnetGenerator(), 4)
    state = {f"generators.zebra.{k}": v for k, v in zebra.state_dict().items()}
    state.update({f"generators.horse.{k}": v for k, v in horse.state_dict().items()})
    state.update({f"discriminators.zebra.{k}": v for k, v in NLayerDiscriminator().state_dict().items()})
    return {"meta": {"mmengine_version": "0.10.3", "iter": 270000}, "state_dict": state}, zebra


def test_two_generators_whose_names_say_no_direction_are_a_question_listing_them(tmp_path: Path):
    checkpoint, _ = mmagic_checkpoint()
    path = saved(checkpoint, tmp_path / "iter_270000.pth")
    with pytest.raises(
        CgdistillError, match=r"holds 2 generators \(state_dict\.generators\.zebra, .*horse\) whose names"
    ):
        import_official(path, "mm")
    assert not paths.run_path("mm").exists()


def test_key_picks_one_network_by_its_last_name_segments(tmp_path: Path):
    checkpoint, zebra = mmagic_checkpoint()
    path = saved(checkpoint, tmp_path / "iter_270000.pth")
    result = import_official(path, "horse2zebra", key="generators.zebra", direction="A2B")
    assert result.directions == ["A2B"] and result.generators[0].decided_by == "--direction"
    assert max_difference(zebra, load_generator(result.run / "G_A2B.safetensors")[0]) <= TOLERANCE


def test_key_naming_a_discriminator_or_nothing_is_refused_listing_what_is_there(tmp_path: Path):
    g_ab, g_ba = cyclegan_pair()
    path = saved(lightning_checkpoint(g_ab, g_ba), tmp_path / "last.ckpt")
    with pytest.raises(CgdistillError, match=r"'state_dict\.D_A' is a PatchGAN discriminator: .*not a generator"):
        import_official(path, "x", key="D_A")
    with pytest.raises(
        CgdistillError, match=r"no network named 'G_XY'; it holds 'state_dict\.G_AB' \(ResNet generator\)"
    ):
        import_official(path, "x", key="G_XY")
    assert not paths.run_path("x").exists()


def test_direction_picks_one_of_two_generators_named_by_direction(tmp_path: Path):
    g_ab, g_ba = cyclegan_pair()
    path = saved({"G_AB": g_ab.state_dict(), "G_BA": g_ba.state_dict()}, tmp_path / "pair.pth")
    result = import_official(path, "only_b2a", direction="B2A")
    assert [g.network for g in result.generators] == ["G_BA"]
    assert sorted(p.name for p in result.run.iterdir()) == ["G_B2A.safetensors", "config.json"]


def test_more_than_two_generators_ask_for_a_key(tmp_path: Path):
    nets = [randomised(PyTorchGanGenerator(features=8), seed) for seed in range(3)]
    path = saved({f"G_{i}": n.state_dict() for i, n in enumerate(nets)}, tmp_path / "three.pth")
    with pytest.raises(CgdistillError, match=r"holds 3 generators \(G_0, G_1, G_2\).* --key NAME"):
        import_official(path, "three")


def test_two_generators_of_the_same_direction_ask_for_a_key(tmp_path: Path):
    g, ema = cyclegan_pair()
    path = saved({"model": {"G_AB": g.state_dict()}, "ema": {"G_AB": ema.state_dict()}}, tmp_path / "ema.pth")
    with pytest.raises(CgdistillError, match=r"holds 2 generators \(model\.G_AB, ema\.G_AB\); pick one with --key"):
        import_official(path, "ema")
    assert import_official(path, "ema", key="ema.G_AB").directions == ["A2B"]


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("G_AB", "A2B"), ("state_dict.G_BA", "B2A"), ("netG_A2B", "A2B"), ("gen_b2a", "B2A"), ("netG_A", "A2B"),
        ("netG_B", "B2A"), ("G_XtoY", "A2B"), ("generator_YX", "B2A"), ("G_A", None), ("gen_Z", None),
        ("generators.zebra", None), ("", None),
    ],
)  # fmt: skip
def test_directions_are_read_from_names_only_where_they_say_so(name: str, direction: str | None):
    assert direction_in_name(name) == direction


# --- what is not a CycleGAN ResNet generator -----------------------------------------------------------


def test_a_unet_is_named_as_such(tmp_path: Path):
    path = saved(UnetGenerator(num_downs=8).state_dict(), tmp_path / "unet.pth")
    with pytest.raises(CgdistillError, match=r"unet\.pth holds 16 convs .*skip connections.*a U-Net generator"):
        import_official(path, "unet")
    assert not paths.run_path("unet").exists()


def test_a_lone_discriminator_is_named_as_such(tmp_path: Path):
    path = saved(NLayerDiscriminator().state_dict(), tmp_path / "D.pth")
    with pytest.raises(CgdistillError, match=r"D\.pth holds a PatchGAN discriminator: 5 convs .*ndf 8"):
        import_official(path, "d")


def test_a_classifier_is_named_as_such(tmp_path: Path):
    torchvision = pytest.importorskip("torchvision")
    path = saved(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(CgdistillError, match=r"resnet18\.pth holds fully connected layers \('fc' is 1000x512\)"):
        import_official(path, "classifier")


def test_residual_blocks_of_three_convs_are_refused_naming_the_block(tmp_path: Path):
    state = {}
    for key, value in randomised(TutorialGenerator()).state_dict().items():
        state[key] = value
        if ".block.1.conv.0." in key:  # a third conv after each block's second
            state[key.replace(".block.1.", ".block.2.")] = value.clone()
    path = saved(state, tmp_path / "three_convs.pth")
    with pytest.raises(CgdistillError, match=r"'res_blocks\.0\.block' holds 3 3x3 convs at 32 channels"):
        load_official_state_dict(path)


# --- the command line -----------------------------------------------------------------------------------


def test_download_imports_both_directions_and_says_where_each_came_from(cli, tmp_path: Path):
    g_ab, g_ba = cyclegan_pair()
    path = saved(lightning_checkpoint(g_ab, g_ba), tmp_path / "last.ckpt")
    result = cli("download", "--pretrained", "pg", "--from-file", path)
    assert result.code == 0, result.err
    text = " ".join(result.out.split())
    assert "Imported generators pg" in text
    assert "A2B: 'state_dict.G_AB', eriklindernoren/PyTorch-GAN GeneratorResNet, direction from its name" in text
    assert "B2A: 'state_dict.G_BA'" in text


def test_download_key_imports_one_network(cli, tmp_path: Path, home: Path):
    g_ab, g_ba = cyclegan_pair()
    path = saved(lightning_checkpoint(g_ab, g_ba), tmp_path / "last.ckpt")
    result = cli("download", "--pretrained", "pg", "--from-file", path, "--key", "G_BA")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (home / "runs" / "pg").iterdir()) == ["G_B2A.safetensors", "config.json"]


def test_download_refuses_a_unet_in_one_sentence_with_exit_2(cli, tmp_path: Path, home: Path):
    path = saved(UnetGenerator(num_downs=7).state_dict(), tmp_path / "unet.pth")
    result = cli("download", "--pretrained", "unet", "--from-file", path)
    assert result.code == 2
    assert "a U-Net generator, which cgdistill does not distill" in result.err_text
    assert "Traceback" not in result.err and not (home / "runs" / "unet").exists()


def test_key_without_pretrained_is_a_usage_error(cli):
    result = cli("download", "horse2zebra", "--key", "G_AB")
    assert result.code == 2
    assert "--key only applies to --pretrained" in result.err_text


def test_inspect_shows_networks_layouts_sizes_and_other_entries(cli, tmp_path: Path, home: Path):
    g_ab, g_ba = cyclegan_pair()
    path = saved(lightning_checkpoint(g_ab, g_ba), tmp_path / "last.ckpt")
    result = cli("inspect", path)
    assert result.code == 0, result.err
    text = " ".join(result.out.split())
    assert "PyTorch checkpoint" in text
    assert "state_dict.G_AB" in result.out and "eriklindernoren/PyTorch-GAN" in result.out
    assert "PatchGAN discriminator" in result.out
    assert "epoch=7" in text and "optimizer_states" in text
    assert "cgdistill download --pretrained NAME --from-file" in result.err_text
    assert not (home / "runs").exists()  # inspecting imports nothing


def test_inspect_json_reports_each_network_with_its_config(cli, tmp_path: Path):
    net = randomised(TutorialGenerator())
    path = saved(net.state_dict(), tmp_path / "genz.pth")
    result = cli("inspect", path, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    (network,) = report["networks"]
    assert (network["name"], network["kind"], network["layout"]) == ("", "generator", "cyclegan-tutorial")
    assert network["config"]["down_padding"] == "reflect" and network["config"]["ngf"] == 8
    assert network["parameters"] == sum(p.numel() for p in net.parameters())


def test_inspect_counts_the_published_generator_at_11378179_parameters(cli, tmp_path: Path):
    path = saved(official_network(ngf=64, n_blocks=9).state_dict(), tmp_path / "horse2zebra.pth")
    result = cli("inspect", path, "--json")
    (network,) = json.loads(result.out)["networks"]
    assert network["parameters"] == 11_378_179 and network["layout"] == "cyclegan-authors"


def test_inspect_reads_a_cgdistill_model_file_and_its_metadata(cli, tmp_path: Path):
    net = randomised(PyTorchGanGenerator(features=8))
    run = import_official(saved(net.state_dict(), tmp_path / "g.pth"), "pg", direction="B2A").run
    result = cli("inspect", run / "G_B2A.safetensors", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["format"] == "safetensors" and report["cgdistill"]["direction"] == "B2A"
    assert report["cgdistill"]["config"]["up_padding"] == "zeros"
    assert report["networks"][0]["layout"] == "cgdistill"


def test_inspect_never_runs_code_from_the_file(cli, tmp_path: Path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.1.weight": Payload(marker)}}, path)
    result = cli("inspect", path)
    assert result.code == 2
    assert "pickled Python objects other than tensors" in result.err_text
    assert not marker.exists()


def test_inspect_of_a_missing_file_is_one_sentence(cli, tmp_path: Path):
    result = cli("inspect", tmp_path / "nowhere.pth")
    assert result.code == 2
    assert "nowhere.pth does not exist" in result.err_text


# --- distilling an imported teacher ---------------------------------------------------------------------


class Messages(Observer):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def test_an_imported_resize_conv_affine_teacher_distills_end_to_end_with_copy_init(tmp_path: Path):
    """PyTorch-GAN's layout with affine instance norm: resize-conv upsampling with zero padding, which
    the student inherits so that the copied outer layers compute what they did in the teacher."""
    make_toy_dataset(paths.dataset_path("toy"), size=36, n_train=6, n_test=3)
    original = randomised(PyTorchGanGenerator(features=8, affine=True))
    imported_run = import_official(saved(original.state_dict(), tmp_path / "G_AB.pth"), "pg", dataset="toy").run
    teacher, _ = load_generator(imported_run / "G_A2B.safetensors")
    assert (teacher.config.norm, teacher.config.upsample, teacher.config.up_padding) == (
        "instance-affine",
        "resize-conv",
        "zeros",
    )

    built, notes = build_student(DistillConfig(blocks=1), teacher, torch.Generator().manual_seed(0))
    student_state, teacher_state = built.generator.state_dict(), teacher.state_dict()
    outer = [k for k in student_state if not k.startswith("blocks.")]
    assert outer and all(torch.equal(student_state[k], teacher_state[k]) for k in outer)
    assert built.generator.config == GeneratorConfig(**{**teacher.config.to_dict(), "blocks": 1})

    observer = Messages()
    settings = dict(
        teacher="pg", blocks=1, image_size=32, load_size=36, ndf=4, pool_size=2, max_steps=2, sample_every=1000,
        save_every=1000, log_every=1, eval_every=2, seed=1, device="cpu", amp=False,
    )  # fmt: skip
    run = distill(DistillConfig(**settings), observer=observer)
    assert any("Copied the teacher's stem, downsampling, upsampling and output layers" in m for m in observer.lines)
    student, info = load_generator(run / "G.safetensors")
    assert student.config == built.generator.config
    assert (info.teacher, info.direction, info.step) == ("pg", "A2B", 2)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(record.get("psnr_to_teacher") is not None for record in records)
