"""distill --preset: named student shapes that explicit flags override."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cgdistill import paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.options import PRESET_NAMES
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.presets import PRESETS, preset_values
from cgdistill.train.teacher import train_teacher
from cgdistill.weights import read_info


def with_preset(config: DistillConfig, teacher_ngf: int, given: set[str] | None = None) -> DistillConfig:
    """``config`` with its preset filled in, as ``plan_distill`` fills it in."""
    return replace(config, **preset_values(config, teacher_ngf, given))


def test_every_preset_flag_choice_has_a_preset_and_no_preset_is_unlisted():
    assert tuple(PRESETS) == PRESET_NAMES


def test_fastest_is_three_blocks_at_a_quarter_of_the_teacher_width_with_half_resolution_ends_and_its_recipe():
    config = DistillConfig(preset="fastest")
    config = with_preset(config, teacher_ngf=64)
    assert (config.blocks, config.ngf, config.block, config.ends) == (3, 16, "standard", "half")
    assert (config.lr, config.echo) == (1e-3, 4)


def test_fastest_trains_on_whole_images_so_that_its_teachers_outputs_are_cached_unless_a_load_size_is_given():
    config = with_preset(DistillConfig(preset="fastest"), teacher_ngf=64)
    assert config.load_size == config.image_size == 128
    assert with_preset(DistillConfig(preset="fastest", image_size=96), teacher_ngf=64).load_size == 96
    crops = with_preset(DistillConfig(preset="fastest", load_size=143), teacher_ngf=64, given={"load_size"})
    assert crops.load_size == 143
    for preset in ("default", "fast"):
        assert with_preset(DistillConfig(preset=preset), teacher_ngf=64).load_size == 143


def test_fast_is_three_blocks_at_half_the_teacher_width():
    config = DistillConfig(preset="fast")
    config = with_preset(config, teacher_ngf=64)
    assert (config.blocks, config.ngf, config.block, config.lr, config.echo) == (3, 32, "standard", 1e-3, 2)
    assert config.ends == "full"


def test_a_given_lr_or_echo_overrides_the_preset_recipe():
    config = DistillConfig(preset="fast", lr=5e-4)
    config = with_preset(config, teacher_ngf=64, given={"echo"})
    assert (config.lr, config.echo) == (5e-4, 1)


def test_default_keeps_the_seed_student_with_its_recipe():
    config = DistillConfig()
    config = with_preset(config, teacher_ngf=64)
    assert (config.blocks, config.ngf, config.block) == (3, None, "standard")
    assert (config.lr, config.echo, config.lambda_feature) == (5e-4, 3, 20.0)


def test_every_preset_weighs_the_feature_loss_x20_and_a_given_weight_wins():
    for preset in ("fast", "fastest"):
        narrow = DistillConfig(preset=preset)
        narrow = with_preset(narrow, teacher_ngf=64)
        assert narrow.lambda_feature == 20.0
    chosen = DistillConfig(lambda_feature=0.5)
    chosen = with_preset(chosen, teacher_ngf=64)
    assert chosen.lambda_feature == 0.5


def test_flags_given_on_the_command_line_override_the_preset():
    config = DistillConfig(preset="fast", blocks=3, block="separable")
    config = with_preset(config, teacher_ngf=64, given={"block"})
    assert (config.blocks, config.ngf, config.block) == (3, 32, "separable")


def test_in_library_use_a_non_default_field_overrides_the_preset():
    config = DistillConfig(preset="fastest", ngf=24)
    config = with_preset(config, teacher_ngf=64, given={"max_steps"})  # as a resumed study passes it
    assert (config.ngf, config.block) == (24, "standard")


@pytest.fixture
def teacher_run(home):
    make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=4, n_test=2)
    return train_teacher(
        TeacherConfig(data="toy", name="teacher", blocks=2, ngf=8, ndf=4, image_size=24, load_size=28, max_steps=1,
                      pool_size=2, sample_every=1000)
    )  # fmt: skip


def test_the_cli_preset_shapes_the_student_and_is_stored(cli, teacher_run):
    common = ("--teacher", "teacher", "--direction", "A2B", "--max-steps", "1", "--image-size", "24",
              "--load-size", "28", "--ndf", "4", "--device", "cpu", "--no-amp")  # fmt: skip
    result = cli("distill", *common, "--preset", "fastest", "--name", "fastest")
    assert result.code == 0, result.err
    settings = json.loads((paths.run_path("fastest") / "config.json").read_text())["settings"]
    assert (settings["preset"], settings["blocks"], settings["ngf"], settings["block"]) == (
        "fastest",
        3,
        2,
        "standard",
    )
    info = read_info(paths.run_path("fastest") / "G.safetensors")
    assert (info.config["ngf"], info.config["block"], info.extra["preset"]) == (2, "standard", "fastest")
    assert info.config["ends"] == settings["ends"] == "half"

    result = cli("distill", *common, "--preset", "fastest", "--ngf", "4", "--blocks", "1", "--name", "override")
    assert result.code == 0, result.err
    shape = read_info(paths.run_path("override") / "G.safetensors").config
    assert (shape["ngf"], shape["blocks"], shape["block"]) == (4, 1, "standard")


def test_the_cli_refuses_an_unknown_block_kind(cli, teacher_run):
    result = cli("distill", "--teacher", "teacher", "--block", "mobile")
    assert result.code == 2 and "--block 'mobile' is not valid" in result.err_text


def test_a_preset_student_gets_its_own_default_run_name(cli, teacher_run):
    common = ("--teacher", "teacher", "--direction", "A2B", "--max-steps", "1", "--image-size", "24",
              "--load-size", "28", "--ndf", "4", "--device", "cpu", "--no-amp")  # fmt: skip
    assert cli("distill", *common).code == 0
    assert cli("distill", *common, "--preset", "fast").code == 0
    assert paths.run_path("teacher-A2B-3b").is_dir() and paths.run_path("teacher-A2B-3b-fast").is_dir()


def test_a_fastest_run_from_before_half_resolution_ends_resumes_with_its_own_full_ends_and_echo(cli, teacher_run):
    """Its config.json has no ``ends`` (it was the published layout) and ``echo`` 2 (the preset's before
    --echo 4): both stay so on --resume."""
    common = ("--teacher", "teacher", "--direction", "A2B", "--image-size", "24", "--load-size", "28",
              "--ndf", "4", "--device", "cpu", "--no-amp")  # fmt: skip
    assert (
        cli("distill", *common, "--max-steps", "1", "--preset", "fastest", "--ends", "full", "--name", "old").code == 0
    )
    config_file = paths.run_path("old") / "config.json"
    stored = json.loads(config_file.read_text())
    del stored["settings"]["ends"]
    assert stored["settings"]["echo"] == 4
    stored["settings"]["echo"] = 2
    config_file.write_text(json.dumps(stored))
    result = cli("distill", "--resume", "--name", "old", "--max-steps", "2")
    assert result.code == 0, result.err
    assert read_info(paths.run_path("old") / "G.safetensors").config.get("ends", "full") == "full"
    settings = json.loads(config_file.read_text())["settings"]
    assert settings.get("ends", "full") == "full" and settings["echo"] == 2


def test_a_fastest_run_from_before_whole_images_resumes_with_its_own_crops(cli, teacher_run):
    """A run whose config.json stores random crops (the preset's before whole images) keeps them."""
    common = ("--teacher", "teacher", "--direction", "A2B", "--image-size", "24", "--ndf", "4", "--device", "cpu",
              "--no-amp", "--preset", "fastest", "--name", "crops")  # fmt: skip
    assert cli("distill", *common, "--max-steps", "1").code == 0
    config_file = paths.run_path("crops") / "config.json"
    stored = json.loads(config_file.read_text())
    assert stored["settings"]["load_size"] == 24  # whole images: the preset's load size follows the crop
    stored["settings"]["load_size"] = 28
    config_file.write_text(json.dumps(stored))
    result = cli("distill", "--resume", "--name", "crops", "--max-steps", "2")
    assert result.code == 0, result.err
    assert json.loads(config_file.read_text())["settings"]["load_size"] == 28
