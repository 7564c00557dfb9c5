"""Narrow students that start from the teacher: copy its most important channels into a thinner copy.

A student with ``ngf_s < ngf_t`` keeps, at every layer boundary, the ``k`` teacher channels that
matter most, and takes the teacher's weights restricted to them (output rows of the kept channels,
input columns of the channels kept upstream). The trunk (the 4*ngf channels the residual blocks add
to) is one subset shared by the downsampling output, every block's output and the upsampling input,
because the skip connections add those tensors channel by channel.

Ranking measure: how strongly the next layer reads a channel, ``|gamma_c| * sum |W_next[:, c]|``
(the L1 norm of the consumer's input slice, times the norm's scale where it has one). Every conv
here is followed by a normalisation, which divides a filter's own scale away, so the L1 norm of a
channel's filter (Li et al., 2017) says nothing about its effect; what survives the norm is the
weight with which later layers use the channel. The measure needs no data and is deterministic, and
a channel no later layer reads scores zero, which is exactly a channel the student can drop without
changing the teacher's function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cgdistill.nets import ResnetBlock, ResnetGenerator

ConvLike = nn.Conv2d | nn.ConvTranspose2d
Norm = nn.InstanceNorm2d | nn.BatchNorm2d


@dataclass
class ChannelSelection:
    """Teacher channel indices kept at each boundary of a narrower student, ascending."""

    stem: torch.Tensor  # ngf_s of ngf_t
    down: torch.Tensor  # 2*ngf_s of 2*ngf_t
    trunk: torch.Tensor  # 4*ngf_s of 4*ngf_t, shared by every residual connection
    up0: torch.Tensor  # 2*ngf_s of 2*ngf_t
    up1: torch.Tensor  # ngf_s of ngf_t
    inner: list[torch.Tensor]  # per teacher block (standard blocks only): 4*ngf_s of its hidden 4*ngf_t


def _stage_conv(stage: nn.Sequential) -> tuple[ConvLike, Norm]:
    """The conv of an upsampling stage (deconv or resize-conv) and the norm after it."""
    layers = list(stage)
    index = next(i for i, m in enumerate(layers) if isinstance(m, ConvLike))
    return layers[index], layers[index + 1]


def _reads(conv: ConvLike) -> torch.Tensor:
    """Per input channel, the L1 norm of the weights with which ``conv`` reads it."""
    weight = conv.weight.detach().abs()
    if isinstance(conv, nn.ConvTranspose2d):  # weight is in x out x k x k
        return weight.sum(dim=(1, 2, 3))
    if conv.groups == conv.in_channels and conv.groups > 1:  # depthwise: channel c reads only itself
        return weight.sum(dim=(1, 2, 3))
    return weight.sum(dim=(0, 2, 3))


def _scale(norm: nn.Module) -> torch.Tensor | float:
    weight = getattr(norm, "weight", None)
    return weight.detach().abs() if weight is not None else 1.0


def channel_scores(teacher: ResnetGenerator) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """Importance of every channel at every boundary of ``teacher`` (see the module docstring)."""
    up0_conv, up0_norm = _stage_conv(teacher.up[0])
    up1_conv, up1_norm = _stage_conv(teacher.up[1])
    # The trunk is read by the first conv of every block and by the first upsampling.
    trunk = _reads(up0_conv).clone()
    inner = []
    for block in teacher.blocks:
        trunk += _reads(block.conv[1])
        if isinstance(block, ResnetBlock):
            inner.append(_reads(block.conv[5]) * _scale(block.conv[2]))
    return {
        "stem": _reads(teacher.down[0]) * _scale(teacher.stem[2]),
        "down": _reads(teacher.down[3]) * _scale(teacher.down[1]),
        "trunk": trunk,
        "up0": _reads(up1_conv) * _scale(up0_norm),
        "up1": _reads(teacher.head[1]) * _scale(up1_norm),
        "inner": inner,
    }


def top_channels(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` highest scores (ties: the lower index), in ascending order."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return torch.tensor(sorted(order[:keep]), dtype=torch.long)


def select_channels(teacher: ResnetGenerator, student_ngf: int) -> ChannelSelection:
    """The channels a student ``student_ngf`` wide keeps at each boundary of ``teacher``."""
    if student_ngf > teacher.config.ngf:
        raise ValueError(
            f"a student of width {student_ngf} cannot keep channels of a teacher of width {teacher.config.ngf}"
        )
    scores = channel_scores(teacher)
    n = student_ngf
    return ChannelSelection(
        stem=top_channels(scores["stem"], n),
        down=top_channels(scores["down"], 2 * n),
        trunk=top_channels(scores["trunk"], 4 * n),
        up0=top_channels(scores["up0"], 2 * n),
        up1=top_channels(scores["up1"], n),
        inner=[top_channels(s, 4 * n) for s in scores["inner"]],
    )


@torch.no_grad()
def _copy_conv(dst: ConvLike, src: ConvLike, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> None:
    """``dst`` takes ``src``'s weights restricted to the kept output and input channels (None: all)."""
    weight = src.weight
    if isinstance(src, nn.ConvTranspose2d):
        weight = weight.transpose(0, 1)  # to out x in, like a conv
    if out_idx is not None:
        weight = weight.index_select(0, out_idx)
    if in_idx is not None and src.groups == 1:
        weight = weight.index_select(1, in_idx)
    if isinstance(src, nn.ConvTranspose2d):
        weight = weight.transpose(0, 1)
    dst.weight.copy_(weight)
    if src.bias is not None and dst.bias is not None:
        dst.bias.copy_(src.bias if out_idx is None else src.bias.index_select(0, out_idx))


