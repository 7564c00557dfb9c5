"""The student: its shape from the config, its start from the teacher, and the teacher blocks it follows.

``build_student`` is the second hop from the command line: ``--blocks``, ``--ngf`` and ``--block``
are ``DistillConfig`` fields (train/config.py), and it builds the student generator from them,
starting its layers from the teacher's where ``--init`` says (narrow students: train/student_init.py).
Student block i of n is matched to teacher block round((i+1)*N/n) by the feature loss
(``imitated_blocks``); ``--init copy`` starts it from other blocks (``copied_blocks`` says why).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from cgdistill.nets import SHARED_PREFIXES, ResnetGenerator, evaluating, init_weights, unwrap
from cgdistill.train.config import DistillConfig
from cgdistill.train.student_init import narrow_init


def imitated_blocks(student_blocks: int, teacher_blocks: int) -> list[int]:
    """0-based teacher block whose output each student block's output is matched to by the feature loss.

    Student block i of n stands for the i-th of n equal groups of teacher blocks, so it imitates the
    output where that group ends: teacher block round((i+1)*N/n), counted from 1 (3 of 9: 3, 6, 9,
    returned 0-based as [2, 5, 8]); the last student block always imitates the last teacher block.
    """
    return [int(math.floor((i + 1) * teacher_blocks / student_blocks + 0.5)) - 1 for i in range(student_blocks)]


def copied_blocks(student_blocks: int, teacher_blocks: int, *, same_width: bool) -> list[int]:
    """0-based teacher blocks whose weights the student's blocks start from (``--init copy``).

    A different question from ``imitated_blocks``: which copy starts closest to the teacher. At the
    teacher's width, evenly spaced blocks with the first and the last (3 of 9: blocks 1, 5, 9, returned
    0-based as [0, 4, 8]): a residual trunk with blocks left out then still computes nearly what the
    whole one does, so this copy starts closer to the teacher than the blocks the student imitates. A
    narrower student's channel-selected copy starts about as far from the teacher whichever blocks it
    takes, so it copies the blocks it imitates. The measurements behind both: docs/distillation.md
    ("Which teacher blocks").
    """
    if not same_width:
        return imitated_blocks(student_blocks, teacher_blocks)
    if student_blocks == 1:
        return [teacher_blocks // 2]
    return [round(i * (teacher_blocks - 1) / (student_blocks - 1)) for i in range(student_blocks)]


class Adapters(nn.Module):
    """1x1 convs that lift student features to the teacher's width (identity where widths match)."""

    def __init__(self, student_channels: int, teacher_channels: int, count: int) -> None:
        super().__init__()
        self.needed = student_channels != teacher_channels
        self.convs = nn.ModuleList(
            nn.Conv2d(student_channels, teacher_channels, 1) if self.needed else nn.Identity() for _ in range(count)
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.convs, features, strict=True)]


class Student(nn.Module):
    """The student generator and its feature adapters, one module so DDP syncs both."""

    def __init__(self, generator: ResnetGenerator, adapters: Adapters, shares_encoder: bool = False) -> None:
        super().__init__()
        self.generator, self.adapters = generator, adapters
        # The stem and downsampling are the teacher's, frozen (--freeze-encoder): a step passes the
        # teacher's encoder output in (``encoded``) instead of computing the same tensor twice.
        self.shares_encoder = shares_encoder

    def forward(self, x: torch.Tensor, return_features: bool = False, encoded: bool = False):
        if not return_features:
            return self.generator(x, encoded=encoded)
        out, features = self.generator(x, return_features=True, encoded=encoded)
        return out, self.adapters(features)


def _copy_blocks(generator: ResnetGenerator, teacher: ResnetGenerator, chosen: list[int]) -> None:
    for student_block, teacher_block in zip(generator.blocks, (teacher.blocks[j] for j in chosen), strict=True):
        student_block.load_state_dict(teacher_block.state_dict())


