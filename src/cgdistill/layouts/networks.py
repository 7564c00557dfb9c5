"""The networks in a weights file: one generator, or several under names (``G_AB``, ``netG_A``, ...).

A file may hold one state dict, a dict of state dicts (``{"G_AB": ..., "D_A": ...}``), a Lightning
checkpoint whose one state dict prefixes every key with the network's attribute name
(``G_AB.model.1.weight``), or any nesting of these. The search walks the tree of key segments from
the top: a subtree whose tensors form a network is one; otherwise its children are searched. Names
serve to tell networks apart and, where they say so, which way a generator maps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from cgdistill.layouts.convert import RecognisedGenerator, recognise
from cgdistill.layouts.structure import (
    Layer,
    NotResnet,
    describe_other,
    group_layers,
    parameter_count,
    resnet_structure,
)
from cgdistill.nets import GeneratorConfig

WHOLE_FILE = "(the whole file)"
_PADDING_WORD = {"zeros": "zero", "reflect": "reflection"}

_DIRECTION_NAME = re.compile(
    r"(?:net_?)?(?:g|gen|generator)_?(?P<d>a2b|ab|a_?to_?b|x2y|xy|x_?to_?y|b2a|ba|b_?to_?a|y2x|yx|y_?to_?x)",
    re.IGNORECASE,
)
"""``G_AB``, ``gen_BA``, ``netG_A2B``, ``G_XtoY`` (the paper's G: X -> Y is A -> B)."""
_AUTHORS_NAME = re.compile(r"net_?g_?(?P<d>a|b)", re.IGNORECASE)
"""The CycleGAN authors' ``netG_A`` maps A to B and ``netG_B`` B to A."""


@dataclass
class Network:
    """One network found in a file."""

    path: str  # dotted key prefix in the file; "" when the whole file is one network
    kind: str  # "generator", "discriminator" or "other"
    what: str  # a short name: "ResNet generator", "PatchGAN discriminator", "U-Net generator", ...
    summary: str  # what it is, in a clause
    parameters: int
    tensors: int
    generator: RecognisedGenerator | None = None

    @property
    def label(self) -> str:
        return self.path or WHOLE_FILE

    @property
    def direction(self) -> str | None:
        """A2B or B2A when the name says so (``G_AB``, ``G_B2A``, ``netG_A``), else None."""
        return direction_in_name(self.path)


def direction_in_name(path: str) -> str | None:
    last = path.rsplit(".", 1)[-1]
    match = _DIRECTION_NAME.fullmatch(last)
    if match:
        return "A2B" if match.group("d").lower()[0] in "ax" else "B2A"
    match = _AUTHORS_NAME.fullmatch(last)
    if match:
        return "A2B" if match.group("d").lower() == "a" else "B2A"
    return None


def _classify(layers: list[Layer], path: str, tensors: int) -> Network:
    count = parameter_count(layers)
    try:
        structure = resnet_structure(layers)
    except NotResnet as reason:
        kind, what, summary = describe_other(layers, str(reason))
        return Network(path, kind, what, summary, count, tensors)
    found = recognise(structure)
    cfg = found.config
    defaults = GeneratorConfig()
    padding = "".join(
        f", {what}"
        for changed, what in (
            (cfg.down_padding != defaults.down_padding, f"{_PADDING_WORD[cfg.down_padding]}-padded stride-2 convs"),
            (cfg.up_padding != defaults.up_padding, f"{_PADDING_WORD[cfg.up_padding]}-padded convs after each resize"),
        )
        if changed
    )
    summary = (
        f"a ResNet generator ({found.layout.title}): {cfg.blocks} blocks, ngf {cfg.ngf}, {cfg.norm} norm, "
        f"{cfg.upsample} upsampling{padding}, {cfg.in_channels} -> {cfg.out_channels} channels"
    )
    return Network(path, "generator", "ResNet generator", summary, count, tensors, found)


def find_networks(entries: list[tuple[str, torch.Tensor]], path: str = "") -> list[Network]:
    """The networks under ``path`` (keys in ``entries`` are relative to it), largest first found."""
    prefix = f"{path}." if path else ""
    network = _classify(group_layers(entries, prefix), path, len(entries))
    if network.kind == "generator":
        return [_narrowed(network, entries, path)]
    children: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for key, tensor in entries:
        head, dot, rest = key.partition(".")
        if dot:
            children.setdefault(head, []).append((rest, tensor))
    found: list[Network] = []
    for head, sub in children.items():
        if len(sub) > 1:
            found += find_networks(sub, f"{prefix}{head}")
    # Several networks side by side can pass for one discriminator (3-channel outputs feed 3-channel
    # inputs): generators found below win; else what this level is, if anything.
    if any(n.kind == "generator" for n in found) or (network.kind == "other" and any(n.kind != "other" for n in found)):
        return found
    return [network]


def _narrowed(network: Network, entries: list[tuple[str, torch.Tensor]], path: str) -> Network:
    """The same generator under its most specific name: ``{"G_BA": {...}}`` is ``G_BA``, not the whole
    file; descending stops where the names would no longer identify the layout (``model.1`` -> ``1``)."""
    while True:
        heads = {key.partition(".")[0] for key, _ in entries}
        if len(heads) != 1 or any("." not in key for key, _ in entries):
            return network
        head = heads.pop()
        sub = [(key.partition(".")[2], tensor) for key, tensor in entries]
        sub_path = f"{path}.{head}" if path else head
        candidate = _classify(group_layers(sub, f"{sub_path}."), sub_path, len(sub))
        if candidate.generator is None or candidate.generator.layout != network.generator.layout:  # type: ignore[union-attr]
            return network
        network, entries, path = candidate, sub, sub_path


def matching(networks: list[Network], key: str) -> list[Network]:
    """Networks named ``key``: the full path, or its last segments (``G_AB`` finds ``state_dict.G_AB``)."""
    exact = [n for n in networks if n.path == key]
    if exact:
        return exact
    return [n for n in networks if n.path.endswith(f".{key}")]
