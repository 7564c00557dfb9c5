"""What a set of tensors is, read off their shapes and order, whatever the modules were called.

A CycleGAN ResNet generator is, in any implementation, a 7x7 stem conv (in -> ngf), two 3x3
stride-2 convs (ngf -> 2ngf -> 4ngf), pairs of 3x3 convs at 4ngf (the residual blocks), two
upsamplings (4ngf -> 2ngf -> ngf) and a 7x7 output conv (ngf -> out), each conv but the last
followed by a norm. The upsampling kind shows in the weight shape: a transposed conv stores
``[in, out, 3, 3]`` = ``[4ngf, 2ngf, 3, 3]``, a conv after ``nn.Upsample`` stores ``[out, in, 3, 3]`` =
``[2ngf, 4ngf, 3, 3]``. Where a down conv and a transposed up conv have the same shape, their
position before or after the residual blocks tells them apart. The norm kind shows in what the norm
layers store: nothing (plain instance norm), weight and bias (affine instance norm), running
statistics (batch norm; or stale statistics of old instance-norm files, whose convs keep their
bias). Names serve only to order the tensors (the file's own order, else natural order of the keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cgdistill.layouts.reading import natural_key

RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
NORM_TENSORS = ("weight", "bias", *RUNNING_STATS)


@dataclass
class Layer:
    """The tensors of one module (``model.1`` holds ``model.1.weight`` and ``model.1.bias``)."""

    module: str  # path relative to the network
    tensors: dict[str, torch.Tensor]
    keys: dict[str, str]  # tensor name -> its full key in the file, for messages

    @property
    def weight(self) -> torch.Tensor | None:
        return self.tensors.get("weight")

    @property
    def kind(self) -> str:
        """``conv``, ``linear``, ``norm`` or ``other``."""
        weight = self.weight
        if weight is not None and weight.ndim == 4:
            return "conv"
        if weight is not None and weight.ndim == 2:
            return "linear"
        if all(name in NORM_TENSORS and t.ndim <= 1 for name, t in self.tensors.items()):
            return "norm"
        return "other"

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.weight.shape[2:])  # type: ignore[union-attr,return-value]

    @property
    def pair(self) -> tuple[int, int]:
        """The first two dimensions of a conv weight: (out, in) for a conv, (in, out) for a transposed one."""
        return tuple(self.weight.shape[:2])  # type: ignore[union-attr,return-value]

    @property
    def channels(self) -> int:
        """Channels of a norm layer."""
        return next((t.numel() for name, t in self.tensors.items() if name != "num_batches_tracked"), 0)

    @property
    def label(self) -> str:
        """The module as the file names it."""
        key = next(iter(self.keys.values()))
        return key.rpartition(".")[0] or key

    def parameters(self) -> int:
        return sum(t.numel() for name, t in self.tensors.items() if name not in RUNNING_STATS)


def group_layers(entries: list[tuple[str, torch.Tensor]], prefix: str = "") -> list[Layer]:
    """Tensors grouped by module, in order of first appearance. 0-d tensors outside norms (an
    ``epoch`` counter saved beside the weights) belong to no layer."""
    layers: dict[str, Layer] = {}
    for key, tensor in entries:
        module, _, name = key.rpartition(".")
        if tensor.ndim == 0 and name != "num_batches_tracked":
            continue
        layer = layers.setdefault(module, Layer(module, {}, {}))
        layer.tensors[name] = tensor
        layer.keys[name] = f"{prefix}{key}"
    return list(layers.values())


def parameter_count(layers: list[Layer]) -> int:
    return sum(layer.parameters() for layer in layers)


@dataclass
class ResnetStructure:
    """The layers of a ResNet generator in cgdistill's order, and what their tensors say."""

    convs: list[Layer]  # stem, down 1, down 2, block convs (two per block), up 1, up 2, head
    norms: list[Layer]  # the norm after each conv but the head, same order; empty when they store nothing
    blocks: int
    ngf: int
    in_channels: int
    out_channels: int
    upsample: str  # "deconv" or "resize-conv"
    norm: str  # "instance", "instance-affine" or "batch"
    stale_statistics: bool  # instance norm layers that carry running statistics it never reads

    @property
    def stem(self) -> Layer:
        return self.convs[0]

    @property
    def head(self) -> Layer:
        return self.convs[-1]

    @property
    def block_convs(self) -> list[Layer]:
        return self.convs[3:-3]


