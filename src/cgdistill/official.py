"""Pretrained CycleGAN generators from other code bases, converted once into a teacher run.

Recognising what a file holds is ``cgdistill.layouts``' job (any public ResNet layout, several
networks per file, nothing in the file executed); this module turns the chosen generators into
``G_<direction>.safetensors`` files and a ``config.json`` under ``<home>/runs/NAME``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_write_text
from cgdistill.layouts import choose_generators, generator_state, inspect_weights
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.runs import CONFIG_FILE, generator_file
from cgdistill.weights import save_generator


def load_official_state_dict(
    pth_path: Path | str, key: str | None = None
) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """Our config and a state dict in our names for the one generator in the file (or named ``key``).

    The result loads into ``ResnetGenerator(config)`` with ``strict=True``.
    """
    report = inspect_weights(pth_path)
    chosen = choose_generators(report, key)
    if len(chosen) != 1:
        labels = ", ".join(c.network.label for c in chosen)
        raise CgdistillError(f"{report.path} holds {len(chosen)} generators ({labels}); pick one with --key NAME.")
    return generator_state(report, chosen[0].network)


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
