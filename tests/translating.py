"""The translate pipelines called on an in-memory model, as `cgdistill translate` calls them on a file's.

The command plans names (``worklist``) and builds a runner (``policy``) from a model file; tests that
hold a model in memory do the same two steps here, then call the pipeline under test.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cgdistill.imagefiles import TranslateResult, translate_files
from cgdistill.policy import Runner
from cgdistill.video import VideoResult, translate_video
from cgdistill.worklist import find_videos, plan_outputs, plan_work

CPU = torch.device("cpu")


def translate_folder(
    model: nn.Module,
    files: list[Path],
    output_dir: Path,
    direction: str = "A2B",
    *,
    device: torch.device = CPU,
    tile: str | int = "auto",
    max_memory: int | None = None,
    **options,
) -> TranslateResult:
    """``files`` into ``output_dir`` with ``model`` as it is (its precision is its own)."""
    outputs, _ = plan_outputs(files, output_dir, direction)
    output_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner.for_model(model, device, tile=tile, max_memory=max_memory)
    return translate_files(runner, files, outputs, **options)


def translate_clip(
    model: nn.Module,
    clip: Path,
    output_dir: Path,
    direction: str = "A2B",
    *,
    device: torch.device = CPU,
    tile: str | int = "auto",
    max_memory: int | None = None,
    **options,
) -> VideoResult:
    """The video ``clip`` into ``output_dir`` under the name `cgdistill translate` gives it."""
    work = plan_work([clip], find_videos([clip]), output_dir, direction)
    runner = Runner.for_model(model, device, tile=tile, max_memory=max_memory)
    return translate_video(runner, clip, work.videos[0].output, **options)
