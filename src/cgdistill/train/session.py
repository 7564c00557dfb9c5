"""What a training command does around the loop: run folder, config.json, data, runtime, resume.

Shared by ``train_teacher`` and ``distill`` so that both refuse to overwrite a run, resume the
same way and store their resolved settings in the same place.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from cgdistill import __version__, paths
from cgdistill.data.unpaired import UnpairedDataset
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_write_text
from cgdistill.runs import CONFIG_FILE
from cgdistill.train.config import RESUMABLE_FIELDS, TrainConfig
from cgdistill.train.loop import Observer
from cgdistill.train.runtime import Runtime, join_process_group, main_decides, setup_runtime
from cgdistill.train.state import latest_checkpoint


@dataclass
class Session:
    config: TrainConfig
    run_dir: Path
    data_dir: Path
    dataset: UnpairedDataset
    runtime: Runtime
    resume: bool


def dataset_label(data_dir: Path, spec: str) -> str:
    """The dataset's name for metadata: its registered name, else the folder name."""
    return spec if paths.dataset_path(spec) == data_dir else data_dir.name


def resolve_config(
    config: TrainConfig, kind: str, resume: bool, default_name: str, given: set[str] | None = None
) -> tuple[TrainConfig, Path]:
    """Pick the run folder; on resume, take the stored settings plus those of the ``given`` flags that
    may change (``RESUMABLE_FIELDS``); ``max_steps`` always comes from the command line.

    Under torchrun a new run joins the process group here, so that all ranks agree on refusing it.
    """
    name = config.name or default_name
    if "/" in name or name.startswith(".") or not name.strip():
        raise CgdistillError(f"Run name {name!r} is not valid; use letters, digits, '-' and '_'.")
    run_dir = paths.run_path(name)
    if resume:
        stored_path = run_dir / CONFIG_FILE
        if not stored_path.is_file():
            raise CgdistillError(f"There is no run named '{name}' to resume in {paths.runs_dir()}; check --name.")
        stored = json.loads(stored_path.read_text())
        if stored.get("kind") != kind:
            raise CgdistillError(f"Run '{name}' is a {stored.get('kind')} run, not a {kind} run; check --name.")
        merged = dict(stored["settings"])
        for key in (given or set()) & set(RESUMABLE_FIELDS):
            merged[key] = getattr(config, key)
        merged["max_steps"] = config.max_steps
        return type(config).from_dict(merged), run_dir
    # Under torchrun rank 0 answers for all: it creates the folder moments later (open_session), so
    # a rank that looked after that would otherwise refuse a run that is its own.
    rank, _, _ = join_process_group(config.device)
    if main_decides(rank == 0 and run_dir.exists() and any(run_dir.iterdir())):
        raise CgdistillError(
            f"Run '{name}' already exists in {paths.runs_dir()}; pass --resume to continue it, or another --name."
        )
    config.name = name
    return config, run_dir


def open_session(
    config: TrainConfig,
    kind: str,
    *,
    resume: bool,
    observer: Observer,
    norm: str,
    domains: tuple[str, ...] = ("A", "B"),
) -> Session:
    """Everything before the first step: folders, config.json, runtime and the dataset."""
    data_dir = paths.resolve_data(config.data)
    runtime = setup_runtime(config, norm=norm)
    run_dir = paths.run_path(config.name)
    if resume and latest_checkpoint(run_dir) is None:
        raise CgdistillError(
            f"Run '{config.name}' has no complete checkpoint yet; start it again under another --name."
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
        )
    if runtime.is_main:
        for text in dataset.warnings:
            observer.message(f"Warning: {text}")
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_config(run_dir, kind, config, data_dir)
            for leftover in ("state", "samples"):
                shutil.rmtree(run_dir / leftover, ignore_errors=True)
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
