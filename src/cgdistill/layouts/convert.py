"""A recognised generator's tensors in cgdistill's names, computing exactly what the original did.

Where the original stores a tensor our generator does not have, or lacks one ours has, the
conversion keeps the function unchanged:

- a conv without bias before instance norm gets a zero bias (the norm subtracts any per-channel
  constant, so none is lost); an output conv without bias gets a zero one;
- a conv with bias before batch norm (ours has none) folds it into the norm's running mean, which
  eval-mode batch norm subtracts: ``BN(conv(x) + b)`` with mean ``m`` = ``BN(conv(x))`` with mean ``m - b``;
- batch norm without affine parameters gets weight 1 and bias 0;
- instance norm layers that carry running statistics (old files) drop them: instance norm never reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cgdistill.layouts.known import Layout, identify
from cgdistill.layouts.structure import ResnetStructure
from cgdistill.nets import GeneratorConfig, ResnetGenerator


@dataclass
class RecognisedGenerator:
    """A generator found in a file: its structure, the implementation it comes from, our config."""

    structure: ResnetStructure
    layout: Layout
    config: GeneratorConfig
    refusal: str | None  # why cgdistill's generator cannot compute what it computes, if it cannot

    @property
    def notes(self) -> list[str]:
        """What the import assumes or changes, for the user."""
        notes = []
        if self.structure.stale_statistics:
            notes.append("instance-norm running statistics dropped (instance norm never reads them)")
        if self.layout.name == "unrecognised-names":
            notes.append(
                "module names match no known implementation: padding assumed as in the CycleGAN authors' code "
                "(zero-padded stride-2 convs, reflection elsewhere"
                + (", reflection before the convs after each resize)" if self.config.upsample == "resize-conv" else ")")
            )
        return notes


def recognise(structure: ResnetStructure) -> RecognisedGenerator:
    """The layout the names point to and the config that rebuilds the network in cgdistill."""
    layout = identify(structure)
    resize = structure.upsample == "resize-conv"
    config = GeneratorConfig(
        blocks=structure.blocks,
        ngf=structure.ngf,
        norm=structure.norm,
        upsample=structure.upsample,
        in_channels=structure.in_channels,
        out_channels=structure.out_channels,
        down_padding=layout.down_padding,
        up_padding=layout.up_padding if resize else "reflect",
    )
    return RecognisedGenerator(structure, layout, config, layout.refuses(structure))


def _modules_of(generator: nn.Module, kinds: tuple[type, ...]) -> list[str]:
    return [name for name, module in generator.named_modules() if isinstance(module, kinds)]


class DoesNotFit(ValueError):
    """A tensor whose shape the recognised structure does not explain (names the file's key)."""


def to_cgdistill_state(found: RecognisedGenerator) -> dict[str, torch.Tensor]:
    """The state dict that ``ResnetGenerator(found.config)`` loads with ``strict=True``."""
    structure, config = found.structure, found.config
    generator = ResnetGenerator(config)
    reference = generator.state_dict()
    our_convs = _modules_of(generator, (nn.Conv2d, nn.ConvTranspose2d))
    our_norms = _modules_of(generator, (nn.InstanceNorm2d, nn.BatchNorm2d))
    state: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}

    def take(ours: str, layer, name: str) -> torch.Tensor:
        source[ours] = layer.keys[name]
        return layer.tensors[name]

    folded: dict[int, torch.Tensor] = {}
    for index, (ours, theirs) in enumerate(zip(our_convs, structure.convs, strict=True)):
        state[f"{ours}.weight"] = take(f"{ours}.weight", theirs, "weight")
        has_bias = "bias" in theirs.tensors
        if f"{ours}.bias" in reference:
            zero = torch.zeros_like(reference[f"{ours}.bias"])
            state[f"{ours}.bias"] = take(f"{ours}.bias", theirs, "bias") if has_bias else zero
        elif has_bias:
            folded[index] = theirs.tensors["bias"]
    if config.norm == "batch":
        for index, ours in enumerate(our_norms):
            theirs = structure.norms[index]
            ones = torch.ones_like(reference[f"{ours}.running_mean"])
            for name, default in (("weight", ones), ("bias", ones - 1), ("num_batches_tracked", None)):
                if name in theirs.tensors:
                    state[f"{ours}.{name}"] = take(f"{ours}.{name}", theirs, name)
                else:
                    # eval-mode batch norm never reads the counter (files before PyTorch 0.4.1 lack it)
                    state[f"{ours}.{name}"] = default if default is not None else reference[f"{ours}.{name}"]
            mean = take(f"{ours}.running_mean", theirs, "running_mean")
            state[f"{ours}.running_mean"] = mean - folded[index].to(mean.dtype) if index in folded else mean
            state[f"{ours}.running_var"] = take(f"{ours}.running_var", theirs, "running_var")
    elif config.norm == "instance-affine":
        for index, ours in enumerate(our_norms):
            for name in ("weight", "bias"):
                state[f"{ours}.{name}"] = take(f"{ours}.{name}", structure.norms[index], name)
    for key, expected in reference.items():
        if state[key].shape != expected.shape:
            shape = ", ".join(str(s) for s in state[key].shape)
            wanted = ", ".join(str(s) for s in expected.shape)
            raise DoesNotFit(f"'{source.get(key, key)}' has shape ({shape}) where ({wanted}) is expected")
    return {key: state[key].to(expected.dtype).contiguous() for key, expected in reference.items()}
