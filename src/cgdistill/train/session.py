"""What a training command does around the loop: run folder, config.json, data, runtime, resume.

Shared by ``train_teacher`` and ``distill`` so that both refuse to overwrite a run, resume the
same way and store their resolved settings in the same place.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import typing
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from cgdistill import __version__, paths
from cgdistill.data.unpaired import UnpairedDataset
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_write_text
from cgdistill.metadata import COMMON_FIELDS
from cgdistill.runlock import lock_run, taken_over_note
from cgdistill.runs import CONFIG_FILE, METRICS_FILE, is_imported_run
from cgdistill.train.config import TrainConfig
from cgdistill.train.flags import resumable_fields
from cgdistill.train.loop import Observer
from cgdistill.train.runtime import Runtime, broadcast_from_main, join_process_group, setup_runtime
from cgdistill.train.state import latest_checkpoint


@dataclass
class Session:
    config: TrainConfig
    run_dir: Path
    data_dir: Path
    dataset: UnpairedDataset
    runtime: Runtime
    resume: bool


def dataset_label(data_dir: Path, spec: str) -> str | None:
    """The dataset's name for metadata: its registered name, else the folder's name (None when the
    folder has no name the metadata schema accepts, such as the root)."""
    if not paths.looks_like_path(spec) and paths.dataset_path(spec) == data_dir:
        return spec
    try:
        return str(COMMON_FIELDS["dataset"].parse(data_dir.resolve().name))
    except ValueError:
        return None


def _fits(value: object, hint: object) -> bool:
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
        if field_name in hints and not _fits(value, hints[field_name]):
            raise CgdistillError(
                f"{stored_path} is damaged: setting '{field_name}' is {value!r}, not {_type_name(hints[field_name])}; "
                "restore the file, or start again under another --name."
            )
    return settings


def _holds_work(run_dir: Path) -> bool:
    """Whether a run folder holds anything a new run would destroy: a model file or a checkpoint."""
    return any(run_dir.glob("*.safetensors")) or latest_checkpoint(run_dir) is not None


def resolve_config(
    config: TrainConfig, kind: str, resume: bool, default_name: str, given: set[str] | None = None
) -> tuple[TrainConfig, Path]:
    """Pick the run folder; on resume, take the stored settings plus those of the ``given`` flags that
    may change (the fields whose flag is ``resumable``, train/config.py).

    The folder named by ``--name`` is the run: its name is never taken from the stored settings, so a
    copied or renamed run trains in its own folder. ``max_steps`` is stored, so a plain ``--resume``
    finishes the run it continues; ``--max-steps`` changes it. Library callers that pass no ``given``
    change the resumable settings they set to something other than the default.

    Under torchrun a new run joins the process group here, so that all ranks agree on refusing it.
    """
    name = paths.check_run_name(config.name if config.name is not None else default_name)
    run_dir = paths.run_path(name)
    if run_dir.exists() and not run_dir.is_dir():
        raise CgdistillError(f"{run_dir} is a file, not a run folder; pass another --name.")
    if resume:
        merged = dict(read_run_config(name, kind, type(config)))
        resumable = resumable_fields(type(config))
        if given is None:
            defaults = type(config)()
            given = {key for key in resumable if getattr(config, key) != getattr(defaults, key)}
        for key in given & resumable:
            merged[key] = getattr(config, key)
        merged["name"] = name
        return type(config).from_dict(merged), run_dir
    # Under torchrun rank 0 answers for all: it creates the folder moments later (open_session), so
    # a rank that looked after that would otherwise refuse a run that is its own.
    rank, _, _ = join_process_group(config.device)
    if broadcast_from_main(rank == 0 and run_dir.is_dir() and _holds_work(run_dir)):
        raise CgdistillError(
            f"Run '{name}' already exists in {paths.runs_dir()}; pass --resume to continue it, or another --name."
        )
    config.name = name
    return config, run_dir


@contextlib.contextmanager
def writing_run(config: TrainConfig, default_name: str, observer: Observer) -> Iterator[None]:
    """Hold the run's lock (runlock.py) for the whole job, from the check that the run may be written
    to the last checkpoint: a second writer of the run is refused before it reads or writes anything.

    Under torchrun rank 0 holds it and answers for all, so every rank refuses alike.
    """
    name = paths.check_run_name(config.name if config.name is not None else default_name)
    rank, _, _ = join_process_group(config.device)
    lock, refusal = None, None
    if rank == 0:
        try:
            lock = lock_run(paths.run_path(name))
        except CgdistillError as exc:
            refusal = exc
    if broadcast_from_main(refusal is not None):
        raise refusal or CgdistillError(f"Run '{name}' is being written by another process; rank 0 says which.")
    try:
        note = taken_over_note(paths.run_path(name), lock) if lock is not None else None
        if note:
            observer.message(note)
        yield
    finally:
        if lock is not None:
            lock.release()


def open_session(
    config: TrainConfig,
    kind: str,
    *,
    resume: bool,
    observer: Observer,
    norm: str,
    domains: tuple[str, ...] = ("A", "B"),
    primary: str = "A",
) -> Session:
    """Everything before the first step: folders, config.json, runtime and the dataset."""
    data_dir = paths.resolve_data(config.data)
    runtime = setup_runtime(config, norm=norm)
    run_dir = paths.run_path(config.name)
    if resume and latest_checkpoint(run_dir) is None:
        raise CgdistillError(
            f"Run '{config.name}' stopped before its first checkpoint, so there is nothing to resume; "
            "start it again with the same command without --resume."
        )
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        dataset = UnpairedDataset(
            data_dir,
            "train",
            load_size=config.load_size,
            image_size=config.image_size,
            flip=config.flip,
            seed=config.seed,
            domains=domains,
            primary=primary,
        )
    if runtime.is_main:
        for text in dataset.warnings:
            observer.message(f"Warning: {text}")
        run_dir.mkdir(parents=True, exist_ok=True)
        # On resume too: the settings it continues with (a longer --max-steps, say) become the run's own.
        write_config(run_dir, kind, config, data_dir)
        if not resume:
            # What a run that stopped before its first checkpoint left behind.
            for leftover in ("state", "samples", "tensorboard"):
                shutil.rmtree(run_dir / leftover, ignore_errors=True)
            (run_dir / METRICS_FILE).unlink(missing_ok=True)
    return Session(config, run_dir, data_dir, dataset, runtime, resume)


def write_config(run_dir: Path, kind: str, config: TrainConfig, data_dir: Path, **extra) -> None:
    record = {
        "kind": kind,
        "cgdistill_version": __version__,
        "dataset": dataset_label(data_dir, config.data),
        "data_dir": str(data_dir),
        "settings": config.to_dict(),
        **extra,
    }
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(record, indent=2) + "\n")


def fixed_sample_batch(dataset: UnpairedDataset, runtime: Runtime, count: int = 3) -> dict[str, torch.Tensor]:
    """The same few training pairs (epoch 0, first items) for every sample grid of a run."""
    items = [dataset[(0, i)] for i in range(min(count, len(dataset)))]
    return {key: runtime.to_device(torch.stack([item[key] for item in items])) for key in ("A", "B") if key in items[0]}
