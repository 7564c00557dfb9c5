"""Networks: the ResNet generator, the PatchGAN discriminator and their initialisation. No I/O."""

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from cgdistill.nets.discriminator import DiscriminatorConfig, PatchDiscriminator
from cgdistill.nets.generator import (
    BLOCKS,
    NORMS,
    SHARED_PREFIXES,
    UPSAMPLES,
    GeneratorConfig,
    ResnetBlock,
    ResnetGenerator,
    SeparableResnetBlock,
)
from cgdistill.nets.init import init_weights


def unwrap(module):
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Eval mode for a while, then every submodule's own mode back.

    Batch norm then normalises with its running statistics and leaves them as they were: a sample
    grid, a held-out measurement or a probe must not change what the network learned.
    """
    modes = [(sub, sub.training) for module in modules for sub in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training


def count_parameters(module) -> int:
    """Number of parameters (buffers such as batch-norm statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "BLOCKS",
    "NORMS",
    "SHARED_PREFIXES",
    "UPSAMPLES",
    "DiscriminatorConfig",
    "GeneratorConfig",
    "PatchDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "SeparableResnetBlock",
    "count_parameters",
    "evaluating",
    "init_weights",
    "unwrap",
]
