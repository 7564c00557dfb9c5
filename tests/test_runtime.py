"""Device and precision defaults of the training runtime."""

import torch

from cgdistill.train import runtime
from cgdistill.train.config import TeacherConfig


def test_the_cpu_trains_in_fp32_without_fast_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert runtime.setup_runtime(TeacherConfig(device="cpu")).amp_dtype is None


def test_the_cpu_uses_bf16_autocast_where_it_has_bf16_units(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert runtime.setup_runtime(TeacherConfig(device="cpu")).amp_dtype == torch.bfloat16


def test_no_amp_keeps_fp32_even_with_bf16_units(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert runtime.setup_runtime(TeacherConfig(device="cpu", amp=False)).amp_dtype is None


def test_cpu_defaults_keep_nchw_unfused_and_no_workers():
    rt = runtime.setup_runtime(TeacherConfig(device="cpu"))
    assert (rt.channels_last, rt.fuse_passes, rt.workers) == (False, False, 0)
