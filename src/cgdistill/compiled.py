"""A generator compiled for one input shape (``torch.compile``), for long runs of same-sized frames on a CPU.

On a CPU, eager PyTorch runs a small generator far below what the arithmetic costs: between the
convolutions, instance norm on channels-last tensors, padding and the activations each read and
write the whole activation again, and at few channels that memory traffic is most of the time.
Inductor fuses them into a few loops (measured on 2 cores under bf16 at 640x480: ``fastest`` 46.8 ms
eager, 27.4 compiled; ``fast`` 218.6 and 62.5; docs/benchmarks.md). Compiling costs seconds (8-30 s
on 2 cores with a cold cache, less from inductor's on-disk cache), so it pays only for long work of
one shape: a video's frames.

:func:`compile_for` compiles a model for exactly one input shape by running it once; ``engines``
then races it against the eager model on that shape and keeps the faster. A compiled model meets
other shapes (a video's last, shorter batch) in eager mode rather than compiling again. Compilation
needs a C++ compiler: where it fails, the eager model is kept, and the reason says why.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cgdistill.forward import generator_multiple

# Try compiling when the work at eager speed would take this long: a compile on 2 cores took 8-30 s
# (docs/benchmarks.md), so one that turns out no faster costs at most about a third of a run this
# long, and one that halves the time (what it measured for the students) saves more than it cost.
COMPILE_FROM_SECONDS = 60.0
MIN_PASSES = 16  # fewer passes never pay for the compile, whatever each costs


class CompiledForShape(nn.Module):
    """``model`` compiled for inputs of ``shape`` (channels-last on the CPU), eager for any other shape."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...], *, shuffle_outside: bool = True) -> None:
        super().__init__()
        self.eager = model
        self.shape = tuple(shape)
        # Dynamo counts the compilations of one forward function across every instance of its class,
        # and past its limit silently runs eager: each of these compiles one shape of one model, on
        # purpose, so a process that makes several (a benchmark, the tests) must not hit it.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 1024)
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 4096)
        # Its own channels-last copy: inductor's CPU kernels for convolutions and norms run fastest on it,
        # and the eager model (tiles, other shapes) keeps the layout it was timed in.
        body = copy.deepcopy(model).to(memory_format=torch.channels_last)
        self.shuffle_after = shuffle_outside and _drop_closing_shuffle(body)  # False: benchmarks/compile_speed.py
        self.compiled = torch.compile(body, dynamic=False)
        self.config = getattr(model, "config", None)
        self.multiple = generator_multiple(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.shape:
            return self.eager(x)
        # Channels-last out as well (pixel_shuffle keeps it): to_pixels then reads it as the NHWC image with no copy.
        y = self.compiled(x.contiguous(memory_format=torch.channels_last))
        return F.pixel_shuffle(y, 2) if self.shuffle_after else y


def _drop_closing_shuffle(model: nn.Module) -> bool:
    """Take a half-ends generator's closing 2x2 pixel shuffle out of ``model`` (a copy), for the caller to apply.

    Inside the graph, inductor fuses the shuffle with the tanh before it into one loop whose gathered
    reads it cannot vectorise, so it computes a scalar tanh per output value: 13 of 37 ms a frame for
    ``fastest`` at 640x480 in batches of 4 (bf16, 2 cores). Without it, the tanh runs vectorised in the
    graph and the shuffle, a plain copy, takes about 2 ms outside (docs/benchmarks.md).
    """
    for module in model.modules():
        head = getattr(module, "head", None)
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.PixelShuffle) and head[-1].upscale_factor == 2:
            head[-1] = nn.Identity()
            return True
    return False


@dataclass(frozen=True)
class CompileAttempt:
    """A model compiled for one shape (None where the compiler failed), and what it cost or why it failed."""

    model: CompiledForShape | None
    seconds: float
    failure: str = ""


def worth_trying(eager_ms: float, passes: int) -> bool:
    """Whether ``passes`` forward passes at ``eager_ms`` each are long enough work to try compiling for."""
    return passes >= MIN_PASSES and eager_ms * passes / 1000.0 >= COMPILE_FROM_SECONDS


def compiling_pays(ms: dict[str, float], compiled: str, compile_seconds: float, passes: int) -> str:
    """Which runner of a race measured before (``ms``: each one's time a pass) makes ``passes`` passes the
    soonest, counting ``compile_seconds`` against the ``compiled`` one: a clip shorter than the one
    that was measured may not pay for a compile that a longer one did."""
    others = {name: value for name, value in ms.items() if name != compiled}
    best_other = min(others, key=others.get)
    if compiled in ms and compile_seconds + passes * ms[compiled] / 1000.0 < passes * others[best_other] / 1000.0:
        return compiled
    return best_other


def compile_for(model: nn.Module, x: torch.Tensor, *, shuffle_outside: bool = True) -> CompileAttempt:
    """``model`` compiled for ``x``'s shape, compiled now by one call on ``x`` (see the module docstring)."""
    started = time.perf_counter()
    try:
        candidate = CompiledForShape(model, tuple(x.shape), shuffle_outside=shuffle_outside)
        with torch.inference_mode():
            candidate(x)
    except Exception as exc:  # noqa: BLE001 - any failure of the compiler stack leaves the eager model running
        text = str(exc).strip()
        first = text.splitlines()[0][:120] if text else type(exc).__name__
        return CompileAttempt(None, time.perf_counter() - started, f"torch.compile failed: {first}")
    return CompileAttempt(candidate, time.perf_counter() - started)
