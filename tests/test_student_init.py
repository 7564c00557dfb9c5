"""Narrow students start from the teacher's most-read channels (train/student_init.py)."""

from __future__ import annotations

import pytest
import torch

from cgdistill.nets import GeneratorConfig, ResnetGenerator, init_weights
from cgdistill.train.config import DistillConfig
from cgdistill.train.student import build_student
from cgdistill.train.student_init import copy_narrow, select_channels, top_channels


def random_teacher(seed: int = 0, **config) -> ResnetGenerator:
    teacher = ResnetGenerator(GeneratorConfig(**{"blocks": 3, "ngf": 8, **config})).eval()
    init_weights(teacher, gain=0.2, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for module in teacher.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
    return teacher


def conv_of(stage):
    return next(m for m in stage if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d))


def norm_after(stage, conv):
    layers = list(stage)
    return layers[layers.index(conv) + 1]


@torch.no_grad()
def remove_channels(conv, norm, dropped, readers) -> None:
    """Make ``dropped`` output channels of ``conv`` zero after ``norm`` and unread by ``readers``."""
    if isinstance(conv, torch.nn.ConvTranspose2d):
        conv.weight[:, dropped] = 0
    else:
        conv.weight[dropped] = 0
    if conv.bias is not None:
        conv.bias[dropped] = 0
    for name in ("weight", "bias"):
        if getattr(norm, name, None) is not None:
            getattr(norm, name)[dropped] = 0
    for reader in readers:
        if isinstance(reader, torch.nn.ConvTranspose2d):
            reader.weight[dropped] = 0
        else:
            reader.weight[:, dropped] = 0


def teacher_with_dead_channels(norm: str, upsample: str, keep_ngf: int) -> tuple[ResnetGenerator, dict]:
    """A teacher in which only a random ``keep_ngf``-wide subset of channels carries anything."""
    t = random_teacher(norm=norm, upsample=upsample)
    ngf = t.config.ngf
    gen = torch.Generator().manual_seed(3)

    def dropped(width: int, keep: int) -> torch.Tensor:
        return torch.randperm(width, generator=gen)[: width - keep]

    kept = {}

    def drop(name, width, keep, producers, readers):
        d = dropped(width, keep)
        for conv, norm_layer in producers:
            remove_channels(conv, norm_layer, d, readers)
        kept[name] = sorted(set(range(width)) - set(d.tolist()))

    up0, up1 = conv_of(t.up[0]), conv_of(t.up[1])
    drop("stem", ngf, keep_ngf, [(t.stem[1], t.stem[2])], [t.down[0]])
    drop("down", 2 * ngf, 2 * keep_ngf, [(t.down[0], t.down[1])], [t.down[3]])
    trunk_producers = [(t.down[3], t.down[4])] + [(b.conv[5], b.conv[6]) for b in t.blocks]
    drop("trunk", 4 * ngf, 4 * keep_ngf, trunk_producers, [b.conv[1] for b in t.blocks] + [up0])
    for j, b in enumerate(t.blocks):
        drop(f"inner{j}", 4 * ngf, 4 * keep_ngf, [(b.conv[1], b.conv[2])], [b.conv[5]])
    drop("up0", 2 * ngf, 2 * keep_ngf, [(up0, norm_after(t.up[0], up0))], [up1])
    drop("up1", ngf, keep_ngf, [(up1, norm_after(t.up[1], up1))], [t.head[1]])
    return t, kept


