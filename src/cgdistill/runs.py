"""Run folders: which files a teacher or student run holds, and which model ``RUN|FILE`` means.

A teacher run holds ``G_A2B``, ``G_B2A``, ``D_A`` and ``D_B`` (an imported run: one or both
``G_*`` only); a student run holds ``G``. :func:`resolve_generator` is the one answer to "which
generator, which way?" for ``translate``, ``export``, ``compare`` and ``distill``:

- **The model.** ``RUN|FILE`` names a run (its name under the home, or its folder), a
  ``.safetensors`` generator file, or an ``.onnx`` file ``cgdistill export`` wrote (its metadata
  records the same direction, teacher and dataset; commands that need the PyTorch module refuse it
  through :func:`require_weights`). Named nothing, the command takes the newest run it can use:
  ``translate`` and ``export`` the newest student, else the newest teacher; ``distill`` the newest
  teacher; ``compare`` the newest student and the teacher it was distilled from. With
  ``--direction`` only runs with a generator for that direction count. The command says which
  model it picked.
- **The direction.** ``--direction`` when given. Otherwise the model decides: a model that
  translates one way (a student, a generator file, a teacher run with one generator) is used that
  way, and a teacher run with both generators has no default: the command stops with
  :func:`ambiguous_direction`'s sentence, the same for every command.
- **The role.** A student run given where a teacher is wanted (``--teacher``) is refused; a
  generator file may serve as either (a student when it records its teacher).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.onnxfile import is_onnx_file, read_onnx_info
from cgdistill.weights import DIRECTIONS, ModelInfo, read_info

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


ROLES = ("student", "teacher", "any")


def ambiguous_direction(run: Path) -> CgdistillError:
    """The one sentence every command gives when a teacher run's two generators leave the way open."""
    return CgdistillError(
        f"Teacher run {run.name} has generators for A2B and B2A; pass --direction A2B or --direction B2A."
    )


@dataclass
class ResolvedModel:
    """A generator file, its metadata, the run it belongs to (None for a loose file), and the direction
    the command uses it for."""

    path: Path
    info: ModelInfo
    run: Path | None
    role: str  # "teacher" or "student"
    direction: str

    @property
    def label(self) -> str:
        if self.run is not None:
            return f"{self.run.name} ({self.path.name})"
        return str(self.path)

    @property
    def is_onnx(self) -> bool:
        """An exported ONNX file: it translates (onnxruntime) but holds no PyTorch module."""
        return is_onnx_file(self.path)

    @property
    def source(self) -> str:
        """Where the model came from, as a student's metadata records its teacher: the run's name, or
        the file's absolute path."""
        return self.run.name if self.run is not None else str(self.path.resolve())


def require_weights(model: ResolvedModel, needs: str) -> None:
    """Refuse an exported ONNX file where the command needs the PyTorch module; ``needs`` begins the sentence."""
    if model.is_onnx:
        raise CgdistillError(
            f"{needs}; {model.path} is an ONNX export: pass the run or .safetensors file it was exported from."
        )


def _model_info(path: Path) -> ModelInfo:
    """The metadata of a model file: a ``.safetensors`` header, or an exported ONNX file's metadata."""
    return read_onnx_info(path) if is_onnx_file(path) else read_info(path)


def _one_way(path: Path, run: Path | None, direction: str | None, what: str) -> ResolvedModel:
    """A student run's generator or a loose generator file: it translates the way its file records."""
    info = _model_info(path)
    if info.kind != "generator":
        raise CgdistillError(f"{path} holds a {info.kind}, not a generator.")
    if direction and info.direction and info.direction != direction:
        raise CgdistillError(
            f"{what} translates {info.direction}, not {direction}; pass --direction {info.direction} or another model."
        )
    chosen = direction or info.direction
    if chosen is None:
        raise CgdistillError(f"{what} does not record which way it translates; pass --direction A2B or B2A.")
    # A loose file is a student when it names the teacher it learned from.
    role = "student" if run is not None or info.teacher else "teacher"
    return ResolvedModel(path, info, run, role, chosen)


def teacher_directions(run: Path) -> list[str]:
    """The directions a teacher run holds a generator for."""
    return [d for d in DIRECTIONS if (run / generator_file(d)).is_file()]


