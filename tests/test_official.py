"""Importing official CycleGAN generators: the reference layout, its variants, and bad files.

The reference network is rebuilt here from the published architecture (junyanz's ResnetGenerator:
one ``nn.Sequential`` named ``model``), so the test needs no download.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.nets import ResnetGenerator, count_parameters
from cgdistill.official import import_official
from cgdistill.runs import resolve_generator
from cgdistill.weights import load_generator
from official_state import load_official_state_dict


def official_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "instance-affine":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)


class OfficialResnetBlock(nn.Module):
    """The reference ResnetBlock: ``conv_block`` = pad, conv, norm, relu, [dropout], pad, conv, norm."""

    def __init__(self, dim: int, norm: str, use_dropout: bool, use_bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, padding=0, bias=use_bias),
            official_norm(norm, dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=use_bias), official_norm(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class OfficialResnetGenerator(nn.Module):
    """The reference ResnetGenerator, built exactly as published so its keys are ``model.N...``."""

    def __init__(self, ngf: int = 64, n_blocks: int = 9, norm: str = "instance", use_dropout: bool = False) -> None:
        super().__init__()
        use_bias = norm != "batch"  # the reference: use_bias = (norm_layer is InstanceNorm2d)
        model: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, ngf, 7, padding=0, bias=use_bias),
            official_norm(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                official_norm(norm, ngf * mult * 2),
                nn.ReLU(True),
            ]
        model += [OfficialResnetBlock(ngf * 4, norm, use_dropout, use_bias) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=use_bias
                ),
                official_norm(norm, ngf * mult // 2),
                nn.ReLU(True),
            ]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def official_network(
    ngf: int = 8, n_blocks: int = 2, norm: str = "instance", use_dropout: bool = False, seed: int = 0
) -> OfficialResnetGenerator:
    """A reference network with random weights (and random batch-norm statistics), in eval mode."""
    torch.manual_seed(seed)
    net = OfficialResnetGenerator(ngf, n_blocks, norm, use_dropout)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                tensor.normal_(0, 0.2)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(1000)
            elif tensor.ndim == 1 and norm != "instance" and name.endswith("weight") and "conv" not in name:
                tensor.normal_(1.0, 0.1)
            else:
                tensor.normal_(0, 0.1)
    return net.eval()


def norm_modules(net: nn.Module) -> list[str]:
    return [name for name, m in net.named_modules() if isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d))]


def with_stale_instance_stats(net: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as the 2018 files have it: running stats on every (instance) norm layer."""
    state = dict(net.state_dict())
    for name in norm_modules(net):
        channels = net.get_submodule(name).num_features
        state[f"{name}.running_mean"] = torch.randn(channels)
        state[f"{name}.running_var"] = torch.rand(channels) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    return state