@pytest.mark.parametrize(
    ("norm", "upsample"), [("instance", "deconv"), ("instance-affine", "resize-conv"), ("batch", "deconv")]
)
def test_a_narrow_copy_of_a_teacher_whose_dropped_channels_are_dead_reproduces_it(norm, upsample):
    teacher, kept = teacher_with_dead_channels(norm, upsample, keep_ngf=4)
    selection = select_channels(teacher, 4)
    assert selection.stem.tolist() == kept["stem"] and selection.trunk.tolist() == kept["trunk"]
    assert [s.tolist() for s in selection.inner] == [kept[f"inner{j}"] for j in range(3)]
    student = ResnetGenerator(GeneratorConfig(blocks=3, ngf=4, norm=norm, upsample=upsample)).eval()
    assert copy_narrow(student, teacher, selection, [0, 1, 2]) == 3
    # float64: the two networks add the same non-zero terms, so they differ only by rounding order.
    x = torch.rand(2, 3, 32, 40, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        expected, got = teacher.double()(x), student.double()(x)
    assert expected.abs().max() > 0.1  # the teacher computes something
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_a_narrow_copy_of_a_live_teacher_does_not_reproduce_it():
    teacher = random_teacher()
    student = ResnetGenerator(GeneratorConfig(blocks=3, ngf=4)).eval()
    copy_narrow(student, teacher, select_channels(teacher, 4), [0, 1, 2])
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert (student(x) - teacher(x)).abs().max() > 1e-3


def test_the_selected_channels_are_the_most_read_ones():
    teacher = random_teacher(seed=5)
    selection = select_channels(teacher, 3)
    # Stem channels are read by the first downsampling conv (out x in x 3 x 3).
    stem_reads = teacher.down[0].weight.abs().sum(dim=(0, 2, 3))
    assert selection.stem.tolist() == sorted(stem_reads.argsort(descending=True)[:3].tolist())
    # Trunk channels are read by every block's first conv and by the first transposed conv (in x out x 3 x 3).
    trunk_reads = conv_of(teacher.up[0]).weight.abs().sum(dim=(1, 2, 3))
    for block in teacher.blocks:
        trunk_reads = trunk_reads + block.conv[1].weight.abs().sum(dim=(0, 2, 3))
    assert selection.trunk.tolist() == sorted(trunk_reads.argsort(descending=True)[:12].tolist())
    # The head reads the last upsampling's channels.
    head_reads = teacher.head[1].weight.abs().sum(dim=(0, 2, 3))
    assert selection.up1.tolist() == sorted(head_reads.argsort(descending=True)[:3].tolist())


def test_top_channels_breaks_ties_by_index_and_returns_them_in_order():
    assert top_channels(torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0]), 2).tolist() == [1, 2]
    assert top_channels(torch.tensor([0.5, 0.1, 0.9]), 2).tolist() == [0, 2]


def test_every_copied_layer_has_the_student_shapes_and_the_trunk_subset_is_shared():
    teacher = random_teacher(ngf=8, blocks=6)
    student, notes = build_student(DistillConfig(blocks=2, ngf=4), teacher, torch.Generator().manual_seed(0))
    sel = select_channels(teacher, 4)
    g = student.generator
    assert g.down[3].weight.shape == (16, 8, 3, 3)
    torch.testing.assert_close(g.down[3].weight, teacher.down[3].weight[sel.trunk][:, sel.down])
    for s_block, j in zip(g.blocks, [2, 5], strict=True):  # the teacher blocks the student blocks imitate
        t_block, inner = teacher.blocks[j], sel.inner[j]
        torch.testing.assert_close(s_block.conv[1].weight, t_block.conv[1].weight[inner][:, sel.trunk])
        torch.testing.assert_close(s_block.conv[5].weight, t_block.conv[5].weight[sel.trunk][:, inner])
        torch.testing.assert_close(s_block.conv[5].bias, t_block.conv[5].bias[sel.trunk])
    assert g.up[0][0].weight.shape == (16, 8, 3, 3)  # transposed conv: in x out
    torch.testing.assert_close(g.up[0][0].weight, teacher.up[0][0].weight[sel.trunk][:, sel.up0])
    # The adapters start as the embedding of the kept trunk channels at their teacher positions.
    adapter = student.adapters.convs[0].weight[:, :, 0, 0]
    assert adapter.shape == (32, 16) and torch.equal(adapter[sel.trunk], torch.eye(16))
    assert any("most-read channels" in n and "teacher blocks [3, 6]" in n for n in notes)


def test_a_separable_narrow_student_copies_the_outer_layers_and_starts_its_blocks_fresh():
    teacher = random_teacher()
    student, notes = build_student(
        DistillConfig(blocks=2, ngf=4, block="separable"), teacher, torch.Generator().manual_seed(0)
    )
    selection = select_channels(teacher, 4)
    torch.testing.assert_close(student.generator.stem[1].weight, teacher.stem[1].weight[selection.stem])
    torch.testing.assert_close(student.generator.head[1].weight, teacher.head[1].weight[:, selection.up1])
    assert any("residual blocks start fresh" in n for n in notes)


