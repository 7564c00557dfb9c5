"""Mixed precision: --amp-dtype, and the fp16 path with loss scaling, run for real on the CPU.

fp16 autocast and ``torch.amp.GradScaler("cpu")`` exist on the CPU, so the path that GPUs older
than Ampere take (V100, T4) runs here end to end: scaled backward, unscale, inf check, skipped
steps, scale updates, the scaler state in the checkpoint and exact resume. What the CPU cannot show
is fp16's speed on tensor cores. The choice between bf16 and fp16 on a GPU is in test_cuda_device.py.
"""

from __future__ import annotations

import json

import torch

from cgdistill.train.config import TeacherConfig
from cgdistill.train.runtime import setup_runtime
from cgdistill.train.state import latest_checkpoint
from cgdistill.train.teacher import train_teacher
from teacher_runs import weights


def fp16(**overrides) -> TeacherConfig:
    settings = dict(
        data="toy", blocks=2, ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2, epochs=1, epochs_decay=1,
        sample_every=100, log_every=1, seed=3, device="cpu", amp_dtype="fp16",
    )  # fmt: skip
    settings.update(overrides)
    return TeacherConfig(**settings)


def test_naming_fp16_turns_on_fp16_autocast_with_one_scaler_per_optimizer():
    rt = setup_runtime(TeacherConfig(device="cpu", amp_dtype="fp16"))
    assert rt.amp_dtype == torch.float16
    assert isinstance(rt.scaler("G"), torch.amp.GradScaler) and rt.scaler("G") is not rt.scaler("D")
    assert "fp16 autocast + grad scaling" in rt.describe()


def test_bf16_needs_no_scaler():
    rt = setup_runtime(TeacherConfig(device="cpu", amp_dtype="bf16"))
    assert rt.amp_dtype == torch.bfloat16 and rt.scaler("G") is None


def test_no_amp_wins_over_a_named_dtype():
    assert setup_runtime(TeacherConfig(device="cpu", amp=False, amp_dtype="fp16")).amp_dtype is None


def test_an_unknown_amp_dtype_is_one_sentence(cli, toy):
    result = cli("train-teacher", "--data", "toy", "--amp-dtype", "fp8", "--max-steps", "1")
    assert result.code == 2
    assert "--amp-dtype 'fp8' is not valid; use bf16 or fp16." in result.err_text


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_halves():
    rt = setup_runtime(TeacherConfig(device="cpu", amp_dtype="fp16"))
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weight], lr=0.1)
    rt.step("G", (weight * float("inf")).sum(), optimizer)
    assert torch.equal(weight.detach(), torch.ones(3))  # the inf gradient never reached the weights
    assert rt.scaler("G").get_scale() == 65536.0 / 2
    rt.step("G", (weight * 2).sum(), optimizer)
    assert (weight.detach() < 1).all()  # a finite step goes through


def test_fp16_training_on_the_cpu_stores_its_scalers_and_resumes_bitwise(toy):
    straight = train_teacher(fp16(max_steps=4, name="straight"))
    train_teacher(fp16(max_steps=2, name="split"))
    split = train_teacher(fp16(max_steps=4, name="split"), resume=True)
    a, b = weights(straight), weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    scalers = json.loads((latest_checkpoint(split) / "trainer.json").read_text())["scalers"]
    assert set(scalers) == {"G", "D"} and all(s["scale"] > 0 for s in scalers.values())
    config = json.loads((split / "config.json").read_text())["settings"]
    assert config["amp_dtype"] == "fp16"
    records = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["cycle_A"])) for r in records)


def test_the_precision_may_change_on_resume(toy):
    train_teacher(fp16(max_steps=2, name="run"))
    config = fp16(max_steps=3, name="run", amp_dtype="bf16")
    run = train_teacher(config, resume=True, given={"amp_dtype", "max_steps"})
    assert json.loads((run / "state" / "latest.json").read_text())["step"] == 3
