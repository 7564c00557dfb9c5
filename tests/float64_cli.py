"""The cgdistill CLI with every network and batch in float64: what tests/test_ddp.py launches.

In float64 two runs that differ only in the order of floating-point sums (DDP's gradient average
against one batched backward) agree to ~1e-16 relative, on any CPU's kernels; fp32 or bf16 rounding
would be amplified by Adam (a gradient that is zero up to rounding becomes a step of +-lr).
Run it like ``python tests/float64_cli.py train-teacher ...`` or under torchrun.
"""

from __future__ import annotations

import sys

import torch

from cgdistill.train.runtime import Runtime

_prepare, _to_device = Runtime.prepare, Runtime.to_device


def prepare(self: Runtime, module: torch.nn.Module, **options) -> torch.nn.Module:
    return _prepare(self, module.double(), **options)


def to_device(self: Runtime, images: torch.Tensor) -> torch.Tensor:
    return _to_device(self, images).double()


def use_float64() -> None:
    """From now on every network the trainers prepare, and every batch they load, is float64."""
    Runtime.prepare, Runtime.to_device = prepare, to_device


if __name__ == "__main__":
    use_float64()
    from cgdistill.cli import run

    sys.exit(run(sys.argv[1:]))
