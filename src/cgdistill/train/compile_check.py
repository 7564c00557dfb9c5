"""A compiled run's first step, checked: a miscompiled step costs one retry, not the run.

torch 2.14's inductor can compile a correct model into wrong code. On a 2-core Sapphire Rapids Xeon
(AVX-512 with bf16), two chained residual blocks with affine instance norm at 256 channels, compiled
under bf16 autocast, get NaN input gradients from finite inputs where eager PyTorch does not: one
fused backward kernel (reflection-pad backward, the residual add and instance-norm backward) goes
wrong with 512-bit vectors on two threads, and is right with 256-bit vectors (``cpp.simdlen=256``) or
one thread. The default student of an affine teacher is such a model: its first compiled step turned
every weight NaN. ``benchmarks/compile_check.py`` shows whether a machine's torch has the fault.

Whatever the fault, it shows at once: after the first step a weight or loss is not finite. So the
first step of a compiled ``fit`` is kept only if every trained weight and every loss is finite;
otherwise the recipe goes back to where it stood before the step and the run goes on without the
compiler (a step that diverges without it too is a divergence, and the loop reports it as one).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from cgdistill.processes import gather


@dataclass
class _Saved:
    """What a training step changes: the recipe's weights, optimizer states and image pools, and the
    grad scalers (fp16)."""

    modules: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, dict[str, Any]]
    pools: dict[str, Any]
    scalers: dict[str, dict[str, Any]]


def save(recipe, scalers: dict[str, torch.amp.GradScaler]) -> _Saved:
    """A copy of everything ``recipe.train_step`` changes, ``scalers`` included."""
    return _Saved(
        modules={name: copy.deepcopy(module.state_dict()) for name, module in recipe.modules.items()},
        optimizers={name: copy.deepcopy(optimizer.state_dict()) for name, optimizer in recipe.optimizers.items()},
        pools=copy.deepcopy(recipe.pools),
        scalers={name: copy.deepcopy(scaler.state_dict()) for name, scaler in scalers.items()},
    )


def restore(recipe, scalers: dict[str, torch.amp.GradScaler], saved: _Saved) -> None:
    """Put ``recipe`` and ``scalers`` back as :func:`save` found them."""
    for name, module in recipe.modules.items():
        module.load_state_dict(saved.modules[name])
    for name, optimizer in recipe.optimizers.items():
        optimizer.load_state_dict(saved.optimizers[name])
    recipe.pools.clear()
    recipe.pools.update(saved.pools)
    recipe.discard_caches()  # e.g. teacher outputs the compiled step computed
    for name, scaler in scalers.items():
        scaler.load_state_dict(saved.scalers[name])


def all_finite(recipe, losses: dict[str, torch.Tensor]) -> bool:
    """Whether every loss and every weight of ``recipe`` is finite (on every rank)."""
    tensors = [*losses.values()]
    tensors += [p for module in recipe.modules.values() for p in module.parameters()]
    finite = all(bool(torch.isfinite(t).all()) for t in tensors)
    return all(gather(finite))


MESSAGE = (
    "The compiled first step left non-finite weights or losses (torch.compile miscompiles some models on "
    "some CPUs: docs/distillation.md): the step was undone, and it and the rest of the run go on without "
    "torch.compile."
)


def checked_first_step(
    recipe, scalers: dict[str, torch.amp.GradScaler], batch: dict[str, torch.Tensor], say
) -> tuple[dict[str, torch.Tensor], bool]:
    """``recipe.train_step(batch)``, compiled; if it left anything non-finite, undone and run again eager.

    Returns the step's losses and whether the run is to go on eager (the caller keeps the compiled
    modules in ``torch.compiler.set_stance("force_eager")`` from then on); ``say`` tells the user.
    """
    saved = save(recipe, scalers)
    losses = recipe.train_step(batch)
    if all_finite(recipe, losses):
        return losses, False
    restore(recipe, scalers, saved)
    say(MESSAGE)
    with torch.compiler.set_stance("force_eager"):
        return recipe.train_step(batch), True
