"""One rule for which model and which way (runs.resolve_generator), and which data (paths.choose_data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from cgdistill import paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.errors import CgdistillError
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.runs import ambiguous_direction, resolve_generator, resolve_pair
from cgdistill.weights import save_generator

TINY_TRAIN = ("--image-size", "24", "--load-size", "28", "--blocks", "1", "--ngf", "4", "--ndf", "4",
              "--max-steps", "1", "--device", "cpu", "--no-amp", "--workers", "0")  # fmt: skip


def _generator(path: Path, direction: str | None, *, teacher: str | None = None, age: float = 0.0) -> Path:
    """A tiny generator file; ``age`` seconds in the past, so "newest" does not hang on clock ticks."""
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), path, direction=direction, dataset="toy",
                   teacher=teacher)  # fmt: skip
    when = 1_700_000_000 - age
    os.utime(path, (when, when))
    return path


def _teacher_run(name: str, directions: tuple[str, ...] = ("A2B", "B2A"), age: float = 0.0) -> Path:
    for direction in directions:
        _generator(paths.run_path(name) / f"G_{direction}.safetensors", direction, age=age)
    return paths.run_path(name)


def _student_run(name: str, direction: str, teacher: str = "teach", age: float = 0.0) -> Path:
    return _generator(paths.run_path(name) / "G.safetensors", direction, teacher=teacher, age=age).parent


def _error_line(err_text: str) -> str:
    return err_text.split("Error: ", 1)[1].strip()


# ---------------------------------------------------------------------------------------------
# The direction


def test_a_teacher_run_with_both_generators_gets_the_same_sentence_from_every_command(cli, home, tmp_path):
    make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=2, n_test=1)
    _teacher_run("both")
    image = next((paths.dataset_path("toy") / "testA").iterdir())
    expected = ambiguous_direction(paths.run_path("both")).message
    results = {
        "translate": cli("translate", image, "-o", tmp_path / "out"),
        "export": cli("export", "-o", tmp_path / "m.onnx"),
        "compare": cli("compare", "--student", "both", "--teacher", "both"),
        "distill": cli("distill", *TINY_TRAIN),
    }
    for command, result in results.items():
        assert result.code == 2, command
        assert _error_line(result.err_text) == expected, command
    assert "both" in expected and "--direction A2B or --direction B2A" in expected


def test_a_teacher_run_with_both_generators_is_used_the_way_direction_says():
    _teacher_run("both")
    resolved = resolve_generator(None, "B2A", role="any")
    assert (resolved.path.name, resolved.direction, resolved.role) == ("G_B2A.safetensors", "B2A", "teacher")


def test_a_teacher_run_with_one_generator_is_used_that_way():
    _teacher_run("imported", ("B2A",))
    resolved = resolve_generator("imported", None, role="teacher")
    assert (resolved.direction, resolved.source) == ("B2A", "imported")


def test_a_student_is_used_the_way_it_translates_and_refuses_the_other_way():
    _student_run("stud", "A2B")
    assert resolve_generator("stud").direction == "A2B"
    with pytest.raises(CgdistillError, match="^Student run stud translates A2B, not B2A; pass --direction A2B"):
        resolve_generator("stud", "B2A")


def test_a_file_that_records_no_direction_needs_one(tmp_path):
    loose = _generator(tmp_path / "loose.safetensors", None)
    with pytest.raises(CgdistillError, match="does not record which way it translates; pass --direction"):
        resolve_generator(str(loose))
    assert resolve_generator(str(loose), "B2A").direction == "B2A"


# ---------------------------------------------------------------------------------------------
# The automatic pick


def test_with_no_model_named_the_newest_student_comes_before_any_teacher():
    _teacher_run("teach", ("A2B",), age=0)
    _student_run("old-student", "A2B", age=100)
    _student_run("new-student", "B2A", age=50)
    assert resolve_generator(None).run.name == "new-student"
    assert resolve_generator(None, "A2B").run.name == "old-student"


def test_with_a_direction_the_newest_run_holding_it_is_picked():
    _teacher_run("older-a2b", ("A2B",), age=100)
    _teacher_run("newer-b2a", ("B2A",), age=0)
    assert resolve_generator(None, "A2B", role="teacher").run.name == "older-a2b"
    assert resolve_generator(None, None, role="teacher").run.name == "newer-b2a"


def test_the_newest_teacher_with_both_generators_is_not_skipped_for_an_older_one():
    _teacher_run("older-one-way", ("A2B",), age=100)
    _teacher_run("newer-both", age=0)
    with pytest.raises(CgdistillError) as caught:
        resolve_generator(None, role="teacher")
    assert caught.value.message == ambiguous_direction(paths.run_path("newer-both")).message


def test_a_student_run_given_as_the_teacher_is_refused():
    _student_run("pupil", "A2B")
    with pytest.raises(CgdistillError, match="^Run 'pupil' is a student, not a teacher"):
        resolve_generator("pupil", role="teacher")


def test_compare_pairs_the_student_with_the_teacher_it_names_in_its_direction():
    _teacher_run("teach", age=100)
    _teacher_run("newer-teacher", age=0)
    _student_run("stud", "B2A", teacher="teach", age=50)
    teacher, student = resolve_pair(None, None, None)
    assert (teacher.run.name, teacher.direction, student.run.name) == ("teach", "B2A", "stud")


def test_compare_falls_back_to_the_newest_teacher_when_the_named_one_is_gone():
    _teacher_run("newer-teacher", ("B2A",), age=0)
    _student_run("stud", "B2A", teacher="deleted", age=50)
    teacher, _ = resolve_pair(None, None, None)
    assert teacher.run.name == "newer-teacher"


# ---------------------------------------------------------------------------------------------
# The data


def _dataset(name: str, age: float) -> Path:
    folder = make_toy_dataset(paths.dataset_path(name), size=32, n_train=2, n_test=1)
    when = 1_700_000_000 - age
    os.utime(folder, (when, when))
    return Path(folder)


def test_train_teacher_without_data_uses_the_only_dataset_and_says_so(cli, home):
    assert cli("download", "toy").code == 0
    result = cli("train-teacher", *TINY_TRAIN)
    assert result.code == 0, result.err
    assert f"No --data given: using toy, the only dataset in {paths.datasets_dir()}" in result.err_text
    stored = json.loads((paths.run_path("toy") / "config.json").read_text())
    assert (stored["settings"]["data"], stored["dataset"]) == ("toy", "toy")


def test_the_newest_of_several_datasets_is_the_default():
    _dataset("older", age=100)
    _dataset("newer", age=0)
    (paths.datasets_dir() / "no-train-split").mkdir()  # test images only: nothing to train on
    choice = paths.choose_data(None, newest=True)
    assert (choice.spec, choice.folder) == ("newer", paths.dataset_path("newer"))
    assert choice.reason.startswith("the newest of 2 datasets in ")


def test_train_teacher_with_no_dataset_names_the_command_that_downloads_one(cli, home):
    result = cli("train-teacher", *TINY_TRAIN)
    assert result.code == 2
    message = _error_line(result.err_text)
    assert "`cgdistill download toy`" in message and "`cgdistill download monet2photo`" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert not paths.runs_dir().exists()


def test_data_given_wins_over_the_recorded_and_the_newest(tmp_path):
    _dataset("newer", age=0)
    mine = make_toy_dataset(tmp_path / "mine", size=32, n_train=2, n_test=1)
    choice = paths.choose_data(str(mine), [("newer", "the teacher")], newest=True)
    assert (choice.folder, choice.reason) == (Path(mine), None)


def test_a_model_that_records_no_dataset_needs_data():
    with pytest.raises(CgdistillError, match="^No --data given and student s and teacher t record no dataset; pass"):
        paths.choose_data(None, [(None, "student s"), (None, "teacher t")])


def test_compare_says_which_dataset_it_took(cli, home):
    make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=1, n_test=2)
    _teacher_run("teach", ("A2B",), age=100)
    _student_run("stud", "A2B", teacher="teach", age=0)
    result = cli("compare", "--device", "cpu", "--json")
    assert result.code == 0, result.err
    assert f"Data: {paths.dataset_path('toy')} (the dataset student stud was trained on)" in (result.err_text)


def test_a_distillation_from_a_file_that_records_no_dataset_resumes_on_its_data(home, tmp_path):
    from cgdistill.train.config import DistillConfig
    from cgdistill.train.distill import distill

    data = make_toy_dataset(tmp_path / "mine", size=32, n_train=2, n_test=1)
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_generator(ResnetGenerator(GeneratorConfig(blocks=2, ngf=4)), teacher, direction="A2B")
    tiny = dict(blocks=1, image_size=24, load_size=28, ndf=4, device="cpu", amp=False, workers=0, sample_every=1000,
                eval_every=1000, save_every=1)  # fmt: skip
    distill(DistillConfig(teacher=str(teacher), data=str(data), name="s", max_steps=1, **tiny))
    run = distill(DistillConfig(name="s", max_steps=2), resume=True)
    assert json.loads((run / "config.json").read_text())["settings"]["data"] == str(data)