def _from_run(run: Path, direction: str | None, role: str) -> ResolvedModel:
    kind = run_kind(run)
    if kind == "student" and role == "teacher":
        raise CgdistillError(
            f"Run '{run.name}' is a student, not a teacher; pass the teacher run it was distilled from, "
            "or another teacher run or .safetensors file, to --teacher."
        )
    if kind == "student":
        return _one_way(run / STUDENT_FILE, run, direction, f"Student run {run.name}")
    if kind == "teacher":
        present = teacher_directions(run)
        if direction is None:
            if len(present) > 1:
                raise ambiguous_direction(run)
            direction = present[0]
        if direction not in present:
            raise CgdistillError(
                f"Teacher run {run.name} has no {direction} generator (it has {', '.join(present)}); "
                f"pass --direction {present[0]} or another model."
            )
        path = run / generator_file(direction)
        return ResolvedModel(path, read_info(path), run, "teacher", direction)
    raise CgdistillError(f"Run folder {run} holds no model file yet.")


def _may_pick(run: Path, kind: str, direction: str | None) -> bool:
    """Whether an automatic pick may take ``run``: a model of ``kind`` with a generator for ``direction``."""
    if run_kind(run) != kind:
        return False
    if direction is None:
        return True
    if kind == "teacher":
        return direction in teacher_directions(run)
    try:
        recorded = read_info(run / STUDENT_FILE).direction
    except CgdistillError:
        return False  # unreadable: it cannot be shown to fit
    return recorded in (None, direction)


def resolve_generator(spec: str | None, direction: str | None = None, role: str = "any") -> ResolvedModel:
    """``RUN|FILE`` and ``--direction`` -> the generator file and the way it is used (rules: module docstring).

    ``role`` is what the command wants when it picks by itself: ``student``, ``teacher`` or ``any``
    (the newest student, else the newest teacher).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if direction is not None:
        check_direction(direction)
    if spec:
        candidate = Path(spec).expanduser()
        if os.path.isfile(candidate) or (paths.looks_like_path(spec) and not os.path.isdir(candidate)):
            return _one_way(candidate, None, direction, str(candidate))
        run = paths.run_folder(spec)
        if not run.is_dir():
            raise CgdistillError(
                f"No run named '{spec}' in {paths.runs_dir()} and no such file; "
                "train one with `cgdistill train-teacher` or pass a .safetensors or .onnx path."
            )
        return _from_run(run, direction, role)
    kinds = ["student", "teacher"] if role == "any" else [role]
    for kind in kinds:
        for run in paths.list_runs():
            if _may_pick(run, kind, direction):
                return _from_run(run, direction, role)
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


def resolve_pair(
    teacher_spec: str | None, student_spec: str | None, direction: str | None
) -> tuple[ResolvedModel, ResolvedModel]:
    """``compare``'s two models: the student (the newest for the direction by default) and its teacher
    (``--teacher``, else the one the student was distilled from, else the newest teacher for the
    student's direction). Both are used in the student's direction."""
    needs = "compare needs the .safetensors model (it counts MACs and times every engine on the PyTorch module)"
    student = resolve_generator(student_spec, direction, role="student")
    require_weights(student, needs)
    direction = student.direction
    teacher = None
    if teacher_spec is None and student.info.teacher:
        try:
            teacher = resolve_generator(student.info.teacher, direction, role="teacher")
        except CgdistillError:
            teacher = None  # moved or deleted since: the newest teacher stands in, and compare says which
    if teacher is None:
        teacher = resolve_generator(teacher_spec, direction, role="teacher")
    require_weights(teacher, needs)
    if teacher.path.resolve() == student.path.resolve():
        raise CgdistillError(
            f"Teacher and student are the same model ({student.path}); pass another --student or --teacher."
        )
    return teacher, student


def _earlier_import(run: Path) -> bool:
    """Whether ``run`` is empty or holds only an earlier import (which a new import may replace)."""
    if not any(run.iterdir()):
        return True
    try:
        config = json.loads((run / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return is_imported_run(config)


def refuse_to_replace(run: Path, force: bool) -> bool:
    """Refuse to import over a run an import did not make, unless ``force``; returns whether ``run``
    holds such a run (which ``replacing_run`` then sets aside)."""
    if not run.exists():
        return False
    if not run.is_dir():
        raise CgdistillError(f"{run} is a file, not a run folder; pass another --name.")
    if _earlier_import(run):
        return False
    if not force:
        raise CgdistillError(
            f"Run '{run.name}' already exists in {run.parent} and is not an earlier import; pass --name to "
            "import under another name, or --force to replace the run."
        )
    return True


@contextlib.contextmanager
def replacing_run(run: Path, force: bool) -> Iterator[None]:
    """The block writes run folder ``run`` afresh: a run there that an import did not make is refused,
    or with ``force`` moved aside, deleted once the block succeeds and put back if it fails."""
    aside = None
    if refuse_to_replace(run, force):
        aside = run.with_name(f".{run.name}.replaced-{os.getpid()}")
        os.replace(run, aside)
    try:
        yield
    except BaseException:
        if aside is not None:
            shutil.rmtree(run, ignore_errors=True)
            os.replace(aside, run)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
