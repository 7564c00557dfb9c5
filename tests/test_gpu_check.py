"""benchmarks/gpu_check.py (`make gpu-check`): what can be checked without a GPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_without_a_gpu_it_refuses_in_one_sentence(gpu_check, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpu-check needs a CUDA GPU") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing was made


def test_an_unknown_stage_is_named(gpu_check, capsys):
    assert gpu_check.main(["--device", "cpu", "--skip", "teacher,warp"]) == 2
    assert "--skip warp: no such stage" in capsys.readouterr().err


def test_the_rate_leaves_out_the_first_two_intervals(gpu_check, tmp_path):
    # Step 1 and the interval up to step 25 hold start-up and compilation: 0.1 and 1 it/s here.
    rates = {1: 0.1, 25: 1.0, 50: 10.0, 75: 10.0, 100: 5.0}
    lines = [json.dumps({"step": step, "steps_per_s": rate}) for step, rate in rates.items()]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    # Steps 26-100: 75 steps in 2.5 + 2.5 + 5 s.
    assert gpu_check.steady_rate(tmp_path) == pytest.approx(75 / 10)
