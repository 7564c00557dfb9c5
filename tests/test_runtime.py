"""Device and precision defaults of the training runtime."""

import json

import pytest
import torch

from cgdistill import paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.train import runtime
from cgdistill.train.config import TeacherConfig


def test_the_cpu_trains_in_fp32_without_fast_bf16(monkeypatch):
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: False)
    assert runtime.setup_runtime(TeacherConfig(device="cpu")).amp_dtype is None


def test_the_cpu_uses_bf16_autocast_where_it_has_bf16_units(monkeypatch):
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: True)
    assert runtime.setup_runtime(TeacherConfig(device="cpu")).amp_dtype == torch.bfloat16


def test_no_amp_keeps_fp32_even_with_bf16_units(monkeypatch):
    monkeypatch.setattr("cgdistill.device.cpu_has_fast_bf16", lambda: True)
    assert runtime.setup_runtime(TeacherConfig(device="cpu", amp=False)).amp_dtype is None


def test_cpu_defaults_keep_nchw_unfused_and_no_workers():
    rt = runtime.setup_runtime(TeacherConfig(device="cpu"))
    assert (rt.channels_last, rt.fuse_passes, rt.workers) == (False, False, 0)


@pytest.fixture
def restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


def test_deterministic_training_runs_on_the_cpu_and_is_recorded(cli, home, restore_determinism):
    make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=2, n_test=1)
    args = ("train-teacher", "--data", "toy", "--name", "d", "--deterministic", "--device", "cpu", "--max-steps", "2",
            "--image-size", "24", "--load-size", "28", "--blocks", "1", "--ngf", "4", "--ndf", "4")  # fmt: skip
    result = cli(*args)
    assert result.code == 0, result.err
    assert "deterministic" in result.err_text
    assert torch.are_deterministic_algorithms_enabled()
    assert json.loads((home / "runs" / "d" / "config.json").read_text())["settings"]["deterministic"] is True


def test_the_cpu_is_named_as_lscpu_names_it_and_by_the_platform_without_lscpu(monkeypatch):
    import platform
    import subprocess

    from cgdistill import device

    def lscpu(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, "Architecture: x86_64\nModel name:   AMD EPYC 7B13\nThread(s): 2\n")

    monkeypatch.setattr(device.subprocess, "run", lscpu)
    assert device.cpu_name() == "AMD EPYC 7B13"

    def missing(*args, **kwargs):
        raise FileNotFoundError("lscpu")

    monkeypatch.setattr(device.subprocess, "run", missing)
    monkeypatch.setattr(platform, "processor", lambda: "x86_64-cpu")
    assert device.cpu_name() == "x86_64-cpu"
