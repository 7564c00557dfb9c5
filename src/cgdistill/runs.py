"""Run folders: which files a teacher or student run holds, and how ``RUN|FILE`` resolves to a model.

A teacher run holds ``G_A2B``, ``G_B2A``, ``D_A`` and ``D_B`` (an imported run: one or both
``G_*`` only); a student run holds ``G``. When the user names no model, the most recent
suitable run is used and the caller says which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cgdistill import paths
from cgdistill.checkpoint import DIRECTIONS, ModelInfo, read_info
from cgdistill.errors import CgdistillError

STUDENT_FILE = "G.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
IMPORTED_SOURCES = ("imported-pretrained", "official-pretrained")
"""``config.json`` "source" of a run an import made (``official-pretrained``: imports before layouts)."""


def is_imported_run(config: object) -> bool:
    """Whether a run's parsed ``config.json`` says an import made it (nothing to resume, safe to re-import)."""
    return isinstance(config, dict) and config.get("source") in IMPORTED_SOURCES


def generator_file(direction: str) -> str:
    """File name of a teacher run's generator for ``direction``."""
    return f"G_{direction}.safetensors"


def discriminator_file(letter: str) -> str:
    """File name of a teacher run's discriminator ``D_A`` or ``D_B`` (``letter`` A or B).

    The name does not say which domain the network judges (the reference's D_A judges B; runs before
    issue 14 named them the other way): ask :func:`discriminator_judging` for that.
    """
    return f"D_{letter}.safetensors"


def target_domain(direction: str) -> str:
    return direction[-1]


def reverse(direction: str) -> str:
    return "B2A" if direction == "A2B" else "A2B"


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise CgdistillError(f"Direction {direction!r} is not valid; use A2B or B2A.")
    return direction


def run_kind(run: Path) -> str | None:
    """``student``, ``teacher`` or None for a folder that holds no model yet."""
    if (run / STUDENT_FILE).is_file():
        return "student"
    if any((run / generator_file(d)).is_file() for d in DIRECTIONS):
        return "teacher"
    return None


@dataclass
class ResolvedModel:
    """A generator file, its metadata, and the run it belongs to (None for a loose file)."""

    path: Path
    info: ModelInfo
    run: Path | None
    role: str  # "teacher" or "student"

    @property
    def label(self) -> str:
        if self.run is not None:
            return f"{self.run.name} ({self.path.name})"
        return str(self.path)

    @property
    def direction(self) -> str | None:
        return self.info.direction


def _from_run(run: Path, direction: str | None) -> ResolvedModel:
    kind = run_kind(run)
    if kind == "student":
        info = read_info(run / STUDENT_FILE)
        if direction and info.direction and info.direction != direction:
            raise CgdistillError(
                f"Student run {run.name} translates {info.direction}, not {direction}; "
                f"pass --direction {info.direction} or another model."
            )
        return ResolvedModel(run / STUDENT_FILE, info, run, "student")
    if kind == "teacher":
        present = [d for d in DIRECTIONS if (run / generator_file(d)).is_file()]
        if direction is None:
            if len(present) > 1:
                raise CgdistillError(f"Teacher run {run.name} has generators for A2B and B2A; pass --direction.")
            direction = present[0]
        if direction not in present:
            raise CgdistillError(
                f"Teacher run {run.name} has no {direction} generator (it has {', '.join(present)}); "
                "pass another --direction or model."
            )
        path = run / generator_file(direction)
        return ResolvedModel(path, read_info(path), run, "teacher")
    raise CgdistillError(f"Run folder {run} holds no model file yet.")


def resolve_generator(spec: str | None, direction: str | None = None, role: str = "any") -> ResolvedModel:
    """Resolve ``--model RUN|FILE``; with no spec pick the newest run of ``role`` for ``direction``.

    ``role`` is ``student``, ``teacher`` or ``any`` (students first, then teachers).
    """
    if direction is not None:
        check_direction(direction)
    if spec:
        candidate = Path(spec).expanduser()
        if os.path.isfile(candidate) or (paths.looks_like_path(spec) and not os.path.isdir(candidate)):
            info = read_info(candidate)
            if info.kind != "generator":
                raise CgdistillError(f"{candidate} holds a {info.kind}, not a generator.")
            if direction and info.direction and info.direction != direction:
                raise CgdistillError(
                    f"{candidate} translates {info.direction}, not {direction}; pass --direction {info.direction}."
                )
            return ResolvedModel(candidate, info, None, "student" if info.teacher else "teacher")
        run = paths.run_folder(spec)
        if not run.is_dir():
            raise CgdistillError(
                f"No run named '{spec}' in {paths.runs_dir()} and no such file; "
                "train one with `cgdistill train-teacher` or pass a .safetensors path."
            )
        return _from_run(run, direction)
    roles = ["student", "teacher"] if role == "any" else [role]
    for wanted in roles:
        for run in paths.list_runs():
            if run_kind(run) != wanted:
                continue
            try:
                return _from_run(run, direction)
            except CgdistillError:
                continue
    what = {"any": "model", "student": "student", "teacher": "teacher"}[role]
    for_dir = f" for {direction}" if direction else ""
    raise CgdistillError(
        f"No {what}{for_dir} found in {paths.runs_dir()}; train one (`cgdistill train-teacher`, `cgdistill distill`), "
        "import one (`cgdistill download --pretrained NAME`), or pass a path."
    )


def discriminator_judging(run: Path, domain: str) -> Path | None:
    """The teacher run's discriminator file that judges ``domain``'s images, or None when it has none.

    Files record that domain (``judges`` in their metadata). Files written before they did (before
    issue 14) judge the domain their name says, D_A domain A; a recorded domain wins over that
    convention, so a run half-rewritten by a newer version still finds the right file.
    """
    by_convention = None
    for letter in ("A", "B"):
        path = run / discriminator_file(letter)
        if not path.is_file():
            continue
        judges = read_info(path).judges
        if judges == domain:
            return path
        if judges is None and letter == domain:
            by_convention = path
    return by_convention