def test_a_separable_teacher_can_be_distilled_into_a_narrower_student():
    teacher = random_teacher(block="separable")
    student, notes = build_student(DistillConfig(blocks=2, ngf=4), teacher, torch.Generator().manual_seed(0))
    selection = select_channels(teacher, 4)
    torch.testing.assert_close(
        student.generator.down[3].weight, teacher.down[3].weight[selection.trunk][:, selection.down]
    )
    assert selection.inner == [] and any("residual blocks start fresh" in n for n in notes)
    assert student(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_copy_outer_on_a_narrow_student_copies_the_outer_channels_only():
    teacher = random_teacher(ngf=8, blocks=6)
    copy, _ = build_student(DistillConfig(blocks=2, ngf=4), teacher, torch.Generator().manual_seed(0))
    outer, notes = build_student(
        DistillConfig(blocks=2, ngf=4, init="copy-outer"), teacher, torch.Generator().manual_seed(0)
    )
    fresh, _ = build_student(DistillConfig(blocks=2, ngf=4, init="random"), teacher, torch.Generator().manual_seed(0))
    sel = select_channels(teacher, 4)
    torch.testing.assert_close(outer.generator.down[3].weight, teacher.down[3].weight[sel.trunk][:, sel.down])
    torch.testing.assert_close(outer.generator.head[1].weight, teacher.head[1].weight[:, sel.up1])
    # The blocks are what a random init gives (same seed), not the copy's.
    for key, value in outer.generator.blocks.state_dict().items():
        assert torch.equal(value, fresh.generator.blocks.state_dict()[key])
    assert not torch.equal(outer.generator.blocks[0].conv[1].weight, copy.generator.blocks[0].conv[1].weight)
    assert any("residual blocks start fresh" in n for n in notes)


def test_without_the_feature_loss_a_narrow_student_has_no_adapters_but_still_copies():
    teacher = random_teacher(ngf=8, blocks=3)
    student, notes = build_student(
        DistillConfig(blocks=2, ngf=4, lambda_feature=0.0), teacher, torch.Generator().manual_seed(0)
    )
    assert not any(isinstance(m, torch.nn.Conv2d) for m in student.adapters.modules())
    sel = select_channels(teacher, 4)
    torch.testing.assert_close(student.generator.stem[1].weight, teacher.stem[1].weight[sel.stem])
    assert any("most-read channels" in n for n in notes) and not any("adapters" in n.lower() for n in notes)


@pytest.mark.parametrize("ngf", [4, 8])
def test_a_student_with_half_resolution_ends_copies_the_inner_down_and_upsampling_and_its_blocks(ngf):
    """Its stem and head read and write 2x2 pixel blocks, which no teacher layer does; every other layer has
    a teacher counterpart of the kept channels (all of them at the teacher's width)."""
    teacher = random_teacher(ngf=8, blocks=6)
    student, notes = build_student(
        DistillConfig(blocks=2, ngf=ngf, ends="half"), teacher, torch.Generator().manual_seed(0)
    )
    g, sel = student.generator, select_channels(teacher, ngf)
    assert [type(m).__name__ for m in g.stem][:1] == ["PixelUnshuffle"] and len(g.down) == 3 and len(g.up) == 1
    torch.testing.assert_close(g.down[0].weight, teacher.down[3].weight[sel.trunk][:, sel.down])
    torch.testing.assert_close(g.up[0][0].weight, teacher.up[0][0].weight[sel.trunk][:, sel.up0])
    for s_block, j in zip(g.blocks, [2, 5], strict=True):
        torch.testing.assert_close(s_block.conv[1].weight, teacher.blocks[j].conv[1].weight[sel.inner[j]][:, sel.trunk])
    assert g.stem[2].weight.shape == (2 * ngf, 12, 3, 3) and g.head[1].weight.shape == (12, 2 * ngf, 3, 3)
    assert any("half-resolution stem and head start fresh" in n for n in notes)
    assert any(p.requires_grad for p in g.stem.parameters()) and not student.shares_encoder
    assert student(torch.rand(1, 3, 32, 40)).shape == (1, 3, 32, 40)
