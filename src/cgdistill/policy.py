"""Translate's policy: which engine runs a model, and whether each image runs in one pass (in batches
that fit the memory budget) or in exact tiles, decided in one place for images, video frames and
every other caller.

The mechanisms sit below: ``engines`` (the models that run), ``tiling`` (exact tiled execution),
``forward`` (the one forward pass on pixels). A :class:`Runner` holds the choice for one command:
``translate`` hands it images of one size at a time and gets their results back, however they ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cgdistill import threads
from cgdistill.device import available_memory, memory_in_use
from cgdistill.engines import Autocast, Engine, Workload, engine_for_file
from cgdistill.errors import CgdistillError
from cgdistill.forward import DEFAULT_MULTIPLE, pad_pixels, prepare_generator, translate_batch
from cgdistill.fsutil import format_bytes
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.onnxfile import is_onnx_file
from cgdistill.options import TILE_CHOICES
from cgdistill.processes import from_main, torchrun_ranks
from cgdistill.tiling.ops import NotTileable
from cgdistill.tiling.plan import TilePlan, plan_tiles, round_tile, tiles_for_speed
from cgdistill.tiling.run import TiledGenerator
from cgdistill.weights import read_info


def parse_tile(text: str | int) -> str | int:
    """``auto``, ``off`` or a tile side in pixels (rounded up to a multiple of 4, the generator's stride)."""
    value = str(text).strip().lower()
    if value in TILE_CHOICES:
        return value
    if value.isdigit() and int(value) > 0:
        return round_tile(int(value))
    raise CgdistillError(f"--tile {text!r} is not valid; use auto, off or a tile side in pixels such as 512.")


def check_sizes(max_side: int, batch_size: int) -> None:
    """Refuse a ``--batch-size`` or ``--max-side`` that cannot work, before any work (images and videos alike)."""
    if batch_size < 1:
        raise CgdistillError(f"--batch-size must be at least 1, got {batch_size}.")
    if max_side < 0:
        raise CgdistillError(f"--max-side must be 0 (no limit) or positive, got {max_side}.")


# ---------------------------------------------------------------------------------------------
# The memory budget

DEFAULT_SHARE = 0.6  # of the free memory: room for the decoded images, the encoder threads and other programs


def tensor_budget(max_memory: int | None, device: torch.device) -> int:
    """Bytes the image's tensors may take: ``max_memory`` (a peak for the whole process) less what it
    holds already, or by default a share of the free memory."""
    if max_memory is None:
        return int(DEFAULT_SHARE * available_memory(device))
    return max(0, max_memory - memory_in_use(device))


def tiler_for(model: nn.Module) -> TiledGenerator | None:
    """A tiled runner for a torch engine's model (plain, or under its engine's autocast); None for other engines."""
    if isinstance(model, Autocast):
        generator, autocast = model.generator, model.context
    elif isinstance(model, ResnetGenerator):
        generator, autocast = model, nullcontext
    else:
        return None
    try:
        return TiledGenerator(generator, autocast)
    except NotTileable:
        return None


def bytes_per_element(model: nn.Module) -> int:
    """2 where activations are bf16/fp16 (an engine under autocast: CPU bf16, CUDA), else 4."""
    return 2 if isinstance(model, Autocast) else 4


# ---------------------------------------------------------------------------------------------
# One pass or tiles


@dataclass
class TileDecider:
    """What translate asks per image size: run in one pass (in batches that fit), or tile with which runner."""

    model: nn.Module
    device: torch.device
    tile: str | int = "auto"
    max_memory: int | None = None
    tiled_model: nn.Module | None = None  # the torch model for images that tile when ``model`` cannot
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tiler = tiler_for(self.model)
        runner = self.model
        if self.tiler is None and self.tiled_model is not None:
            self.tiler = tiler_for(self.tiled_model)
            runner = self.tiled_model
        self.config = getattr(self.model, "config", None)
        self.bytes = bytes_per_element(runner)
        self._plans: dict[tuple[int, int], TilePlan | None] = {}

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def plan(self, height: int, width: int) -> TilePlan | None:
        """The plan for this size, decided once a call (every frame of a video runs alike, and each size
        says its note once); None when the model's architecture is unknown (one pass, as always)."""
        if (height, width) not in self._plans:
            self._plans[height, width] = self._decide(height, width)
        return self._plans[height, width]

    def _decide(self, height: int, width: int) -> TilePlan | None:
        if self.config is None or self.tile == "off":
            return None
        budget = tensor_budget(self.max_memory, self.device)
        plan = plan_tiles(height, width, self.config, self.bytes, budget, self.tile, self.device.type == "cpu")
        if plan.tiled and self.tiler is None and plan.one_pass_bytes <= budget:
            return TilePlan(0, plan.strip, plan.one_pass_bytes, 0, budget)  # tiles only for speed, which it cannot
        if plan.tiled and self.tiler is None:
            self._note(
                f"Images of {width}x{height} need about {format_bytes(plan.one_pass_bytes)} in one pass, over the budget "
                f"of {format_bytes(budget)}; this engine cannot tile them exactly, so they run in one pass "
                "(--engine torch tiles them)."
            )
            return TilePlan(0, plan.strip, plan.one_pass_bytes, 0, budget)
        if plan.tiled and not plan.fits:
            self._note(
                f"Images of {width}x{height} need about {format_bytes(plan.tiled_bytes)} even in tiles of {plan.tile} px "
                f"with the 1/4-resolution activations in temporary files, over the budget of {format_bytes(budget)}; "
                "they run anyway."
            )
        return plan

    def batches(self, count: int, plan: TilePlan | None) -> int:
        """Images per one-pass batch so that a batch's estimate fits the budget (at least one)."""
        if plan is None or plan.one_pass_bytes <= 0:
            return count
        return max(1, min(count, plan.budget // plan.one_pass_bytes))

    def translate(
        self, pixels: np.ndarray, plan: TilePlan, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """One HxWx3 uint8 image through the tiled runner, padded as ``forward.translate_batch`` pads and cropped back."""
        padded, crop = pad_pixels(pixels, DEFAULT_MULTIPLE)
        # torch.from_numpy warns on a read-only array (a decoded image is one); the tiler only reads it.
        padded = np.require(padded, requirements=["C_CONTIGUOUS", "WRITEABLE"])
        return self.tiler(torch.from_numpy(padded), plan, self.device, crop, progress)


# ---------------------------------------------------------------------------------------------
# The runner a command holds


@dataclass
class Runner:
    """The model a translate call runs, on its device, and how each size of image runs (``tiles``)."""

    engine: Engine
    device: torch.device
    tiles: TileDecider

    @classmethod
    def for_engine(
        cls, engine: Engine, device: torch.device, *, tile: str | int = "auto", max_memory: int | None = None
    ) -> Runner:
        """``engine``'s model prepared for ``device``, tiled by the budget ``max_memory`` (bytes) and ``tile``."""
        model = prepare_generator(engine.model, device)
        return cls(engine, device, TileDecider(model, device, tile, max_memory, engine.tiled))

    @classmethod
    def for_model(
        cls, model: nn.Module, device: torch.device, *, tile: str | int = "auto", max_memory: int | None = None
    ) -> Runner:
        """A model that already carries its precision (``engines.torch_model``, an engine's model), run as it is."""
        return cls.for_engine(Engine("given", model, "chosen by the caller"), device, tile=tile, max_memory=max_memory)

    @property
    def model(self) -> nn.Module:
        return self.tiles.model

    def translate_same_size(
        self, images: Sequence[np.ndarray], tile_progress: Callable[[int, int], None] | None = None
    ) -> Iterator[np.ndarray]:
        """Translate uint8 HxWx3 images of one size, in order, one chunk (uint8 NxHxWx3) at a time.

        A size whose one pass fits the budget runs in batches of as many as fit; a larger one runs
        image by image in exact tiles (``tile_progress`` counts one image's tiles). Each chunk is
        yielded as soon as it is done, so the caller can write it while the next one runs.
        """
        height, width = images[0].shape[:2]
        plan = self.tiles.plan(height, width)
        if self.device.type == "cpu":
            threads.tick()  # a job that started or ended beside us changes the count here
        if plan is not None and plan.tiled:
            for pixels in images:
                yield self.tiles.translate(pixels, plan, tile_progress)[None]
            return
        step = self.tiles.batches(len(images), plan)
        for first in range(0, len(images), step):
            batch = torch.from_numpy(np.stack(images[first : first + step]))
            if self.device.type == "cuda":
                batch = batch.pin_memory()
            yield translate_batch(self.model, batch, self.device).numpy()

    @property
    def notes(self) -> list[str]:
        """Sentences on how sizes ran that the user should hear (one each)."""
        return self.tiles.notes


def runner_for_file(
    path: Path | str,
    device: torch.device,
    *,
    engine: str = "auto",
    tile: str | int = "auto",
    max_memory: int | None = None,
    work: Workload | None = None,
) -> Runner:
    """The runner for the model file ``path``: the engine ``--engine`` names (``auto``: the faster here on
    ``work``, ``engines.engine_for_file``), with the tile policy of ``--tile`` and ``--max-memory``.

    Work that ``--tile auto`` runs in tiles for speed (``tiling.plan.tiles_for_speed``) runs on torch,
    the engine that tiles, without timing the others on a size none of them would run in one pass.
    Under torchrun the first process chooses the engine and every other process runs the same one.
    """
    tiled = (
        engine == "auto"
        and tile == "auto"
        and work is not None
        and not is_onnx_file(path)
        and tiles_for_speed(work.height, work.width, GeneratorConfig(**read_info(path).config), device.type == "cpu")
    )
    if tiled:
        chosen = engine_for_file(path, device, "torch")
        reason = f"auto: images of {work.width}x{work.height} run in exact tiles, which torch runs; {chosen.reason}"
        chosen = Engine(chosen.name, chosen.model, reason)
    elif engine != "auto" or torchrun_ranks()[1] == 1:
        chosen = engine_for_file(path, device, engine, work)
    else:
        mine = engine_for_file(path, device, work=work) if torchrun_ranks()[0] == 0 else None
        decided = from_main(lambda: mine.name)
        chosen = mine or engine_for_file(path, device, work=work, decided=decided)
    return Runner.for_engine(chosen, device, tile=tile, max_memory=max_memory)
