"""A training run's plan: from the flags and the stored run to the final config, in one place.

``plan_teacher`` and ``plan_distill`` are the only code that decides a run's settings before it
trains: the objective's loss weights, the preset's student shape, ``--data`` (resolved once), the
run's name and folder, and on ``--resume`` the stored settings (config.json, read once) with the
flags that may change (``resumable`` in train/config.py). They write nothing and touch no device or
process group: each step is a ``dataclasses.replace`` copy, and what they read is the run, the
datasets and (for distill) the teacher, through the loader the caller passes.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.runs import CONFIG_FILE, is_imported_run
from cgdistill.train.config import DistillConfig, TeacherConfig, TrainConfig
from cgdistill.train.flags import resumable_fields
from cgdistill.train.presets import preset_values

C = TypeVar("C", bound=TrainConfig)


@dataclass(frozen=True)
class Plan(Generic[C]):
    """What a training command will do: the final settings, where they are written and what they read."""

    config: C  # name, data, objective weights and preset filled in; on resume the stored settings
    run_dir: Path
    data_dir: Path  # --data, resolved once
    resume: bool
    notes: tuple[str, ...] = ()  # choices the user did not make and should hear about
    config_stamp: tuple[int, ...] | None = None  # config.json as read on resume (``config_stamp``)


class TeacherModel(Protocol):
    """What the plan needs of a loaded teacher (train/teacher_loading.py's ``Teacher``)."""

    source: str
    direction: str
    dataset: str | None
    step: int | None

    @property
    def ngf(self) -> int: ...


@dataclass(frozen=True)
class DistillPlan(Plan[DistillConfig]):
    teacher: TeacherModel | None = None
    domains: tuple[str, ...] = ("A", "B")  # the source domain first; the target's only where the data has it


def _matches_type(value: object, hint: object) -> bool:
    """Whether a JSON value has the type a config field declares (``int | None``, ``float``, ...)."""
    for kind in typing.get_args(hint) or (hint,):
        if kind is type(None) and value is None:
            return True
        if kind is bool and isinstance(value, bool):
            return True
        if kind in (int, float) and isinstance(value, kind if kind is int else (int, float)):
            return not isinstance(value, bool)
        if kind is str and isinstance(value, str):
            return True
    return False


def _type_name(hint: object) -> str:
    return " or ".join("None" if kind is type(None) else kind.__name__ for kind in typing.get_args(hint) or (hint,))


def read_run_config(name: str, kind: str, config_type: type[TrainConfig]) -> dict:
    """The stored settings of run ``name`` to resume, checked against ``config_type``'s fields.

    One sentence for each way the folder can fail to be a resumable run of ``kind``: missing, not a
    folder, a damaged config.json, an imported model (nothing to resume), another kind of run.
    """
    run_dir = paths.run_path(name)
    stored_path = run_dir / CONFIG_FILE
    if run_dir.exists() and not run_dir.is_dir():
        raise CgdistillError(f"{run_dir} is a file, not a run folder; check --name.")
    if not stored_path.is_file():
        raise CgdistillError(f"There is no run named '{name}' to resume in {paths.runs_dir()}; check --name.")
    try:
        stored = json.loads(stored_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CgdistillError(
            f"{stored_path} is not valid JSON ({exc}); the run cannot be resumed as it is: restore the file, "
            "or start again under another --name."
        ) from None
    if is_imported_run(stored):
        raise CgdistillError(
            f"Run '{name}' is an imported pretrained generator, not a training run: there is nothing to resume "
            f"(distill it with `cgdistill distill --teacher {name}`)."
        )
    if not isinstance(stored, dict) or not isinstance(stored.get("settings"), dict):
        raise CgdistillError(f"{stored_path} is not a run's settings (no 'settings' object); check --name.")
    if stored.get("kind") != kind:
        raise CgdistillError(f"Run '{name}' is a {stored.get('kind')} run, not a {kind} run; check --name.")
    settings = stored["settings"]
    hints = typing.get_type_hints(config_type)
    for field_name, value in settings.items():
        if field_name in hints and not _matches_type(value, hints[field_name]):
            raise CgdistillError(
                f"{stored_path} is damaged: setting '{field_name}' is {value!r}, not {_type_name(hints[field_name])}; "
                "restore the file, or start again under another --name."
            )
    return settings


def config_stamp(run_dir: Path) -> tuple[int, ...] | None:
    """config.json's inode, modification time and size (None: no file). Every write of it is an
    atomic replace (``fsutil.atomic_write_text``), so a rewrite gets a new inode even within one
    tick of the file system's clock.

    The plan reads a run before its lock is taken (``session.writing_run``); comparing this stamp,
    taken before the read, with one taken under the lock tells whether another process rewrote the
    settings in between (``session.refuse_changed_run``).
    """
    try:
        stat = (run_dir / CONFIG_FILE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def run_folder_for(name: str) -> Path:
    """The checked folder of run ``name``: a valid name, and not a plain file in the way."""
    run_dir = paths.run_path(name)
    if run_dir.exists() and not run_dir.is_dir():
        raise CgdistillError(f"{run_dir} is a file, not a run folder; pass another --name.")
    return run_dir


def resumed_config(flags: C, stored: dict, name: str, given: set[str] | None) -> C:
    """The stored settings plus those of the ``given`` flags that may change on ``--resume``.

    The folder named by ``--name`` is the run: its name is never taken from the stored settings, so a
    copied or renamed run trains in its own folder. ``max_steps`` is stored, so a plain ``--resume``
    finishes the run it continues; ``--max-steps`` changes it. Library callers that pass no ``given``
    change the resumable settings they set to something other than the default.
    """
    resumable = resumable_fields(type(flags))
    if given is None:
        defaults = type(flags)()
        given = {key for key in resumable if getattr(flags, key) != getattr(defaults, key)}
    merged = dict(stored)
    for key in given & resumable:
        merged[key] = getattr(flags, key)
    merged["name"] = name
    return type(flags).from_dict(merged)


def plan_teacher(flags: TeacherConfig, *, resume: bool = False, given: set[str] | None = None) -> Plan[TeacherConfig]:
    """The plan of ``train-teacher``: without ``--data`` the newest downloaded dataset (named in a
    note), the run named after the data, and on resume the stored settings."""
    flags.check()
    config, notes, chosen = flags, (), None
    if config.data is None and not (resume and config.name):
        chosen = paths.choose_data(None, newest=True)
        config = replace(config, data=chosen.spec)
        notes = (f"No --data given: using {chosen.spec}, {chosen.reason}.",)
    default_name = Path(config.data).name if config.data else "teacher"
    name = paths.check_run_name(config.name if config.name is not None else default_name)
    run_dir = run_folder_for(name)
    stamp = config_stamp(run_dir) if resume else None
    if resume:
        config = resumed_config(flags, read_run_config(name, "teacher", TeacherConfig), name, given)
    else:
        config = replace(config, name=name)
    data_dir = chosen.folder if chosen is not None and chosen.spec == config.data else paths.resolve_data(config.data)
    return Plan(config, run_dir, data_dir, resume, notes, stamp)


def plan_distill(
    flags: DistillConfig,
    load_teacher: Callable[[str | None, str | None], TeacherModel],
    *,
    resume: bool = False,
    given: set[str] | None = None,
) -> DistillPlan:
    """The plan of ``distill``: the teacher (the stored run's on resume), the objective's weights, the
    preset's shape, the data (the teacher's dataset by default), the run name from the teacher and
    the student's depth, and on resume the stored settings."""
    flags.check()
    stamp = stored = None
    if resume and flags.name is not None:
        stamp = config_stamp(paths.run_path(flags.name))  # before the read: a later rewrite shows (see config_stamp)
        stored = read_run_config(flags.name, "student", DistillConfig)
    # The stored run decides: a teacher file that records no dataset resumes on the --data it was given.
    source = stored if stored is not None else {key: getattr(flags, key) for key in ("teacher", "direction", "data")}
    teacher = load_teacher(source.get("teacher"), source.get("direction"))
    config = replace(flags, teacher=teacher.source, direction=teacher.direction, data=source.get("data"))
    config = replace(config, **config.objective_weights())
    config = replace(config, **preset_values(config, teacher.ngf, given))
    base = Path(teacher.source).stem if teacher.source.endswith(".safetensors") else teacher.source
    default_name = f"{base}-{teacher.direction}-{config.blocks}b" + (
        "" if config.preset == "default" else f"-{config.preset}"
    )
    name = paths.check_run_name(config.name if config.name is not None else default_name)
    run_dir = run_folder_for(name)
    if resume:
        if stored is None:
            stamp = config_stamp(run_dir)
            stored = read_run_config(name, "student", DistillConfig)
        config = resumed_config(flags, stored, name, given)
    else:
        config = replace(config, name=name, teacher_step=teacher.step)
    chosen = paths.choose_data(config.data, [(teacher.dataset, f"teacher {teacher.source}")])
    config = replace(config, data=chosen.spec)
    source_domain, target_domain = teacher.direction[0], teacher.direction[-1]
    has_target = (chosen.folder / f"train{target_domain}").is_dir()
    domains = (source_domain, target_domain) if has_target else (source_domain,)
    return DistillPlan(config, run_dir, chosen.folder, resume, config_stamp=stamp, teacher=teacher, domains=domains)
