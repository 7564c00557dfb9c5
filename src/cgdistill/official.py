"""Pretrained CycleGAN generators from other code bases, converted once into a teacher run.

Recognising what a file holds is ``cgdistill.layouts``' job (any public ResNet layout, several
networks per file, nothing in the file executed); this module turns the chosen generators into
``G_<direction>.safetensors`` files and a ``config.json`` under ``<home>/runs/NAME``.
``download_pretrained`` fetches a published one first (``download --pretrained``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cgdistill import paths
from cgdistill.data.download import downloads_dir, fetch, part_path
from cgdistill.data.registry import PRETRAINED, PretrainedEntry, check_name, get_pretrained
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_write_text, not_a_file_reason
from cgdistill.layouts import choose_generators, generator_state, inspect_weights
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.runlock import hold_run
from cgdistill.runs import CONFIG_FILE, check_direction, generator_file, refuse_to_replace, replacing_run
from cgdistill.weights import save_generator


@dataclass
class ImportedGenerator:
    """One generator written into the run: where from, and what decided its direction."""

    direction: str
    network: str | None  # its name in the source file; None when it was the whole file
    layout: str  # the implementation it was recognised as (a name in cgdistill.layouts.known)
    layout_title: str
    decided_by: str  # "--direction", "its name" or "default"
    config: GeneratorConfig
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    run: Path
    generators: list[ImportedGenerator]

    @property
    def directions(self) -> list[str]:
        return [g.direction for g in self.generators]


def import_official(
    pth_path: Path | str,
    name: str,
    direction: str | None = None,
    dataset: str | None = None,
    key: str | None = None,
    default_direction: str = "A2B",
) -> ImportResult:
    """Convert a file's generator(s) into teacher run ``name`` holding ``G_<direction>.safetensors``.

    ``key`` picks one network of a multi-network file; ``direction`` says (or, for a file with both
    directions, picks) what the generator maps; ``default_direction`` applies when neither it nor the
    network's name says. Everything is converted before anything is written, and every file is
    written atomically, so a refused file leaves no run behind.
    """
    pth_path = Path(pth_path)
    report = inspect_weights(pth_path)
    chosen = choose_generators(report, key, direction, default_direction)
    converted = []
    for choice in chosen:
        config, state = generator_state(report, choice.network)
        generator = ResnetGenerator(config)
        generator.load_state_dict(state, strict=True)
        converted.append((choice, generator.eval()))

    run = paths.run_path(name)
    run.mkdir(parents=True, exist_ok=True)
    imported = []
    for choice, generator in converted:
        found = choice.network.generator
        assert found is not None  # generator_state refused anything else
        extra = {"source": "imported", "source_file": pth_path.name, "layout": found.layout.name}
        if choice.network.path:
            extra["network"] = choice.network.path
        save_generator(
            generator, run / generator_file(choice.direction), direction=choice.direction, dataset=dataset, extra=extra
        )
        imported.append(
            ImportedGenerator(
                choice.direction,
                choice.network.path or None,
                found.layout.name,
                found.layout.title,
                choice.decided_by,
                found.config,
                found.notes,
            )
        )
    run_config = {
        "kind": "teacher",
        "source": "imported-pretrained",
        "name": name,
        "dataset": dataset,
        "source_file": pth_path.name,
        "generators": {
            g.direction: {
                "network": g.network,
                "layout": g.layout,
                "config": g.config.to_dict(),
            }
            for g in imported
        },
    }
    atomic_write_text(run / CONFIG_FILE, json.dumps(run_config, indent=2, sort_keys=True) + "\n")
    return ImportResult(run, imported)


# --- the published generators: fetched (data/download.py), then imported as above --------------------------------------------------------------------


@dataclass
class PretrainedResult:
    """What ``download_pretrained`` stored: the new teacher run and the weights it came from."""

    name: str
    run: Path
    weights: Path
    directions: list[str]
    dataset: str | None
    entry: PretrainedEntry | None
    downloaded: bool
    generators: list[ImportedGenerator] = field(default_factory=list)  # one per direction imported


def download_pretrained(
    name: str,
    *,
    run_name: str | None = None,
    from_file: Path | str | None = None,
    url: str | None = None,
    direction: str | None = None,
    force: bool = False,
    progress: bool = True,
    retries: int = 4,
    key: str | None = None,
) -> PretrainedResult:
    """Fetch an official CycleGAN generator (or take ``from_file``) and import it as teacher run NAME.

    The direction is ``direction`` when given, else what the network's name says (``G_AB``), else
    the registry's for known names, else A2B; it is recorded in the model file so ``translate`` knows
    which domain the generator reads. ``key`` picks one network of a file that holds several. The run
    is ``run_name`` (default NAME); a run there that is not an earlier import is kept unless ``force``.
    """
    check_name(name)
    run_dir = paths.run_path(run_name if run_name is not None else name)
    # One writer per run (runlock.py): held from the first check to the end of the replacement.
    with hold_run(run_dir):
        return _download_pretrained(name, run_dir, from_file, url, direction, force, progress, retries, key)


def _download_pretrained(
    name: str,
    run_dir: Path,
    from_file: Path | str | None,
    url: str | None,
    direction: str | None,
    force: bool,
    progress: bool,
    retries: int,
    key: str | None,
) -> PretrainedResult:
    refuse_to_replace(run_dir, force)  # before downloading anything
    if url and from_file:
        raise CgdistillError("Pass either --url or --from-file, not both.")
    if direction is not None:
        check_direction(direction)
    entry = PRETRAINED.get(name) if (url or from_file) else get_pretrained(name)
    default_direction = entry.direction if entry else "A2B"
    dataset = entry.dataset if entry else None

    downloaded = False
    if from_file is not None:
        weights = Path(from_file).expanduser()
        if not os.path.isfile(weights):
            raise CgdistillError(
                f"Weights file {weights} {not_a_file_reason(weights)}; check the path given to --from-file."
            )
    else:
        weights = downloads_dir() / f"{name}.pth"
        if force:
            weights.unlink(missing_ok=True)
            part_path(weights).unlink(missing_ok=True)
        if not weights.is_file():
            source = url or (entry.url if entry else None)
            assert source is not None
            fetch(source, weights, description=f"{name}.pth", progress=progress, retries=retries)
            downloaded = True

    with replacing_run(run_dir, force):
        result = import_official(
            weights, run_dir.name, direction=direction, dataset=dataset, key=key, default_direction=default_direction
        )
    return PretrainedResult(name, result.run, weights, result.directions, dataset, entry, downloaded, result.generators)