@torch.no_grad()
def _copy_norm(dst: nn.Module, src: nn.Module, idx: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        source, target = getattr(src, name, None), getattr(dst, name, None)
        if source is not None and target is not None:
            target.copy_(source.index_select(0, idx))


def copy_narrow(
    student: ResnetGenerator,
    teacher: ResnetGenerator,
    selection: ChannelSelection,
    block_map: list[int],
    *,
    copy_blocks: bool = True,
) -> int:
    """Copy the kept channels into ``student``'s stem, down, up and head (with half-resolution ends:
    the inner downsampling and upsampling only), and (with ``copy_blocks``)
    into its blocks when both are standard (student block i from teacher block ``block_map[i]``,
    the one it imitates).

    Returns the number of residual blocks copied.
    """
    sel = selection
    if student.config.ends == "full":
        _copy_conv(student.stem[1], teacher.stem[1], sel.stem, None)
        _copy_norm(student.stem[2], teacher.stem[2], sel.stem)
        _copy_conv(student.down[0], teacher.down[0], sel.down, sel.stem)
        _copy_norm(student.down[1], teacher.down[1], sel.down)
        inner_down, up_pairs = (student.down[3], student.down[4]), ((sel.up0, sel.trunk), (sel.up1, sel.up0))
    else:  # half-resolution ends: the stem and head read and write pixel blocks, no teacher layer does
        inner_down, up_pairs = (student.down[0], student.down[1]), ((sel.up0, sel.trunk),)
    _copy_conv(inner_down[0], teacher.down[3], sel.trunk, sel.down)
    _copy_norm(inner_down[1], teacher.down[4], sel.trunk)
    stages = zip(student.up, teacher.up[: len(student.up)], strict=True)
    for (s_stage, t_stage), (out_idx, in_idx) in zip(stages, up_pairs, strict=True):
        (s_conv, s_norm), (t_conv, t_norm) = _stage_conv(s_stage), _stage_conv(t_stage)
        _copy_conv(s_conv, t_conv, out_idx, in_idx)
        _copy_norm(s_norm, t_norm, out_idx)
    if student.config.ends == "full":
        _copy_conv(student.head[1], teacher.head[1], None, sel.up1)
    if not copy_blocks:
        return 0
    copied = 0
    for s_block, j in zip(student.blocks, block_map, strict=True):
        t_block = teacher.blocks[j]
        if not (isinstance(s_block, ResnetBlock) and isinstance(t_block, ResnetBlock)):
            continue
        inner = sel.inner[j]
        _copy_conv(s_block.conv[1], t_block.conv[1], inner, sel.trunk)
        _copy_norm(s_block.conv[2], t_block.conv[2], inner)
        _copy_conv(s_block.conv[5], t_block.conv[5], sel.trunk, inner)
        _copy_norm(s_block.conv[6], t_block.conv[6], sel.trunk)
        copied += 1
    return copied


@torch.no_grad()
def embed_adapters(adapters: nn.ModuleList, trunk: torch.Tensor) -> None:
    """Start each 1x1 feature adapter as the embedding of the kept trunk channels at their teacher positions."""
    for conv in adapters:
        conv.weight.zero_()
        conv.weight[trunk, torch.arange(len(trunk)), 0, 0] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()


def narrow_init(
    student: ResnetGenerator,
    adapters: nn.ModuleList,
    teacher: ResnetGenerator,
    block_map: list[int],
    *,
    copy_blocks: bool = True,
) -> str:
    """Initialise a narrower ``student`` (and its feature adapters) from ``teacher``; returns a note for the user.

    Without ``copy_blocks`` (``--init copy-outer``) only the outer layers are copied.
    """
    selection = select_channels(teacher, student.config.ngf)
    copied = copy_narrow(student, teacher, selection, block_map, copy_blocks=copy_blocks)
    if all(isinstance(conv, nn.Conv2d) for conv in adapters):
        embed_adapters(adapters, selection.trunk)
    layers = (
        "stem, downsampling, upsampling and output layers"
        if student.config.ends == "full"
        else "inner downsampling and upsampling (the half-resolution stem and head start fresh)"
    )
    blocks = (
        f" and {copied} residual blocks (from teacher blocks {[j + 1 for j in block_map]})"
        if copied
        else "; the residual blocks start fresh"
    )
    return (
        f"Copied the teacher's {student.config.ngf} of {teacher.config.ngf} most-read channels per layer into the "
        f"{layers}{blocks}."
    )
