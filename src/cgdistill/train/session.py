"""What a training command does around the loop: run folder, config.json, data, runtime, resume.

Shared by ``train_teacher`` and ``distill`` so that both refuse to overwrite a run, resume the
same way and store their resolved settings in the same place.
"""

from __future__ import annotations

import contextlib
import json
import shutil
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
from cgdistill.runs import CONFIG_FILE, METRICS_FILE
from cgdistill.train.config import TrainConfig
from cgdistill.train.loop import Observer
from cgdistill.train.plan import Plan, config_stamp
from cgdistill.train.runtime import Runtime, broadcast_from_main, setup_runtime
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


def _holds_work(run_dir: Path) -> bool:
    """Whether a run folder holds anything a new run would destroy: a model file or a checkpoint."""
    return any(run_dir.glob("*.safetensors")) or latest_checkpoint(run_dir) is not None


def refuse_existing_run(run_dir: Path, rank: int) -> None:
    """Refuse to start a new run in a folder that holds a model or a checkpoint (``--resume`` continues it).

    Under torchrun rank 0 answers for all: it creates the folder moments later (open_session), so
    a rank that looked after that would otherwise refuse a run that is its own.
    """
    if broadcast_from_main(rank == 0 and run_dir.is_dir() and _holds_work(run_dir)):
        raise CgdistillError(
            f"Run '{run_dir.name}' already exists in {paths.runs_dir()}; pass --resume to continue it, or another --name."
        )


def refuse_changed_run(plan: Plan, rank: int) -> None:
    """On ``--resume``, under the lock: refuse when another process rewrote config.json after the plan read it.

    The plan reads the stored settings before the lock is taken, so a run that another process
    resumed with other flags, or finished, in between would otherwise continue on stale settings.
    """
    changed = rank == 0 and plan.resume and config_stamp(plan.run_dir) != plan.config_stamp
    if broadcast_from_main(changed):
        raise CgdistillError(
            f"Run '{plan.run_dir.name}' was changed by another process while this command started "
            f"(its {CONFIG_FILE} was rewritten); run the command again."
        )


@contextlib.contextmanager
def writing_run(run_dir: Path, rank: int, observer: Observer) -> Iterator[None]:
    """Hold the run's lock (runlock.py) for the whole job, from the check that the run may be written
    to the last checkpoint: a second writer of the run is refused before it writes anything.

    Under torchrun rank 0 holds it and answers for all, so every rank refuses alike (the caller has
    joined the process group: ``join_process_group``).
    """
    lock, refusal = None, None
    if rank == 0:
        try:
            lock = lock_run(run_dir)
        except CgdistillError as exc:
            refusal = exc
    if broadcast_from_main(refusal is not None):
        raise refusal or CgdistillError(f"Run '{run_dir.name}' is being written by another process; rank 0 says which.")
    try:
        note = taken_over_note(run_dir, lock) if lock is not None else None
        if note:
            observer.message(note)
        yield
    finally:
        if lock is not None:
            lock.release()


def open_session(
    plan: Plan,
    kind: str,
    *,
    observer: Observer,
    domains: tuple[str, ...] = ("A", "B"),
    primary: str = "A",
) -> Session:
    """Everything before the first step, as the plan says: folders, config.json, runtime and the dataset."""
    config, run_dir, data_dir, resume = plan.config, plan.run_dir, plan.data_dir, plan.resume
    runtime = setup_runtime(config)
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
