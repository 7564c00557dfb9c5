"""The config dataclasses are the one source of the train-teacher and distill flags: every field is an
option of its command with the same default, and every option is a field (or the CLI's own)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import typer.main

from cgdistill import paths
from cgdistill.cli.app import app
from cgdistill.data.toy import make_toy_dataset
from cgdistill.errors import CgdistillError
from cgdistill.train.config import DistillConfig, TeacherConfig, TrainConfig
from cgdistill.train.distill import distill
from cgdistill.train.flags import FLAG_KEY, PERF, RUN, flag, flag_specs, internal, resumable_fields
from cgdistill.train.teacher import train_teacher

COMMANDS = {"train-teacher": TeacherConfig, "distill": DistillConfig}
CLI_ONLY = {"resume"}  # options that continue a run rather than set one


def options(command: str) -> dict:
    """The click parameters of ``command`` by their Python name (the config field they fill)."""
    group = typer.main.get_command(app)
    return {param.name: param for param in group.commands[command].params if param.name != "help"}


def flag_fields(config_type: type) -> set[str]:
    """The fields that should be options: all but those marked ``internal()``."""
    marked_internal = {
        f.name for f in dataclasses.fields(config_type) if FLAG_KEY in f.metadata and f.metadata[FLAG_KEY] is None
    }
    return {f.name for f in dataclasses.fields(config_type)} - marked_internal


@pytest.mark.parametrize(("command", "config_type"), COMMANDS.items())
def test_every_field_is_an_option_and_every_option_a_field(command, config_type):
    assert set(options(command)) - CLI_ONLY == flag_fields(config_type)
    assert set(options(command)) >= CLI_ONLY


@pytest.mark.parametrize(("command", "config_type"), COMMANDS.items())
def test_each_option_has_its_fields_name_and_default(command, config_type):
    defaults = config_type()
    for name, param in options(command).items():
        if name in CLI_ONLY:
            continue
        flag_name = "--" + name.replace("_", "-")
        assert param.opts == [flag_name], name
        assert param.default == getattr(defaults, name), name
        if isinstance(getattr(defaults, name), bool) or param.secondary_opts:
            assert param.secondary_opts == ["--no-" + flag_name[2:]], name


def test_distill_keeps_its_own_defaults_for_shared_flags():
    shared = options("distill")
    assert (shared["batch_size"].default, shared["epochs"].default, shared["data"].default) == (4, 25, None)
    assert shared["lambda_cycle"].default is None  # the objective decides
    assert options("train-teacher")["lambda_cycle"].default == 10.0


def test_a_subclass_that_changes_a_default_keeps_the_bases_help_and_bounds():
    (teacher_batch,) = [s for s in flag_specs(TeacherConfig) if s.name == "batch_size"]
    (student_batch,) = [s for s in flag_specs(DistillConfig) if s.name == "batch_size"]
    assert student_batch.flag == teacher_batch.flag and student_batch.default == 4


@pytest.mark.parametrize("config_type", COMMANDS.values())
def test_defaults_lie_within_the_flags_bounds_and_choices(config_type):
    for spec in flag_specs(config_type):
        if spec.default is None:
            continue
        if spec.flag.min is not None:
            assert spec.default >= spec.flag.min, spec.name
        if spec.flag.max is not None:
            assert spec.default <= spec.flag.max, spec.name
        allowed = spec.allowed()
        if allowed is not None:
            assert spec.default in allowed, spec.name


@pytest.mark.parametrize("config_type", COMMANDS.values())
def test_only_run_and_device_settings_may_change_on_resume(config_type):
    # A training flag changes the recipe's mathematics; a resumed run keeps the stored one.
    for spec in flag_specs(config_type):
        if spec.flag.resumable:
            assert spec.flag.panel in (RUN, PERF), spec.name
    assert {"max_steps", "device", "save_every"} <= resumable_fields(config_type)
    assert not {"lr", "beta1", "flip", "blocks", "seed", "data"} & resumable_fields(config_type)


def test_a_field_must_declare_its_flag_or_say_it_has_none():
    @dataclass
    class Undeclared(TrainConfig):
        secret: int = 3

    with pytest.raises(TypeError, match="Undeclared.secret declares neither flag"):
        flag_specs(Undeclared)

    @dataclass
    class WithInternal(TrainConfig):
        secret: int = field(default=3, metadata=internal())
        extra: int = field(default=1, metadata=flag("An extra.", panel=RUN, resumable=True))

    names = [spec.name for spec in flag_specs(WithInternal)]
    assert "secret" not in names and names[0] == "extra"  # the class's own flags come first
    assert "extra" in resumable_fields(WithInternal)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("train-teacher", ["--norm", "group"], "--norm 'group' is not valid; use one of instance, instance-affine, batch."),
        ("train-teacher", ["--upsample", "pixel"], "--upsample 'pixel' is not valid; use deconv or resize-conv."),
        ("train-teacher", ["--amp-dtype", "fp8"], "--amp-dtype 'fp8' is not valid; use bf16 or fp16."),
        ("train-teacher", ["--compile-mode", "max"], "--compile-mode 'max' is not valid; use default or reduce-overhead."),
        ("distill", ["--init", "zeros"], "--init 'zeros' is not valid; use one of copy, copy-outer, random."),
        ("distill", ["--objective", "style"], "--objective 'style' is not valid; use fidelity or domain."),
        ("distill", ["--direction", "AtoB"], "--direction 'AtoB' is not valid; use A2B or B2A."),
        ("distill", ["--preset", "tiny"], "--preset 'tiny' is not valid; use one of default, fast, fastest."),
    ],
)  # fmt: skip
def test_a_value_outside_a_flags_choices_is_one_sentence(cli, command, args, message):
    result = cli(command, *args)
    assert result.code == 2
    assert message in result.err_text
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("train", "config", "message"),
    [
        (train_teacher, TeacherConfig(amp_dtype="half"), "--amp-dtype 'half' is not valid; use bf16 or fp16."),
        (train_teacher, TeacherConfig(compile_mode="max"), "--compile-mode 'max' is not valid; use default or reduce-overhead."),
        (train_teacher, TeacherConfig(image_size=30, load_size=32), "--image-size 30 is not a multiple of 4; use e.g. 28."),
        (distill, DistillConfig(preset="tiny"), "--preset 'tiny' is not valid; use one of default, fast, fastest."),
        (distill, DistillConfig(objective="style"), "--objective 'style' is not valid; use fidelity or domain."),
    ],
)  # fmt: skip
def test_the_library_refuses_what_the_command_line_refuses_before_any_work(train, config, message):
    with pytest.raises(CgdistillError) as refused:
        train(config)
    assert str(refused.value) == message
    assert not paths.runs_dir().is_dir() or not any(paths.runs_dir().iterdir())


def test_a_value_outside_a_flags_bounds_is_a_usage_error(cli):
    result = cli("train-teacher", "--beta1", "1.5")
    assert result.code == 2
    assert "--beta1" in result.err


def test_adam_betas_and_flip_reach_the_stored_config(cli, home):
    make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=2, n_test=1)
    result = cli(
        "train-teacher", "--data", "toy", "--name", "betas", "--max-steps", "1", "--image-size", "24",
        "--load-size", "28", "--blocks", "1", "--ngf", "8", "--ndf", "4", "--device", "cpu", "--no-amp",
        "--workers", "0", "--beta1", "0.9", "--beta2", "0.99", "--no-flip",
    )  # fmt: skip
    assert result.code == 0, result.err
    settings = json.loads((paths.run_path("betas") / "config.json").read_text())["settings"]
    assert (settings["beta1"], settings["beta2"], settings["flip"]) == (0.9, 0.99, False)


def test_a_distill_run_stored_with_the_teacher_only_fuse_passes_still_loads():
    # Distill runs stored fuse_passes before it became a teacher-only setting.
    config = DistillConfig.from_dict({"fuse_passes": None, "blocks": 2, "objective": "fidelity"})
    assert config.blocks == 2 and not hasattr(config, "fuse_passes")
