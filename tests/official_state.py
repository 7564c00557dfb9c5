"""``load_official_state_dict``: the one generator of an official (or other public) file as our config
and a state dict in our names, without writing a run: what ``import_official`` converts, for the
tests that check the conversion itself. The package imports files whole (``cgdistill.official``)."""

from __future__ import annotations

from pathlib import Path

import torch

from cgdistill.errors import CgdistillError
from cgdistill.layouts import choose_generators, generator_state, inspect_weights
from cgdistill.nets import GeneratorConfig


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
