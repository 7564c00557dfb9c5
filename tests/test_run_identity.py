"""The run folder is the run's identity: resume reads and writes only the folder named by --name,
keeps the run's length unless asked, and a run that never saved can simply be started again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.train.config import TeacherConfig
from cgdistill.train.teacher import train_teacher
from cgdistill.weights import read_info

TINY = ["--data", "toy", "--image-size", "24", "--load-size", "28", "--blocks", "1", "--ngf", "4", "--ndf", "4",
        "--device", "cpu", "--no-amp", "--workers", "0", "--sample-every", "1000"]  # fmt: skip


def tiny(**overrides) -> TeacherConfig:
    settings = dict(
        data="toy", blocks=1, ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2, epochs=1, epochs_decay=1,
        save_every=1000, sample_every=1000, log_every=1, device="cpu", amp=False, workers=0,
    )  # fmt: skip
    settings.update(overrides)
    return TeacherConfig(**settings)


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resuming_a_copied_run_trains_the_copy_and_leaves_the_original(cli, toy, home):
    assert cli("train-teacher", *TINY, "--name", "orig", "--max-steps", "1").code == 0
    shutil.copytree(home / "runs" / "orig", home / "runs" / "copy")
    before = snapshot(home / "runs" / "orig")
    result = cli("train-teacher", *TINY, "--name", "copy", "--max-steps", "2", "--resume")
    assert result.code == 0, result.err
    assert "Run copy is in" in result.out
    assert snapshot(home / "runs" / "orig") == before
    assert read_info(home / "runs" / "copy" / "G_A2B.safetensors").step == 2
    assert json.loads((home / "runs" / "copy" / "config.json").read_text())["settings"]["name"] == "copy"


def test_a_renamed_run_can_be_resumed(toy, home):
    train_teacher(tiny(name="before", max_steps=1))
    (home / "runs" / "before").rename(home / "runs" / "after")
    run = train_teacher(tiny(name="after", max_steps=2), resume=True)
    assert run == home / "runs" / "after"
    assert read_info(run / "G_A2B.safetensors").step == 2
    assert not (home / "runs" / "before").exists()


def test_resume_keeps_the_runs_length_unless_asked(cli, toy, home):
    assert cli("train-teacher", *TINY, "--name", "short", "--max-steps", "2").code == 0
    result = cli("train-teacher", *TINY, "--name", "short", "--resume")
    assert result.code == 0, result.err
    assert "already at step 2 of 2" in result.err_text
    assert read_info(home / "runs" / "short" / "G_A2B.safetensors").step == 2
    assert cli("train-teacher", "--name", "short", "--resume", "--max-steps", "3").code == 0
    assert read_info(home / "runs" / "short" / "G_A2B.safetensors").step == 3
    # The longer target is now the run's own: the next plain resume keeps it.
    assert json.loads((home / "runs" / "short" / "config.json").read_text())["settings"]["max_steps"] == 3


def test_the_ctrl_c_hint_repeats_the_home_given_on_the_command_line(cli, toy, home, monkeypatch, tmp_path):
    from cgdistill.train import teacher
    from cgdistill.train.stopping import TrainingInterrupted

    def stopped(config, **_kwargs):
        raise TrainingInterrupted(3, paths.run_path(config.name or "cc"))

    monkeypatch.setattr(teacher, "train_teacher", stopped)
    other = tmp_path / "other home"
    result = cli("--home", other, "train-teacher", *TINY, "--name", "cc", "--max-steps", "400")
    assert result.code == 130
    assert "Resume with: cgdistill --home" in result.err_text
    assert f"'{other}'" in result.err_text and "--name cc --resume" in result.err_text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "config.json is not valid JSON"),
        ("[1, 2]", "config.json is not a run's settings"),
        ('{"kind": "teacher", "settings": {"image_size": "big"}}', "setting 'image_size' is 'big', not int"),
        ('{"kind": "teacher", "settings": []}', "not a run's settings"),
    ],
)
def test_a_corrupt_config_on_resume_is_one_sentence(toy, home, content, expected):
    train_teacher(tiny(name="broken", max_steps=1))
    (home / "runs" / "broken" / "config.json").write_text(content)
    with pytest.raises(CgdistillError, match=expected) as caught:
        train_teacher(tiny(name="broken", max_steps=2), resume=True)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("source", ["official-pretrained", "imported-pretrained"])  # before and after layouts
def test_resuming_an_imported_teacher_says_there_is_nothing_to_resume(cli, toy, home, source):
    run = home / "runs" / "imported"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"kind": "teacher", "source": source}))
    result = cli("train-teacher", *TINY, "--name", "imported", "--resume", "--max-steps", "1")
    assert result.code == 2
    assert "imported" in result.err_text and "nothing to resume" in result.err_text
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("name", "expected"),
    [("", "Run name '' is not valid"), ("x" * 300, "at most"), ("a/b", "is not valid"), (".hidden", "is not valid")],
)
def test_bad_run_names_are_refused_before_anything_is_written(cli, toy, home, name, expected):
    result = cli("train-teacher", *TINY, "--name", name, "--max-steps", "1")
    assert result.code == 2
    assert expected in result.err_text
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_a_name_that_is_a_plain_file_in_runs_is_refused(cli, toy, home):
    (home / "runs").mkdir()
    (home / "runs" / "taken").write_text("mine")
    for extra in ([], ["--resume"]):
        result = cli("train-teacher", *TINY, "--name", "taken", "--max-steps", "1", *extra)
        assert result.code == 2, result.err
        assert "not a run folder" in result.err_text
    assert (home / "runs" / "taken").read_text() == "mine"


def test_a_run_that_failed_before_its_first_checkpoint_can_be_started_again(cli, toy, home, monkeypatch):
    from cgdistill.train import command

    def broken(*_args, **_kwargs):
        raise CgdistillError("simulated failure before the first checkpoint")

    with monkeypatch.context() as patch:
        patch.setattr(command, "fit", broken)
        assert cli("train-teacher", *TINY, "--name", "early", "--max-steps", "1").code == 2
    assert (home / "runs" / "early" / "config.json").is_file()
    resumed = cli("train-teacher", *TINY, "--name", "early", "--max-steps", "1", "--resume")
    assert resumed.code == 2
    assert "without --resume" in resumed.err_text
    again = cli("train-teacher", *TINY, "--name", "early", "--max-steps", "1")
    assert again.code == 0, again.err
    assert read_info(home / "runs" / "early" / "G_A2B.safetensors").step == 1


def test_a_run_with_a_checkpoint_is_still_never_overwritten(cli, toy, home):
    assert cli("train-teacher", *TINY, "--name", "kept", "--max-steps", "1").code == 0
    result = cli("train-teacher", *TINY, "--name", "kept", "--max-steps", "1")
    assert result.code == 2 and "pass --resume" in result.err_text


def test_resuming_a_copied_distillation_trains_the_copy(toy, home):
    from cgdistill.train.config import DistillConfig
    from cgdistill.train.distill import distill

    train_teacher(tiny(name="teacher", max_steps=1))
    student = dict(teacher="teacher", direction="B2A", blocks=1, image_size=24, load_size=28, ndf=4, pool_size=2, device="cpu",
                   amp=False, workers=0, sample_every=1000, eval_every=1000)  # fmt: skip
    distill(DistillConfig(name="s1", max_steps=1, **student))
    shutil.copytree(home / "runs" / "s1", home / "runs" / "s2")
    before = snapshot(home / "runs" / "s1")
    run = distill(DistillConfig(name="s2", max_steps=2), resume=True)
    assert run == home / "runs" / "s2" and read_info(run / "G.safetensors").step == 2
    assert snapshot(home / "runs" / "s1") == before


def test_distilling_from_a_student_run_says_it_is_a_student(cli, toy, home):
    from cgdistill.nets import GeneratorConfig, ResnetGenerator
    from cgdistill.weights import save_generator

    (home / "runs" / "pupil").mkdir(parents=True)
    save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), home / "runs" / "pupil" / "G.safetensors",
                   direction="B2A", dataset="toy", teacher="somebody")  # fmt: skip
    result = cli("distill", "--teacher", "pupil", "--max-steps", "1")
    assert result.code == 2
    assert "Run 'pupil' is a student, not a teacher" in result.err_text
