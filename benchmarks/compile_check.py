"""Does this machine's torch.compile miscompile a generator's backward pass? (train/compile_check.py)

Usage: .venv/bin/python benchmarks/compile_check.py [--channels 256] [--norm instance-affine]

Two chained residual blocks of the published generator (random weights), their input gradient under
CPU bf16 autocast, eager against torch.compile with inductor's defaults and with the settings that
avoid the fault found on a Sapphire Rapids Xeon (256-bit vectors, one thread), and against the
aot_eager backend (the same graphs, no code generation). A loss on both blocks' outputs, as the
distiller's feature loss puts one on every block. Prints whether each gradient is finite and how far
it is from eager's.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from cgdistill.device import cpu_name
from cgdistill.nets.generator import ResnetBlock

VARIANTS = {
    "eager": None,
    "inductor (defaults)": {},
    "inductor, cpp.simdlen=256": {"cpp.simdlen": 256},
    "inductor, cpp.threads=1": {"cpp.threads": 1},
    "aot_eager (no code generation)": "aot_eager",
}


class TwoBlocks(nn.Module):
    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.first, self.second = ResnetBlock(channels, norm), ResnetBlock(channels, norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.first(x)
        return h, self.second(h)


def input_gradient(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, out = model(x)
        loss = h.float().pow(2).mean() + out.float().pow(2).mean()
    loss.backward()
    return x.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--norm", default="instance-affine")
    args = parser.parse_args()
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name()}, AVX-512: {avx512}")
    print(f"two residual blocks, {args.channels} channels, {args.norm} norm, input 4x{args.channels}x32x32 bf16")
    torch.manual_seed(0)
    model = TwoBlocks(args.channels, args.norm)
    x = torch.randn(4, args.channels, 32, 32).bfloat16()
    reference = input_gradient(model, x)
    for label, variant in VARIANTS.items():
        torch._dynamo.reset()
        if variant is None:
            grad = reference
        elif isinstance(variant, str):
            grad = input_gradient(torch.compile(model, backend=variant, dynamic=False), x)
        else:
            grad = input_gradient(torch.compile(model, dynamic=False, options=variant), x)
        finite = bool(torch.isfinite(grad).all())
        gap = (grad - reference).abs().max().item() if finite else float("nan")
        print(f"  {label:32s} input gradient finite: {finite!s:5s}  max |difference to eager|: {gap:.3g}")


if __name__ == "__main__":
    main()
