"""Where cgdistill keeps datasets and runs, and how names on the command line become folders."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from cgdistill.errors import CgdistillError

HOME_ENV = "CGDISTILL_HOME"

# The split folders every dataset trains on (data/registry.py adds the test splits).
TRAIN_SPLITS = ("trainA", "trainB")

_home_override: Path | None = None


def set_home(path: Path | str | None) -> None:
    """Make ``path`` the home for this process (the CLI's ``--home``); None restores the default.

    A home that exists must be a folder (a missing one is created when something is stored).
    """
    global _home_override
    if path is not None:
        path = Path(path).expanduser()
        if os.path.exists(path) and not os.path.isdir(path):
            raise CgdistillError(f"The home {path} is a file, not a folder; pass a folder to --home (or {HOME_ENV}).")
    _home_override = path


@contextlib.contextmanager
def using_home(path: Path | str) -> Iterator[Path]:
    """Make ``path`` the home inside the block, then restore whatever was set before."""
    previous = _home_override
    set_home(path)
    try:
        yield Path(path)
    finally:
        set_home(previous)


def home() -> Path:
    """The data/model root: ``--home``, else ``$CGDISTILL_HOME``, else the platformdirs cache dir."""
    if _home_override is not None:
        return _home_override
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("cgdistill"))


def datasets_dir() -> Path:
    return home() / "datasets"


def runs_dir() -> Path:
    return home() / "runs"


def models_dir() -> Path:
    """Auxiliary weights (the FID Inception network, ...)."""
    return home() / "models"


def dataset_path(name: str) -> Path:
    return datasets_dir() / name


MAX_RUN_NAME = 100  # file systems allow 255 bytes; room for suffixes such as "-2" and UTF-8


def check_run_name(name: str) -> str:
    """A run name is one visible folder name under ``runs/``: never a path, hidden, empty or too long."""
    if not name.strip() or "/" in name or "\\" in name or name.startswith(".") or not name.isprintable():
        raise CgdistillError(f"Run name {name!r} is not valid; use letters, digits, '-' and '_'.")
    if len(name) > MAX_RUN_NAME:
        raise CgdistillError(f"Run name {name[:20]!r}... is {len(name)} characters long; use at most {MAX_RUN_NAME}.")
    return name


def run_path(name: str) -> Path:
    """The folder of run ``name`` (the name is checked: it can only name a folder directly in ``runs/``)."""
    return runs_dir() / check_run_name(name)


def looks_like_path(spec: str) -> bool:
    """``--model``/``--teacher`` values with a separator or a model suffix name files or folders, not runs."""
    return "/" in spec or os.sep in spec or spec.endswith((".safetensors", ".onnx")) or spec.startswith("~")


def run_folder(spec: str) -> Path:
    """A run given by its name (a folder in ``runs/``) or by the path of its folder."""
    if looks_like_path(spec):
        return Path(spec).expanduser()
    return run_path(spec)


def resolve_data(name_or_path: str) -> Path:
    """Turn ``--data NAME|PATH`` into a folder: an existing path wins, else a dataset in the home."""
    candidate = Path(name_or_path).expanduser()
    if os.path.isdir(candidate):
        return candidate
    registered = dataset_path(name_or_path)
    if os.path.isdir(registered):
        return registered
    if os.path.exists(candidate):
        raise CgdistillError(
            f"--data {candidate} is a file, not a dataset folder; pass a folder with trainA/ and trainB/."
        )
    if os.sep in name_or_path or name_or_path.startswith("."):
        raise CgdistillError(f"Dataset folder {candidate} does not exist.")
    raise CgdistillError(
        f"Dataset '{name_or_path}' is not downloaded yet in {datasets_dir()}; "
        f"run `cgdistill download {name_or_path}` first, or pass a folder path to --data."
    )


@dataclass(frozen=True)
class DataChoice:
    """What ``--data`` came to: the value to record, its folder, and how it was chosen."""

    spec: str  # a dataset name under the home, or the folder given
    folder: Path
    reason: str | None = None  # how it was picked when --data was not given; None when it was


def has_layout(folder: Path, required: tuple[str, ...] = TRAIN_SPLITS) -> bool:
    """Whether ``folder`` holds every split folder in ``required`` (trainA and trainB by default)."""
    return folder.is_dir() and all((folder / split).is_dir() for split in required)


def downloaded_datasets() -> list[Path]:
    """Dataset folders under the home that can be trained on (trainA/ and trainB/), newest first.

    Newest by the folder's modification time: a download, an extraction or the toy generator
    finishes the folder in one go, so that is when the dataset arrived.
    """
    root = datasets_dir()
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if not p.name.startswith(".") and has_layout(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def choose_data(
    given: str | None, recorded: Sequence[tuple[str | None, str]] = (), *, newest: bool = False
) -> DataChoice:
    """``--data NAME|PATH``; without it the first dataset a model records (``recorded``: pairs of
    a dataset name and whose it is, e.g. ``("toy", "the teacher")``), else, with ``newest``, the newest
    downloaded dataset. The one helper of train-teacher, distill and compare."""
    if given:
        return DataChoice(given, resolve_data(given))
    for name, owner in recorded:
        if name:
            return DataChoice(name, resolve_data(name), f"the dataset {owner} was trained on")
    if newest:
        found = downloaded_datasets()
        if not found:
            raise CgdistillError(
                f"No dataset is downloaded in {datasets_dir()} yet; run `cgdistill download toy` (made here in "
                "seconds) or `cgdistill download monet2photo`, or pass a folder with trainA/ and trainB/ to --data."
            )
        count = "the only dataset" if len(found) == 1 else f"the newest of {len(found)} datasets"
        return DataChoice(found[0].name, found[0], f"{count} in {datasets_dir()}; pass --data to choose")
    owners = [owner for _name, owner in recorded]
    verb = "records" if len(owners) == 1 else "record"
    raise CgdistillError(f"No --data given and {' and '.join(owners)} {verb} no dataset; pass --data NAME|PATH.")


def list_runs() -> list[Path]:
    """Run folders, most recently modified first."""
    root = runs_dir()
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(runs, key=lambda p: _run_mtime(p), reverse=True)


def _run_mtime(run: Path) -> float:
    times = [f.stat().st_mtime for f in run.glob("*.safetensors")]
    return max(times, default=run.stat().st_mtime)