def save_pth(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def assert_same_outputs(official: nn.Module, ours: nn.Module, size: int = 32) -> None:
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        expected, got = official(x), ours.eval()(x)
    assert expected.std() > 0.05, "the reference output is saturated; the comparison would prove nothing"
    assert (expected - got).abs().max().item() < 1e-5


def imported(path: Path) -> ResnetGenerator:
    config, state = load_official_state_dict(path)
    generator = ResnetGenerator(config)
    generator.load_state_dict(state, strict=True)
    return generator.eval()


VARIANTS = {
    "plain": dict(norm="instance"),
    "affine-instance": dict(norm="instance-affine"),
    "batch": dict(norm="batch"),
    "dropout": dict(norm="instance", use_dropout=True),
    "affine-dropout": dict(norm="instance-affine", use_dropout=True),
    "batch-dropout": dict(norm="batch", use_dropout=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_official_variant_imports_with_identical_outputs(tmp_path: Path, variant: str):
    net = official_network(**VARIANTS[variant])
    path = save_pth(net.state_dict(), tmp_path / f"{variant}.pth")
    ours = imported(path)
    assert ours.config.norm == VARIANTS[variant]["norm"]
    assert_same_outputs(net, ours)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_are_stripped(tmp_path: Path, prefix: str):
    net = official_network()
    path = save_pth({prefix + k: v for k, v in net.state_dict().items()}, tmp_path / "prefixed.pth")
    assert_same_outputs(net, imported(path))


def test_a_state_dict_nested_under_state_dict_is_found(tmp_path: Path):
    net = official_network(norm="instance-affine")
    path = save_pth({"state_dict": net.state_dict(), "epoch": torch.tensor(200)}, tmp_path / "wrapped.pth")
    assert_same_outputs(net, imported(path))


def test_stale_instance_norm_statistics_of_the_2018_files_are_dropped(tmp_path: Path):
    net = official_network(ngf=8, n_blocks=9)
    assert len(net.state_dict()) == 48
    stale = with_stale_instance_stats(net)
    assert len(stale) == 117
    path = save_pth(stale, tmp_path / "horse2zebra.pth")
    config, state = load_official_state_dict(path)
    assert (config.blocks, config.ngf, config.norm) == (9, 8, "instance")
    assert len(state) == 48
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in state)
    assert_same_outputs(net, imported(path))


def test_the_legacy_pre_1_6_file_format_of_the_published_files_is_read(tmp_path: Path):
    net = official_network()
    path = tmp_path / "legacy.pth"
    torch.save(with_stale_instance_stats(net), path, _use_new_zipfile_serialization=False)
    assert_same_outputs(net, imported(path))


def test_stale_statistics_are_also_dropped_for_affine_instance_norm(tmp_path: Path):
    net = official_network(norm="instance-affine")
    path = save_pth(with_stale_instance_stats(net), tmp_path / "affine.pth")
    assert_same_outputs(net, imported(path))


def test_batch_norm_running_statistics_are_kept(tmp_path: Path):
    net = official_network(norm="batch")
    path = save_pth(net.state_dict(), tmp_path / "batch.pth")
    _, state = load_official_state_dict(path)
    torch.testing.assert_close(state["stem.2.running_mean"], net.state_dict()["model.2.running_mean"])
    torch.testing.assert_close(
        state["blocks.1.conv.6.running_var"], net.state_dict()["model.11.conv_block.6.running_var"]
    )
    assert "stem.1.bias" not in state and "head.1.bias" in state


def test_blocks_and_ngf_are_inferred_from_the_tensors(tmp_path: Path):
    net = official_network(ngf=16, n_blocks=6)
    path = save_pth(net.state_dict(), tmp_path / "six.pth")
    config, _ = load_official_state_dict(path)
    assert (config.blocks, config.ngf, config.upsample) == (6, 16, "deconv")
    assert_same_outputs(net, imported(path))


def test_a_tensor_of_the_wrong_shape_is_refused_naming_its_key(tmp_path: Path):
    state = dict(official_network().state_dict())
    state["model.11.conv_block.1.weight"] = torch.zeros(32, 32, 1, 1)
    path = save_pth(state, tmp_path / "bad_shape.pth")
    with pytest.raises(CgdistillError, match=r"bad_shape\.pth .*'model\.11\.conv_block\.1' is a 1x1 conv"):
        load_official_state_dict(path)


def test_a_missing_tensor_is_refused_naming_its_key(tmp_path: Path):
    state = dict(official_network().state_dict())
    del state["model.15.weight"]  # the second transposed conv when n = 2
    path = save_pth(state, tmp_path / "missing.pth")
    with pytest.raises(CgdistillError, match=r"missing\.pth .*after its residual blocks it has 'model\.12'"):
        load_official_state_dict(path)


def test_an_unexpected_tensor_is_refused_naming_its_key(tmp_path: Path):
    state = dict(official_network().state_dict())
    state["model.3.weight"] = torch.zeros(8)
    path = save_pth(state, tmp_path / "extra.pth")
    with pytest.raises(CgdistillError, match=r"extra\.pth .*1 norm layer\(s\) \('model\.3'\)"):
        load_official_state_dict(path)


def test_a_file_that_is_not_a_torch_checkpoint_is_one_sentence_naming_it(tmp_path: Path):
    bad = tmp_path / "notes.pth"
    bad.write_text("these are not weights\n")
    with pytest.raises(CgdistillError, match=r"notes\.pth is not a readable PyTorch checkpoint") as info:
        load_official_state_dict(bad)
    assert "\n" not in info.value.message


def test_a_truncated_checkpoint_is_one_sentence_naming_it(tmp_path: Path):
    good = save_pth(official_network().state_dict(), tmp_path / "good.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CgdistillError, match=r"cut\.pth is not a readable PyTorch checkpoint"):
        load_official_state_dict(cut)


def test_a_missing_file_is_named(tmp_path: Path):
    with pytest.raises(CgdistillError, match=r"nowhere\.pth does not exist"):
        load_official_state_dict(tmp_path / "nowhere.pth")


def leave_a_mark(marker: str) -> str:
    """What a malicious pickle would run on load: here it only creates a file."""
    Path(marker).write_text("code ran")
    return marker


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (leave_a_mark, (self.marker,))


def test_a_pickle_with_arbitrary_objects_is_refused_and_its_code_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"model.1.weight": Payload(marker)}, path)
    with pytest.raises(CgdistillError, match=r"evil\.pth contains pickled Python objects other than tensors") as info:
        load_official_state_dict(path)
    assert "weights_only=True" in info.value.message
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_plain_pickle_is_refused_without_a_library_warning(tmp_path: Path, recwarn):
    """torch warns about any pickle protocol but its own before refusing; the refusal is all a user needs."""
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "pickled.pth"
    path.write_bytes(pickle.dumps({"model.1.weight": Payload(marker)}, protocol=4))
    with pytest.raises(CgdistillError, match=r"pickled\.pth contains pickled Python objects other than tensors"):
        load_official_state_dict(path)
    assert not marker.exists()
    assert [str(w.message) for w in recwarn] == []


def test_a_checkpoint_that_is_not_a_dict_of_tensors_is_refused(tmp_path: Path):
    path = save_pth({"epoch": 3, "lr": 0.0002}, tmp_path / "options.pth")
    with pytest.raises(CgdistillError, match=r"options\.pth holds no tensors \(only epoch, lr\)"):
        load_official_state_dict(path)


def test_a_state_dict_of_another_network_is_refused(tmp_path: Path):
    path = save_pth(nn.Linear(4, 2).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(CgdistillError, match=r"linear\.pth holds fully connected layers .*: a classifier"):
        load_official_state_dict(path)


def test_import_writes_the_b2a_generator_which_loads_from_the_file_alone(tmp_path: Path):
    net = official_network(norm="instance-affine")
    pth = save_pth(with_stale_instance_stats(net), tmp_path / "style_monet.pth")
    run = import_official(pth, "style_monet", direction="B2A", dataset="monet2photo").run
    assert run == paths.run_path("style_monet")
    assert sorted(p.name for p in run.iterdir()) == ["G_B2A.safetensors", "config.json"]
    generator, info = load_generator(run / "G_B2A.safetensors")
    assert (info.direction, info.dataset, info.teacher) == ("B2A", "monet2photo", None)
    assert info.extra == {"source": "imported", "source_file": "style_monet.pth", "layout": "cyclegan-authors"}
    assert_same_outputs(net, generator)
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "teacher" and config["source"] == "imported-pretrained"
    assert (config["name"], config["dataset"]) == ("style_monet", "monet2photo")
    assert config["generators"] == {
        "B2A": {"network": None, "layout": "cyclegan-authors", "config": generator.config.to_dict()}
    }
    assert resolve_generator("style_monet").path == run / "G_B2A.safetensors"


def test_import_records_a2b_when_no_direction_is_given(tmp_path: Path):
    pth = save_pth(official_network().state_dict(), tmp_path / "horse2zebra.pth")
    run = import_official(pth, "horse2zebra").run
    assert (run / "G_A2B.safetensors").is_file()
    assert load_generator(run / "G_A2B.safetensors")[1].direction == "A2B"


def test_reimporting_replaces_the_generator_and_leaves_no_temporary_files(tmp_path: Path):
    first = save_pth(official_network(seed=1).state_dict(), tmp_path / "first.pth")
    second_net = official_network(seed=2)
    second = save_pth(second_net.state_dict(), tmp_path / "second.pth")
    import_official(first, "mine")
    run = import_official(second, "mine").run
    assert sorted(p.name for p in run.iterdir()) == ["G_A2B.safetensors", "config.json"]
    generator, info = load_generator(run / "G_A2B.safetensors")
    assert info.extra["source_file"] == "second.pth"
    assert_same_outputs(second_net, generator)


def test_a_failed_import_writes_no_run(tmp_path: Path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CgdistillError):
        import_official(bad, "broken")
    assert not paths.run_path("broken").exists()


def test_the_published_nine_block_layout_imports_with_11378179_parameters(tmp_path: Path):
    net = OfficialResnetGenerator(ngf=64, n_blocks=9)
    assert len(net.state_dict()) == 48
    pth = save_pth(net.state_dict(), tmp_path / "monet2photo.pth")
    run = import_official(pth, "monet2photo").run
    generator, _ = load_generator(run / "G_A2B.safetensors")
    assert (generator.config.blocks, generator.config.ngf, generator.config.norm) == (9, 64, "instance")
    assert count_parameters(generator) == 11_378_179
