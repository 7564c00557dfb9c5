"""`cgdistill train-teacher` and `cgdistill distill`, generated from their config dataclasses.

Every option of both commands is a field of ``TeacherConfig`` or ``DistillConfig`` (train/config.py),
which gives its name, default, help, panel, bounds, choices and resumability: add a flag there, not
here. This module turns those fields into Typer options, builds the config with ``Config(**values)``
and presents the run. Only ``--resume`` is the CLI's own.
"""

from __future__ import annotations

import inspect
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cgdistill.cli.app import app, note, show, styled, terminal_may_be_gone
from cgdistill.train.config import DistillConfig, TeacherConfig, TrainConfig
from cgdistill.train.flags import PANELS, RUN, FlagSpec, flag_specs

# The one option that is not a config field: it continues a run rather than setting one.
RESUME = inspect.Parameter(
    "resume",
    inspect.Parameter.KEYWORD_ONLY,
    default=False,
    annotation=Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the run named by --name from its last checkpoint.", rich_help_panel=RUN
        ),
    ],
)


def given_flags(ctx: typer.Context) -> set[str]:
    """Names of the parameters the user set on the command line (resume keeps the rest)."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given.add(name)
    return given


def resume_command(ctx: typer.Context, command: str, run_name: str) -> str:
    """The command that continues this run: the run remembers its settings and its length, so only
    the launcher, a --home given on the command line, and the run's name are needed."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    words = [f"torchrun --nproc_per_node {world_size} -m cgdistill" if world_size > 1 else "cgdistill"]
    root = ctx.find_root()
    source = root.get_parameter_source("home")
    if source is not None and source.name == "COMMANDLINE" and root.params.get("home") is not None:
        words.append(f"--home {shlex.quote(str(root.params['home']))}")
    words.append(f"{command} --name {shlex.quote(run_name)} --resume")
    return " ".join(words)


def run_training(
    ctx: typer.Context, job: Callable[..., Path], config: TrainConfig, *, resume: bool, command: str
) -> None:
    """Run a training function with the live display, turning a stop signal (Ctrl-C, TERM, HUP) into
    a resume hint and the exit status the signal asks for (train/stopping.py, ``TrainingInterrupted``)."""
    from cgdistill.cli.progress import RichObserver
    from cgdistill.train.stopping import TrainingInterrupted, signal_name

    observer = RichObserver()
    try:
        run_dir = job(config, resume=resume, observer=observer, given=given_flags(ctx))
    except TrainingInterrupted as stop:
        with terminal_may_be_gone():
            note(
                styled(
                    "Stopped by {} at step {}; the checkpoint is saved. Resume with: [bold]{}[/]",
                    signal_name(stop.signum),
                    stop.step,
                    resume_command(ctx, command, stop.run_dir.name),
                )
            )
        raise typer.Exit(stop.exit_code) from None
    with terminal_may_be_gone():
        show(styled("Run [bold]{}[/] is in {}", run_dir.name, run_dir))


def option(spec: FlagSpec) -> inspect.Parameter:
    """The Typer option of one config field: ``--field-name`` (``--x/--no-x`` for a bool)."""
    declaration = f"{spec.option}/--no-{spec.option[2:]}" if spec.is_switch else spec.option
    info = typer.Option(
        declaration,
        help=spec.flag.help,
        min=spec.flag.min,
        max=spec.flag.max,
        show_default=spec.default is not None,  # the help says what an unset value means
        rich_help_panel=spec.flag.panel,
    )
    return inspect.Parameter(
        spec.name, inspect.Parameter.KEYWORD_ONLY, default=spec.default, annotation=Annotated[spec.type, info]
    )


def training_command(
    command: str, config_type: type[TrainConfig], job: Callable[..., Path], summary: str
) -> Callable[..., None]:
    """Register ``command`` with one option per flag of ``config_type`` (grouped by panel), plus ``--resume``."""
    # Within a panel, what is fixed for the run comes before what may change on --resume.
    specs = sorted(flag_specs(config_type), key=lambda spec: (PANELS.index(spec.flag.panel), spec.flag.resumable))

    def run_command(ctx: typer.Context, resume: bool, **values: object) -> None:
        run_training(ctx, job, config_type(**values), resume=resume, command=command)

    parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for spec in specs:
        parameters.append(option(spec))
        if spec.name == "name":  # --resume continues the run --name names
            parameters.append(RESUME)
    run_command.__signature__ = inspect.Signature(parameters)
    run_command.__doc__ = summary
    run_command.__name__ = command.replace("-", "_") + "_command"
    return app.command(command)(run_command)


def _train_teacher(config: TeacherConfig, **options: object) -> Path:
    from cgdistill.train import teacher

    return teacher.train_teacher(config, **options)


def _distill(config: DistillConfig, **options: object) -> Path:
    from cgdistill.train import distill

    return distill.distill(config, **options)


# The trainers are imported when a command runs (they import torch) and looked up there
# (module.function), so a test may stand in for them.
training_command(
    "train-teacher",
    TeacherConfig,
    _train_teacher,
    "Train a CycleGAN teacher with the published recipe (ResNet-9, PatchGAN, LSGAN, cycle, identity).",
)
training_command(
    "distill",
    DistillConfig,
    _distill,
    "Distill a teacher generator into a student with fewer residual blocks (and optionally fewer channels).",
)
