"""Networks: the ResNet generator, the PatchGAN discriminator and their initialisation. No I/O."""

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
    "init_weights",
    "unwrap",
]