def build_student(config: DistillConfig, teacher: ResnetGenerator, seed: torch.Generator) -> tuple[Student, list[str]]:
    """The student and notes for the user on how it was initialised.

    Its shape is ``config.blocks``, ``config.ngf`` and ``config.block``: the ``--blocks``, ``--ngf``
    and ``--block`` flags, which are those fields of ``DistillConfig`` (train/config.py).
    """
    t_cfg = teacher.config
    ngf = config.ngf or t_cfg.ngf
    # Everything but depth, width and block kind comes from the teacher (norm, upsampling, padding,
    # channels), so copied layers compute what they computed in the teacher.
    s_cfg = replace(t_cfg, blocks=config.blocks, ngf=ngf, block=config.block, ends=config.ends)
    generator = ResnetGenerator(s_cfg)
    init_weights(generator, generator=seed)
    # Adapters serve the feature loss only: without it, their weights would get no gradient (which
    # also breaks DDP's gradient reduction), so the student's features pass through unchanged.
    width, teacher_width = generator.feature_channels, teacher.feature_channels
    target_width = teacher_width if config.lambda_feature > 0 else width
    adapters = Adapters(width, target_width, config.blocks)
    init_weights(adapters, generator=seed)
    notes = []
    if config.init in ("copy", "copy-outer"):
        if t_cfg.ends != "full" or ngf > t_cfg.ngf:
            why = (
                f"the teacher has {t_cfg.ends}-resolution ends"
                if t_cfg.ends != "full"
                else f"the student is {ngf} channels wide and the teacher {t_cfg.ngf}"
            )
            notes.append(f"Copying layers is not possible ({why}), so every layer starts fresh.")
        elif ngf == t_cfg.ngf and s_cfg.ends == t_cfg.ends:
            teacher_state = teacher.state_dict()
            shared = {k: v.clone() for k, v in teacher_state.items() if k.startswith(SHARED_PREFIXES)}
            generator.load_state_dict(shared, strict=False)
            notes.append(
                f"Copied the teacher's stem, downsampling, upsampling and output layers ({len(shared)} tensors)."
            )
            if config.freeze_encoder:
                generator.stem.requires_grad_(False)
                generator.down.requires_grad_(False)
                notes.append(
                    "The stem and downsampling stay the teacher's (--freeze-encoder): one encoder pass serves both."
                )
            if config.init == "copy" and s_cfg.block == t_cfg.block:
                chosen = copied_blocks(config.blocks, t_cfg.blocks, same_width=True)
                _copy_blocks(generator, teacher, chosen)
                notes.append(
                    f"The student's residual blocks start as copies of teacher blocks {[j + 1 for j in chosen]}."
                )
            elif config.init == "copy":
                notes.append(
                    f"The student's {s_cfg.block} residual blocks start fresh: the teacher's are {t_cfg.block}, "
                    "and one kind has no exact copy in the other."
                )
        else:  # narrower, or other ends: the kept channels (all of them at the same width)
            notes.append(
                narrow_init(
                    generator,
                    adapters.convs,
                    teacher,
                    copied_blocks(config.blocks, t_cfg.blocks, same_width=False),
                    copy_blocks=config.init == "copy",
                )
            )
    if adapters.needed:
        notes.append(f"Feature adapters: {config.blocks} learned 1x1 convs from {width} to {teacher_width} channels.")
    shares_encoder = not any(p.requires_grad for p in (*generator.stem.parameters(), *generator.down.parameters()))
    return Student(generator, adapters, shares_encoder), notes


def check_wiring(
    student: Student, optimizer: torch.optim.Optimizer, teacher: ResnetGenerator, device, features: bool = True
) -> None:
    """Fail loudly if a student or adapter parameter is not being trained, or (when the feature loss
    is on) a feature pair mismatches."""
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    shared = ("generator.stem.", "generator.down.") if unwrap(student).shares_encoder else ()
    trained = [(name, p) for name, p in unwrap(student).named_parameters() if not name.startswith(shared)]
    missing = [name for name, p in trained if id(p) not in in_optimizer]
    if missing:
        raise RuntimeError(f"student parameters missing from the optimizer: {missing[:3]}")
    frozen = [name for name, p in trained if not p.requires_grad]
    if frozen:
        raise RuntimeError(f"student parameters frozen by mistake: {frozen[:3]}")
    probe = torch.zeros(1, 3, 16, 16, device=device)
    # Eval mode: a probe must not move batch norm's running statistics.
    with torch.no_grad(), evaluating(unwrap(student), teacher):
        _, s_feats = unwrap(student)(probe, return_features=True)
        _, t_feats = teacher(probe, return_features=True)
    mapping = imitated_blocks(len(s_feats), len(t_feats)) if features else []
    for i, j in enumerate(mapping):
        if s_feats[i].shape != t_feats[j].shape:
            raise RuntimeError(
                f"student block {i + 1} ({tuple(s_feats[i].shape)}) does not match teacher block {j + 1} "
                f"({tuple(t_feats[j].shape)})"
            )