class NotResnet(Exception):
    """The tensors do not form a ResNet generator; the message says why, as a clause."""


def _shape(layer: Layer) -> str:
    return "(" + ", ".join(str(s) for s in layer.weight.shape) + ")"  # type: ignore[union-attr]


def _assign_convs(layers: list[Layer]) -> tuple[list[Layer], str]:
    """The convs in cgdistill's order and the upsampling kind, from shapes and positions."""
    strange = [layer for layer in layers if layer.kind in ("linear", "other")]
    if strange:
        layer = strange[0]
        what = "a fully connected layer" if layer.kind == "linear" else "neither a conv nor a norm layer"
        raise NotResnet(f"'{layer.label}' is {what}")
    convs = [layer for layer in layers if layer.kind == "conv"]
    if not convs:
        raise NotResnet("it has no conv layers")
    wide = [c for c in convs if c.kernel == (7, 7)]
    if len(wide) != 2:
        raise NotResnet(f"it has {len(wide)} 7x7 convs where the generator has 2 (the stem and the output conv)")

    # The stem gives ngf channels, the output conv reads them, and the blocks run at 4 * ngf; with
    # 3 channels in and out both orders connect, and the blocks' width decides.
    def fits(stem: Layer, head: Layer) -> tuple[bool, bool]:
        width = 4 * stem.pair[0]
        return stem.pair[0] == head.pair[1], any(c.kernel == (3, 3) and c.pair == (width, width) for c in convs)

    stem, head = max((tuple(wide), tuple(wide[::-1])), key=lambda pair: fits(*pair))
    ngf = stem.pair[0]
    if head.pair[1] != ngf:
        raise NotResnet(
            f"its 7x7 convs do not fit together ('{stem.label}' gives {ngf} channels, '{head.label}' reads "
            f"{head.pair[1]})"
        )
    middle = [c for c in convs if c is not stem and c is not head]
    odd = next((c for c in middle if c.kernel != (3, 3)), None)
    if odd is not None:
        size = "x".join(str(k) for k in odd.kernel)
        raise NotResnet(
            f"'{odd.label}' is a {size} conv where the generator has only 3x3 convs between stem and output"
        )
    width = 4 * ngf
    square = [c for c in middle if c.pair == (width, width)]
    if not square:
        raise NotResnet(f"it has no residual blocks (no 3x3 convs at 4 x {ngf} = {width} channels)")
    if len(square) % 2:
        raise NotResnet(f"its {len(square)} 3x3 convs at {width} channels do not pair up into residual blocks")
    _check_blocks_hold_two_convs(square)
    rest = [c for c in middle if c.pair != (width, width)]
    try:
        down, up, upsample = _split_by_position(layers, square, rest, ngf)
    except NotResnet as by_position:
        # Files that keep no order (safetensors) may sort the up convs before the blocks; a conv's
        # bias length is its output width, which tells a stride-2 conv from a transposed one.
        split = _split_by_bias(rest, ngf)
        if split is None:
            raise by_position from None
        down, up, upsample = split
    return [stem, *down, *square, *up, head], upsample


def _common_prefix(a: list[str], b: list[str]) -> list[str]:
    prefix = []
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        prefix.append(x)
    return prefix


def _check_blocks_hold_two_convs(square: list[Layer]) -> None:
    """Where names group the block convs (``res_blocks.3.block...``), each group must hold two."""
    paths = [conv.module.split(".") for conv in square]
    shared = paths[0]
    for path in paths[1:]:
        shared = _common_prefix(shared, path)
    for first, second in zip(paths[::2], paths[1::2], strict=True):
        block = _common_prefix(first, second)
        if len(block) > len(shared):
            members = sum(1 for path in paths if path[: len(block)] == block)
            if members != 2:
                width = square[0].pair[0]
                raise NotResnet(
                    f"'{'.'.join(block)}' holds {members} 3x3 convs at {width} channels where a residual block has 2"
                )


