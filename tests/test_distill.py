"""The distiller: both kinds of teacher, copy init, adapters, the loss set, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.distill import DistillRecipe, distill
from cgdistill.train.loop import Observer
from cgdistill.train.stopping import TrainingInterrupted
from cgdistill.train.student import Adapters, build_student, check_wiring, copied_blocks, imitated_blocks
from cgdistill.train.teacher import train_teacher
from cgdistill.train.teacher_loading import load_teacher
from cgdistill.weights import load_generator, save_generator
from teacher_runs import tiny_teacher_run


@pytest.fixture
def teacher_run(home: Path) -> Path:
    return tiny_teacher_run()


def tiny(**overrides) -> DistillConfig:
    settings = dict(
        blocks=2, image_size=24, load_size=28, ndf=4, pool_size=2, epochs=1, epochs_decay=1, sample_every=1000,
        save_every=1000, log_every=1, eval_every=2, seed=1, device="cpu",  # bitwise resume is a CPU promise
    )  # fmt: skip
    settings.update(overrides)
    return DistillConfig(**settings)


def test_imitated_blocks_end_each_group_of_teacher_blocks():
    assert imitated_blocks(3, 9) == [2, 5, 8]
    assert imitated_blocks(9, 9) == list(range(9))
    assert imitated_blocks(1, 9) == [8]
    assert imitated_blocks(2, 4) == [1, 3]


def test_distilling_a_teacher_run_writes_a_self_describing_student(teacher_run):
    run = distill(tiny(teacher="teacher", direction="A2B", max_steps=3, objective="domain"))
    student, info = load_generator(run / "G.safetensors")
    assert (student.config.blocks, student.config.ngf) == (2, 8)
    assert (info.direction, info.teacher, info.dataset, info.step) == ("A2B", "teacher", "toy", 3)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"output", "feature", "gan", "cycle", "identity", "D"} <= set(records[0])
    assert any("psnr_to_teacher" in r and "ssim_to_teacher" in r for r in records)
    assert (run / "curves.svg").read_text().startswith("<svg")


def test_the_newest_teacher_run_is_the_default_with_its_reverse_generator_and_discriminator(teacher_run):
    teacher = load_teacher(None, "B2A")
    assert (teacher.source, teacher.direction) == ("teacher", "B2A")
    assert teacher.reverse is not None and teacher.discriminator is not None


def test_a_teacher_run_with_both_generators_has_no_default_direction(teacher_run):
    with pytest.raises(CgdistillError, match=r"^Teacher run teacher has generators for A2B and B2A; pass --direction"):
        load_teacher(None, None)


def test_a_single_generator_teacher_distills_without_cycle_and_with_a_fresh_discriminator(teacher_run, tmp_path):
    generator, _ = load_generator(teacher_run / "G_A2B.safetensors")
    loose = save_generator(generator, tmp_path / "imported.safetensors", direction="A2B", dataset="toy")
    run = distill(tiny(teacher=str(loose), max_steps=2, name="from-file", objective="domain"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "cycle" not in records[0]
    assert {"output", "feature", "gan", "identity"} <= set(records[0])
    assert load_generator(run / "G.safetensors")[1].teacher == str(loose.resolve())


def test_copy_init_copies_the_outer_layers_and_evenly_spaced_blocks():
    teacher = ResnetGenerator(GeneratorConfig(blocks=9, ngf=8))
    for p in teacher.parameters():
        torch.nn.init.normal_(p)
    student, notes = build_student(DistillConfig(blocks=3), teacher, torch.Generator().manual_seed(0))
    s_state, t_state = student.generator.state_dict(), teacher.state_dict()
    outer = [k for k in s_state if not k.startswith("blocks.")]
    assert outer and all(torch.equal(s_state[k], t_state[k]) for k in outer)
    for i, j in enumerate((0, 4, 8)):
        assert torch.equal(s_state[f"blocks.{i}.conv.1.weight"], t_state[f"blocks.{j}.conv.1.weight"])
    assert any("teacher blocks [1, 5, 9]" in note for note in notes)


def test_copy_outer_init_leaves_the_blocks_fresh():
    teacher = ResnetGenerator(GeneratorConfig(blocks=6, ngf=8))
    for p in teacher.parameters():
        torch.nn.init.normal_(p)
    student, _ = build_student(DistillConfig(blocks=2, init="copy-outer"), teacher, torch.Generator().manual_seed(0))
    s_state, t_state = student.generator.state_dict(), teacher.state_dict()
    outer = [k for k in s_state if not k.startswith("blocks.")]
    assert outer and all(torch.equal(s_state[k], t_state[k]) for k in outer)
    assert not any(
        torch.equal(s_state["blocks.0.conv.1.weight"], t_state[f"blocks.{j}.conv.1.weight"]) for j in range(6)
    )


def test_copy_init_of_another_block_kind_copies_the_outer_layers_and_starts_the_blocks_fresh():
    teacher = ResnetGenerator(GeneratorConfig(blocks=3, ngf=8))
    for p in teacher.parameters():
        torch.nn.init.normal_(p)
    student, notes = build_student(
        DistillConfig(blocks=3, block="separable"), teacher, torch.Generator().manual_seed(0)
    )
    s_state, t_state = student.generator.state_dict(), teacher.state_dict()
    outer = [k for k in s_state if not k.startswith("blocks.")]
    assert outer and all(torch.equal(s_state[k], t_state[k]) for k in outer)
    assert student.generator.config.block == "separable"
    assert any("separable residual blocks start fresh" in note and "standard" in note for note in notes)


def test_copy_init_of_a_separable_teacher_copies_its_blocks_into_a_separable_student():
    teacher = ResnetGenerator(GeneratorConfig(blocks=5, ngf=8, block="separable"))
    for p in teacher.parameters():
        torch.nn.init.normal_(p)
    student, notes = build_student(
        DistillConfig(blocks=2, block="separable"), teacher, torch.Generator().manual_seed(0)
    )
    s_state, t_state = student.generator.state_dict(), teacher.state_dict()
    for i, j in enumerate(copied_blocks(2, 5, same_width=True)):
        for key in ("conv.1.weight", "conv.3.weight", "conv.7.weight", "conv.9.weight"):
            assert torch.equal(s_state[f"blocks.{i}.{key}"], t_state[f"blocks.{j}.{key}"])
    assert any("teacher blocks [1, 5]" in note for note in notes)


def test_copied_blocks_at_the_teachers_width_take_the_first_the_last_and_evenly_between():
    assert copied_blocks(3, 9, same_width=True) == [0, 4, 8]
    assert copied_blocks(2, 9, same_width=True) == [0, 8]
    assert copied_blocks(1, 9, same_width=True) == [4]
    assert copied_blocks(9, 9, same_width=True) == list(range(9))


def test_copied_blocks_of_a_narrower_student_are_the_blocks_it_imitates():
    assert copied_blocks(3, 9, same_width=False) == imitated_blocks(3, 9) == [2, 5, 8]


def test_random_init_copies_nothing():
    teacher = ResnetGenerator(GeneratorConfig(blocks=3, ngf=8))
    for p in teacher.parameters():
        torch.nn.init.normal_(p)
    student, _ = build_student(DistillConfig(blocks=2, init="random"), teacher, torch.Generator().manual_seed(0))
    assert not torch.equal(student.generator.stem[1].weight, teacher.stem[1].weight)


def test_adapters_appear_only_when_widths_differ():
    teacher = ResnetGenerator(GeneratorConfig(blocks=3, ngf=8))
    same, _ = build_student(DistillConfig(blocks=2), teacher, torch.Generator())
    narrow, notes = build_student(DistillConfig(blocks=2, ngf=4), teacher, torch.Generator())
    assert not any(isinstance(m, torch.nn.Conv2d) for m in same.adapters.modules())
    convs = [m for m in narrow.adapters.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 and convs[0].in_channels == 16 and convs[0].out_channels == 32
    assert any("most-read channels" in note for note in notes)


def test_a_student_wider_than_its_teacher_starts_fresh_and_says_so():
    teacher = ResnetGenerator(GeneratorConfig(blocks=3, ngf=4))
    _, notes = build_student(DistillConfig(blocks=2, ngf=8), teacher, torch.Generator())
    assert any("not possible" in note for note in notes)


def test_a_narrower_student_trains_through_its_adapters(teacher_run):
    run = distill(tiny(teacher="teacher", direction="B2A", ngf=4, max_steps=2, name="narrow"))
    student, _ = load_generator(run / "G.safetensors")
    assert student.config.ngf == 4


def test_wiring_check_fails_loudly_when_a_parameter_is_not_optimised():
    teacher = ResnetGenerator(GeneratorConfig(blocks=3, ngf=8)).eval()
    student, _ = build_student(DistillConfig(blocks=2, ngf=4), teacher, torch.Generator())
    optimizer = torch.optim.Adam(student.generator.parameters())  # adapters forgotten, as the seed's code did
    with pytest.raises(RuntimeError, match="missing from the optimizer"):
        check_wiring(student, optimizer, teacher, torch.device("cpu"))


def test_wiring_check_catches_mismatched_feature_shapes():
    teacher = ResnetGenerator(GeneratorConfig(blocks=3, ngf=8)).eval()
    student, _ = build_student(DistillConfig(blocks=2, ngf=4), teacher, torch.Generator())
    student.adapters = Adapters(16, 16, 2)  # lifts to the wrong width
    optimizer = torch.optim.Adam(student.parameters())
    with pytest.raises(RuntimeError, match="does not match teacher block"):
        check_wiring(student, optimizer, teacher, torch.device("cpu"))


def test_resuming_a_distillation_is_bitwise_exact(teacher_run, interrupt_after):
    # With the weight average on (the default), this also proves the average resumes exactly.
    straight = distill(tiny(teacher="teacher", direction="B2A", max_steps=6, name="straight"))
    with pytest.raises(TrainingInterrupted):
        distill(tiny(teacher="teacher", direction="B2A", max_steps=6, name="split"), observer=interrupt_after(3))
    split = distill(tiny(name="split", max_steps=6), resume=True)
    a = load_file(str(straight / "G.safetensors"))
    b = load_file(str(split / "G.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


class Messages(Observer):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def test_resuming_against_a_teacher_that_trained_on_says_so(teacher_run):
    distill(tiny(teacher="teacher", direction="B2A", max_steps=2, name="student"))
    assert json.loads((paths.run_path("student") / "config.json").read_text())["settings"]["teacher_step"] == 2
    quiet = Messages()
    distill(tiny(name="student", max_steps=3), resume=True, observer=quiet)
    assert not any("continues against the teacher" in line for line in quiet.lines)

    train_teacher(TeacherConfig(name="teacher", max_steps=4), resume=True)
    told = Messages()
    distill(tiny(name="student", max_steps=4), resume=True, observer=told)
    assert "Teacher teacher is at step 4 now; this student started against its step 2 and continues against " \
        "the teacher as it is now." in told.lines  # fmt: skip
    assert json.loads((paths.run_path("student") / "config.json").read_text())["settings"]["teacher_step"] == 2


def test_the_cli_distills_and_reports_the_active_losses(cli, teacher_run):
    result = cli("distill", "--teacher", "teacher", "--direction", "B2A", "--blocks", "1", "--max-steps", "2",
                 "--image-size", "24", "--load-size", "28", "--ndf", "4", "--name", "cli-student",
                 "--objective", "domain")  # fmt: skip
    assert result.code == 0, result.err
    assert "Active losses: output, feature, gan, cycle, identity" in result.err_text
    assert "Student blocks imitate teacher blocks [4]" in result.err_text


def test_without_target_images_the_teacher_outputs_are_the_real_samples(teacher_run, tmp_path, cli):
    import shutil

    data = tmp_path / "only_a"
    shutil.copytree(paths.dataset_path("toy") / "trainA", data / "trainA")
    generator, _ = load_generator(teacher_run / "G_A2B.safetensors")
    loose = save_generator(generator, tmp_path / "imported.safetensors", direction="A2B")
    result = cli("distill", "--teacher", loose, "--data", data, "--blocks", "1", "--max-steps", "2",
                 "--image-size", "24", "--load-size", "28", "--ndf", "4", "--name", "only-a",
                 "--objective", "domain")  # fmt: skip
    assert result.code == 0, result.err
    assert "skipped: cycle" in result.err_text and "identity (the data has no trainB/ images)" in result.err_text
    assert "teacher's outputs as its real samples" in result.err_text
    records = [json.loads(line) for line in (paths.run_path("only-a") / "metrics.jsonl").read_text().splitlines()]
    assert {"output", "feature", "gan", "D"} <= set(records[0]) and "identity" not in records[0]


def test_echo_makes_that_many_student_updates_per_teacher_batch(teacher_run, monkeypatch):
    teacher_passes = []
    original = DistillRecipe.train_step

    def counting(self, batch):
        teacher_passes.append(1)
        return original(self, batch)

    monkeypatch.setattr(DistillRecipe, "train_step", counting)
    run = distill(tiny(teacher="teacher", direction="B2A", max_steps=3, name="echoed", echo=3))
    state = load_file(str(run / "state" / "step_0000003" / "tensors.safetensors"))
    assert len(teacher_passes) == 3
    assert state["model.student_average.updates"].item() == 9  # 3 steps x 3 updates


def _weights(run: Path, file: str = "G.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run / file))


def test_a_same_width_student_keeps_the_teachers_encoder_and_trains_the_rest(teacher_run):
    run = distill(tiny(teacher="teacher", direction="A2B", max_steps=3, name="frozen"))
    student, teacher = _weights(run), _weights(teacher_run, "G_A2B.safetensors")
    encoder = [k for k in student if k.startswith(("stem.", "down."))]
    assert encoder and all(torch.equal(student[k], teacher[k]) for k in encoder)
    decoder = [k for k in student if k.startswith("up.") and k.endswith("weight")]
    assert any(not torch.equal(student[k], teacher[k]) for k in decoder)


def test_no_freeze_encoder_trains_the_copied_stem(teacher_run):
    run = distill(tiny(teacher="teacher", direction="A2B", max_steps=3, name="trained", freeze_encoder=False))
    student, teacher = _weights(run), _weights(teacher_run, "G_A2B.safetensors")
    assert not torch.equal(student["stem.1.weight"], teacher["stem.1.weight"])


def test_a_shared_encoder_pass_computes_the_students_own_first_step(teacher_run):
    # Frozen or not, the first step's student starts from identical encoder weights, so passing the
    # teacher's encoder output in must give exactly the losses the student's own encoder gives.
    def first_losses(name: str, freeze: bool) -> dict:
        config = tiny(teacher="teacher", direction="A2B", max_steps=1, name=name, freeze_encoder=freeze, echo=1)
        run = distill(config, given={"echo"})  # one update: a second one starts from other weights
        first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        return {k: first[k] for k in ("output", "feature")}

    assert first_losses("shared", True) == first_losses("own", False)


def test_a_narrower_student_trains_its_own_encoder(teacher_run):
    teacher = load_teacher("teacher", "A2B").generator
    student, notes = build_student(DistillConfig(blocks=2, ngf=4), teacher, torch.Generator().manual_seed(0))
    assert not student.shares_encoder
    assert all(p.requires_grad for p in student.generator.stem.parameters())
    assert not any("--freeze-encoder" in note for note in notes)


def test_runs_from_before_the_frozen_encoder_resume_with_it_trained():
    assert DistillConfig.from_dict({"blocks": 3}).freeze_encoder is False
    assert DistillConfig().freeze_encoder is True
