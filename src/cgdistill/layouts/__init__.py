"""Generators trained elsewhere: what a weights file holds, and its generators in cgdistill's terms.

``reading`` opens any ``.pth``/``.pt``/``.ckpt``/``.safetensors`` without running code from it;
``networks`` finds the networks in it; ``structure`` recognises a CycleGAN ResNet generator from its
tensors' shapes and order; ``known`` names the public implementation and supplies the padding its
weights cannot show; ``convert`` renames and completes the tensors for cgdistill's generator.
Nothing here writes files (``cgdistill.official`` turns a generator into a teacher run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cgdistill.errors import CgdistillError
from cgdistill.layouts.convert import DoesNotFit, to_cgdistill_state
from cgdistill.layouts.known import LAYOUTS, UNRECOGNISED, Layout
from cgdistill.layouts.networks import WHOLE_FILE, Network, find_networks, matching
from cgdistill.layouts.reading import read_weights
from cgdistill.nets import GeneratorConfig
from cgdistill.runs import check_direction
from cgdistill.weights import FORMAT, ModelInfo, info_from_metadata

SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


@dataclass
class WeightsReport:
    """Everything ``cgdistill inspect`` shows about a file."""

    path: Path
    format: str
    tensors: int
    parameters: int
    networks: list[Network]
    metadata: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    cgdistill: ModelInfo | None = None  # the metadata of a model file cgdistill wrote

    @property
    def generators(self) -> list[Network]:
        return [n for n in self.networks if n.kind == "generator"]

    def to_dict(self) -> dict:
        """Plain JSON types, for ``cgdistill inspect --json``."""
        own = None
        if self.cgdistill is not None:
            info = self.cgdistill
            own = {
                "kind": info.kind,
                "arch": info.arch,
                "config": info.config,
                "direction": info.direction,
                "dataset": info.dataset,
                "image_size": info.image_size,
                "step": info.step,
                "teacher": info.teacher,
                "judges": info.judges,
                "extra": info.extra,
            }
        return {
            "path": str(self.path),
            "format": self.format,
            "tensors": self.tensors,
            "parameters": self.parameters,
            "networks": [_network_dict(n) for n in self.networks],
            "metadata": self.metadata,
            "skipped": self.skipped,
            "cgdistill": own,
        }


def _network_dict(network: Network) -> dict:
    found = network.generator
    return {
        "name": network.path,
        "kind": network.kind,
        "what": network.what,
        "summary": network.summary,
        "parameters": network.parameters,
        "tensors": network.tensors,
        "direction_from_name": network.direction,
        "layout": found.layout.name if found else None,
        "config": found.config.to_dict() if found else None,
        "notes": found.notes if found else [],
        "refusal": found.refusal if found else None,
    }


def inspect_weights(path: Path | str) -> WeightsReport:
    """Read a weights file (nothing in it runs) and say which networks it holds."""
    weights = read_weights(path)
    networks = find_networks(weights.tensors)
    parameters = sum(n.parameters for n in networks)
    own = None
    metadata = dict(weights.metadata)
    if weights.format == "safetensors" and metadata.get("format") == FORMAT:
        own = info_from_metadata(metadata, weights.path)
    return WeightsReport(
        weights.path, weights.format, len(weights.tensors), parameters, networks, metadata, weights.skipped, own
    )


def _holds(report: WeightsReport, network: Network) -> str:
    where = f"{report.path} holds" if network.path == "" else f"{report.path}: '{network.path}' is"
    return f"{where} {network.summary}"


def _listing(networks: list[Network]) -> str:
    return ", ".join(f"'{n.label}' ({n.what})" for n in networks)


@dataclass
class ChosenGenerator:
    """A generator to import, the direction it will map, and what decided that direction."""

    network: Network
    direction: str
    decided_by: str  # "--direction", "its name" or "default"


def choose_generators(
    report: WeightsReport, key: str | None = None, direction: str | None = None, default_direction: str = "A2B"
) -> list[ChosenGenerator]:
    """Which generators of the file to import, and as which direction.

    One generator: that one. ``key``: the network of that name. Two generators and no key: both,
    when their names say which maps A to B (``--direction`` then picks one of them). Anything else
    is a question for the user, asked in one sentence that lists what the file holds.
    """
    if direction is not None:
        check_direction(direction)
    generators = report.generators
    if key is not None:
        found = matching(report.networks, key)
        if not found:
            raise CgdistillError(
                f"{report.path} has no network named {key!r}; it holds {_listing(report.networks)}. "
                "Pass one of these names to --key."
            )
        if len(found) > 1:
            raise CgdistillError(
                f"{key!r} names {len(found)} networks in {report.path} ({', '.join(n.path for n in found)}); "
                "pass the full name to --key."
            )
        network = found[0]
        if network.kind != "generator":
            raise CgdistillError(f"{_holds(report, network)}, not a generator that cgdistill can import.")
        generators = [network]
    if not generators:
        if len(report.networks) == 1:
            network = report.networks[0]
            raise CgdistillError(f"{_holds(report, network)}; cgdistill imports CycleGAN ResNet generators only.")
        raise CgdistillError(f"{report.path} holds no CycleGAN ResNet generator; it holds {_listing(report.networks)}.")
    if len(generators) == 1:
        network = generators[0]
        if direction:
            return [ChosenGenerator(network, direction, "--direction")]
        if network.direction:
            return [ChosenGenerator(network, network.direction, "its name")]
        return [ChosenGenerator(network, check_direction(default_direction), "default")]
    if direction:
        says = [n for n in generators if n.direction == direction]
        if len(says) == 1:
            return [ChosenGenerator(says[0], direction, "its name")]
    said = [n.direction for n in generators]
    if not direction and len(generators) == 2 and sorted(d or "" for d in said) == ["A2B", "B2A"]:
        return [ChosenGenerator(n, d, "its name") for d in ("A2B", "B2A") for n in generators if n.direction == d]
    labels = ", ".join(n.label for n in generators)
    if not any(said):
        raise CgdistillError(
            f"{report.path} holds {len(generators)} generators ({labels}) whose names do not say which maps A to B; "
            "import one with --key NAME --direction A2B|B2A (and another the same way)."
        )
    raise CgdistillError(f"{report.path} holds {len(generators)} generators ({labels}); pick one with --key NAME.")


def generator_state(report: WeightsReport, network: Network) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """Config and state dict in cgdistill's names; refuses what our generator cannot compute."""
    found = network.generator
    if found is None:
        raise CgdistillError(f"{_holds(report, network)}, not a generator that cgdistill can import.")
    if found.refusal:
        raise CgdistillError(f"{_holds(report, network)}, but {found.refusal}; cgdistill cannot import it exactly.")
    try:
        return found.config, to_cgdistill_state(found)
    except DoesNotFit as reason:
        raise CgdistillError(f"{_holds(report, network)}, but {reason}.") from None


__all__ = [
    "LAYOUTS",
    "SUFFIXES",
    "UNRECOGNISED",
    "WHOLE_FILE",
    "ChosenGenerator",
    "Layout",
    "Network",
    "WeightsReport",
    "choose_generators",
    "generator_state",
    "inspect_weights",
]