def _split_by_position(
    layers: list[Layer], square: list[Layer], rest: list[Layer], ngf: int
) -> tuple[list[Layer], list[Layer], str]:
    """Stride-2 convs come before the residual blocks, upsampling convs after them."""
    width = 4 * ngf
    position = {id(layer): i for i, layer in enumerate(layers)}
    first, last = position[id(square[0])], position[id(square[-1])]
    inside = [c for c in rest if first < position[id(c)] < last]
    if inside:
        raise NotResnet(f"'{inside[0].label}' {_shape(inside[0])} sits among the residual blocks")
    down = [c for c in rest if position[id(c)] < first]
    up = [c for c in rest if position[id(c)] > last]
    if [c.pair for c in down] != [(2 * ngf, ngf), (width, 2 * ngf)]:
        found = ", ".join(f"'{c.label}' {_shape(c)}" for c in down) or "none"
        raise NotResnet(
            f"before its residual blocks it has {found} where the generator has two stride-2 convs "
            f"({ngf} -> {2 * ngf} -> {width} channels)"
        )
    return down, up, _upsample_kind(up, ngf)


def _upsample_kind(up: list[Layer], ngf: int) -> str:
    pairs = [c.pair for c in up]
    if pairs == [(4 * ngf, 2 * ngf), (2 * ngf, ngf)]:
        return "deconv"
    if pairs == [(2 * ngf, 4 * ngf), (ngf, 2 * ngf)]:
        return "resize-conv"
    found = ", ".join(f"'{c.label}' {_shape(c)}" for c in up) or "none"
    raise NotResnet(
        f"after its residual blocks it has {found} where the generator has two upsampling convs "
        f"({4 * ngf} -> {2 * ngf} -> {ngf} channels)"
    )


def _split_by_bias(rest: list[Layer], ngf: int) -> tuple[list[Layer], list[Layer], str] | None:
    """Roles from shapes and bias lengths alone; None where they leave a doubt."""
    roles: dict[str, Layer] = {}
    for conv in rest:
        bias = conv.tensors.get("bias")
        out = bias.numel() if bias is not None else None
        a, b = conv.pair
        if (a, b) == (2 * ngf, ngf):
            role = {2 * ngf: "down1", ngf: "up2"}.get(out)  # type: ignore[call-overload]
        elif (a, b) == (4 * ngf, 2 * ngf):
            role = {4 * ngf: "down2", 2 * ngf: "up1"}.get(out)  # type: ignore[call-overload]
        else:
            role = {(2 * ngf, 4 * ngf): "up1", (ngf, 2 * ngf): "up2"}.get((a, b))
        if role is None or role in roles:
            return None
        roles[role] = conv
    if sorted(roles) != ["down1", "down2", "up1", "up2"]:
        return None
    up = [roles["up1"], roles["up2"]]
    try:
        return [roles["down1"], roles["down2"]], up, _upsample_kind(up, ngf)
    except NotResnet:
        return None


def _assign_norms(layers: list[Layer], convs: list[Layer], structure_out: list[int]) -> list[Layer]:
    """The norm layer of each conv but the head: the k-th norm in order goes with the k-th conv."""
    norms = [layer for layer in layers if layer.kind == "norm"]
    if not norms:
        return []
    head = convs[-1]
    in_order = [layer for layer in layers if layer.kind == "conv" and layer is not head]
    out_of = {id(conv): channels for conv, channels in zip(convs, structure_out, strict=True)}
    for k, norm in enumerate(norms):
        if k >= len(in_order):
            raise NotResnet(f"norm layer '{norm.label}' follows no conv (it has more norm layers than convs)")
        if norm.channels != out_of[id(in_order[k])]:
            raise NotResnet(
                f"norm layer '{norm.label}' has {norm.channels} channels where the conv it follows, "
                f"'{in_order[k].label}', gives {out_of[id(in_order[k])]}"
            )
    if len(norms) != len(in_order):
        named = ", ".join(f"'{n.label}'" for n in norms[:3]) + (", ..." if len(norms) > 3 else "")
        raise NotResnet(f"it has {len(norms)} norm layer(s) ({named}) for {len(in_order)} convs that each take one")
    by_conv = {id(conv): norm for conv, norm in zip(in_order, norms, strict=True)}
    return [by_conv[id(conv)] for conv in convs[:-1]]


def _norm_kind(norms: list[Layer], stem: Layer) -> tuple[str, bool]:
    """The norm kind, and whether its layers carry statistics that instance norm ignores."""
    if not norms:
        return "instance", False
    contents = {frozenset(name for name in n.tensors if name != "num_batches_tracked") for n in norms}
    if len(contents) > 1:
        raise NotResnet("its norm layers differ in what they store (some affine or with statistics, some not)")
    stored = next(iter(contents))
    affine = "weight" in stored
    if affine != ("bias" in stored):
        raise NotResnet("its norm layers store a weight without a bias, or a bias without a weight")
    if ("running_mean" in stored) != ("running_var" in stored):
        raise NotResnet("its norm layers store only one of running_mean and running_var")
    statistics = "running_mean" in stored
    if statistics and "bias" not in stem.tensors:
        return "batch", False
    return ("instance-affine" if affine else "instance"), statistics


def _structure_in(layers: list[Layer]) -> ResnetStructure:
    convs, upsample = _assign_convs(layers)
    transposed = upsample == "deconv"
    n = len(convs)
    out = [c.pair[1] if transposed and i in (n - 3, n - 2) else c.pair[0] for i, c in enumerate(convs)]
    norms = _assign_norms(layers, convs, out)
    norm, stale = _norm_kind(norms, convs[0])
    ngf = convs[0].pair[0]
    return ResnetStructure(
        convs=convs,
        norms=norms,
        blocks=(n - 6) // 2,
        ngf=ngf,
        in_channels=convs[0].pair[1],
        out_channels=convs[-1].pair[0],
        upsample=upsample,
        norm=norm,
        stale_statistics=stale,
    )


def resnet_structure(layers: list[Layer]) -> ResnetStructure:
    """The generator these layers form, in the file's order or else in natural key order.

    Raises ``NotResnet`` with the reason found in the file's own order.
    """
    try:
        return _structure_in(layers)
    except NotResnet as first:
        reordered = sorted(layers, key=lambda layer: natural_key(layer.module))
        if reordered == layers:
            raise
        try:
            return _structure_in(reordered)
        except NotResnet:
            raise first from None


def _chain(convs: list[Layer]) -> tuple[bool, int]:
    """Whether each conv reads what the previous one gives (either weight orientation), and how many
    read twice that (concatenated skip connections)."""
    previous = convs[0].pair[0]
    skips = 0
    for conv in convs[1:]:
        a, b = conv.pair
        if b == previous:
            previous = a
        elif a == previous:
            previous = b
        elif b == 2 * previous:
            previous, skips = a, skips + 1
        elif a == 2 * previous:
            previous, skips = b, skips + 1
        else:
            return False, skips
    return True, skips


def describe_other(layers: list[Layer], reason: str) -> tuple[str, str, str]:
    """(kind, short name, one clause saying what it is) for layers that are no ResNet generator."""
    linear = next((layer for layer in layers if layer.kind == "linear"), None)
    convs = [layer for layer in layers if layer.kind == "conv"]
    if linear is not None:
        rows, cols = linear.weight.shape  # type: ignore[union-attr]
        return (
            "other",
            "fully connected network",
            (
                f"fully connected layers ('{linear.label}' is {rows}x{cols}): a classifier or another network "
                "that is not an image-to-image generator"
            ),
        )
    if len(convs) >= 2:
        for ordered in (convs, sorted(convs, key=lambda c: natural_key(c.module))):
            chained, skips = _chain(ordered)
            if chained and skips:
                return (
                    "other",
                    "U-Net generator",
                    (
                        f"{len(convs)} convs whose decoder reads concatenated encoder features (skip connections): "
                        "a U-Net generator, which cgdistill does not distill"
                    ),
                )
            widths = [c.pair[0] for c in ordered[:-1]]
            widening = all(a <= b for a, b in zip(widths, widths[1:], strict=False))
            if chained and widening and ordered[-1].pair[0] == 1 and ordered[0].pair[1] <= 4:
                kind = "PatchGAN discriminator" if {c.kernel for c in ordered} == {(4, 4)} else "discriminator"
                return (
                    "discriminator",
                    kind,
                    (
                        f"a {kind}: {len(convs)} convs from {ordered[0].pair[1]} image channels to a 1-channel score "
                        f"map, ndf {ordered[0].pair[0]}"
                    ),
                )
    return "other", "unrecognised layers", f"layers that do not form a CycleGAN ResNet generator ({reason})"
