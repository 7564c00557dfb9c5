"""Inference on files and folders: any image in, a translated PNG of the same size out.

The pipeline keeps the model busy: worker threads decode the next images and encode finished ones
while the main thread runs batches of same-size images through the generator. Images of any size
work because each batch is reflect-padded to the generator's multiple and cropped back.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cgdistill import threads
from cgdistill.data.images import list_images, read_image_with_alpha
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_path, not_a_file_reason, prepare_output_dir
from cgdistill.options import DEFAULT_BATCH_SIZE, DEFAULT_MAX_SIDE
from cgdistill.runs import check_direction

# The generator's stem pads by 3 and each block by 1 at a quarter of the resolution, so an input
# smaller than 8 pixels cannot be reflect-padded inside the network: pad tiny images up to this.
MIN_SIDE = 8
PNG_COMPRESS_LEVEL = 3  # zlib level: 6 (PIL's default) costs ~2x the time for ~5% smaller files


@dataclass
class TranslateResult:
    """What a translate call did: written files, failures with reasons, and its speed."""

    written: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output)
    failures: list[tuple[Path, str]] = field(default_factory=list)  # (input, one-sentence reason)
    renamed: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output given another name)
    notes: list[str] = field(default_factory=list)  # one sentence each, e.g. how large images ran
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Model preparation and the forward pass (shared with `compare`, so it measures what we run)


def use_channels_last(device: torch.device) -> bool:
    """Channels-last pays on CUDA (tensor cores); on the CPU it measured slower (docs/benchmarks.md)."""
    return device.type == "cuda"


def prepare_generator(generator: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, no gradients, on ``device``, in the memory format that runs fastest there."""
    generator = generator.eval().requires_grad_(False).to(device)
    if use_channels_last(device):
        generator = generator.to(memory_format=torch.channels_last)
    return generator


def generator_multiple(generator: nn.Module) -> int:
    return int(getattr(generator, "multiple", 4))


def padding_to_multiple(
    height: int, width: int, multiple: int, minimum: int = MIN_SIDE
) -> tuple[tuple[int, int, int, int], str]:
    """``(left, right, top, bottom)`` padding to multiples of ``multiple`` (at least ``minimum``) and its mode.

    The padding is split between both sides; "reflect" continues the image naturally so the border of
    the result looks like the rest; sides too small to reflect fall back to "replicate".
    """
    target_h = max(-(-height // multiple) * multiple, -(-minimum // multiple) * multiple)
    target_w = max(-(-width // multiple) * multiple, -(-minimum // multiple) * multiple)
    pad_h, pad_w = target_h - height, target_w - width
    top, left = pad_h // 2, pad_w // 2
    pads = (left, pad_w - left, top, pad_h - top)
    mode = "reflect" if max(pads[0], pads[1]) < width and max(pads[2], pads[3]) < height else "replicate"
    return pads, mode


def pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int = MIN_SIDE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad an NCHW batch so both sides are multiples of ``multiple`` (and at least ``minimum``).

    Padding as :func:`padding_to_multiple` says. Returns the padded batch and the (top, left) offset
    of the original inside it.
    """
    pads, mode = padding_to_multiple(*x.shape[-2:], multiple, minimum)
    if not any(pads):
        return x, (0, 0)
    return F.pad(x, pads, mode=mode), (pads[2], pads[0])


def translate_batch(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Translate a uint8 NHWC batch (any size) and return a uint8 NHWC batch of the same size on the CPU.

    ``model`` runs as it is: an engine's model carries its precision (``engines.Autocast``).
    """
    n, h, w, _ = images.shape
    with torch.inference_mode():
        x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        x, (top, left) = pad_to_multiple(x, generator_multiple(model))
        if use_channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        y = model(x)
        y = y[:, :, top : top + h, left : left + w].float()
        y = y.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
        return y.permute(0, 2, 3, 1).contiguous().cpu()


# ---------------------------------------------------------------------------------------------
# Inputs and outputs


def collect_inputs(
    inputs: Sequence[Path | str], recursive: bool = False, output_dir: Path | str | None = None
) -> list[Path]:
    """Expand files and folders into image files, in the order given (folders sorted by path).

    A path that does not exist, or is no regular file or folder, is a usage error; a file named
    directly is kept whatever its suffix, so a mislabelled or broken file is reported by name when
    it fails to decode. A folder input may not hold ``output_dir``: each run would translate the
    previous run's outputs again.
    """
    output = Path(output_dir).expanduser().resolve() if output_dir is not None else None
    files: list[Path] = []
    seen: set[Path] = set()
    for raw in inputs:
        path = Path(raw).expanduser()
        if os.path.isdir(path):
            folder = path.resolve()
            if output is not None and (output == folder or (recursive and folder in output.parents)):
                raise CgdistillError(
                    f"Output folder {output_dir} is inside input folder {path}, so later runs would translate "
                    "these outputs again; pass another --output."
                )
            found = list_images(path, recursive=recursive)
        elif os.path.isfile(path):
            found = [path]
        else:
            raise CgdistillError(f"Input {path} {not_a_file_reason(path)}.")
        for item in found:
            key = item.resolve()
            if key not in seen:
                seen.add(key)
                files.append(item)
    return files


def plan_outputs(
    files: Sequence[Path], output_dir: Path, direction: str, suffix: str = ".png"
) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """``<output>/<stem>_<direction>.png`` (or ``suffix``: videos) for each input, never the path of an input or of another output.

    Names are built only from the checked direction and the input's own stem, and each must resolve
    to a file directly inside ``output_dir``.

    A name that is taken gets ``-2``, ``-3``, ... before the suffix; the inputs so renamed are returned
    so that the caller can say so.
    """
    check_direction(direction)
    folder = output_dir.resolve()
    protected = {f.resolve() for f in files}
    taken: set[Path] = set()
    outputs: list[Path] = []
    renamed: list[tuple[Path, Path]] = []
    for source in files:
        base = f"{source.stem}_{direction}"
        candidate = output_dir / f"{base}{suffix}"
        index = 1
        while candidate.resolve() in protected or candidate.resolve() in taken:
            index += 1
            candidate = output_dir / f"{base}-{index}{suffix}"
        if candidate.resolve().parent != folder:
            raise CgdistillError(f"The output name for {source} would leave the output folder {output_dir}.")
        if index > 1:
            renamed.append((source, candidate))
        taken.add(candidate.resolve())
        outputs.append(candidate)
    return outputs, renamed


def fit_max_side(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Shrink (never enlarge) to fit ``max_side`` keeping the aspect ratio; 0 means no limit."""
    longest = max(width, height)
    if max_side <= 0 or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink_to_max_side(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` as the generator gets it: shrunk (Lanczos, never enlarged) to fit ``max_side``, aspect kept.

    ``compare`` prepares its test images with this too, so fidelity is measured on what translate runs.
    """
    size = fit_max_side(image.width, image.height, max_side)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


@dataclass
class _Decoded:
    index: int
    pixels: np.ndarray | None = None  # HxWx3 uint8
    alpha: Image.Image | None = None
    error: str | None = None


def _decode(index: int, path: Path, max_side: int) -> _Decoded:
    try:
        rgb, alpha = read_image_with_alpha(path)
    except CgdistillError as exc:
        return _Decoded(index, error=exc.message)
    except Exception as exc:  # anything a codec throws is this file's problem, not the run's
        return _Decoded(index, error=f"Cannot read image {path}: {exc}.")
    rgb = shrink_to_max_side(rgb, max_side)
    if alpha is not None:
        alpha = shrink_to_max_side(alpha, max_side)
    return _Decoded(index, pixels=np.asarray(rgb, dtype=np.uint8), alpha=alpha)


def _encode(pixels: np.ndarray, alpha: Image.Image | None, target: Path) -> None:
    image = Image.fromarray(pixels, "RGB")
    if alpha is not None:
        image.putalpha(alpha)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def default_workers() -> int:
    """Decode/encode threads: enough to hide I/O behind compute without starving torch's own threads."""
    return max(2, min(4, os.cpu_count() or 2))


def _decoded_in_order(
    pool: ThreadPoolExecutor, files: Sequence[Path], max_side: int, window: int
) -> Iterator[_Decoded]:
    """Decode ``files`` on the pool, at most ``window`` ahead of the consumer, yielding in order."""
    pending: OrderedDict[int, Future[_Decoded]] = OrderedDict()
    next_index = 0
    while next_index < len(files) or pending:
        while next_index < len(files) and len(pending) < window:
            pending[next_index] = pool.submit(_decode, next_index, files[next_index], max_side)
            next_index += 1
        _, future = pending.popitem(last=False)
        yield future.result()


def translate_files(
    generator: nn.Module,
    files: Sequence[Path],
    output_dir: Path,
    direction: str,
    *,
    device: torch.device,
    max_side: int = DEFAULT_MAX_SIDE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    tile: str | int = "auto",
    max_memory: int | None = None,
    tiled_model: nn.Module | None = None,
    tile_progress: Callable[[int, int], None] | None = None,
) -> TranslateResult:
    """Translate ``files`` into ``output_dir``; failures are collected, never raised.

    ``generator`` is prepared in place (eval mode, moved to ``device``).

    Images are grouped into batches of equal size (in input order within each size); a batch runs
    as soon as it is full, and at the end whatever is left runs as smaller batches.

    An image whose one-pass estimate exceeds the memory budget (``max_memory`` bytes for the process,
    default a share of the free memory) runs tile by tile, exactly (``cgdistill.tiling``); ``tile``
    is ``auto``, ``off`` or a tile side in pixels; ``tiled_model`` runs tiled images when ``generator``
    is an engine that cannot tile (onnxruntime); ``tile_progress`` counts one image's tiles.
    """
    from cgdistill.tiling import TileDecider, parse_tile

    if batch_size < 1:
        raise CgdistillError(f"--batch-size must be at least 1, got {batch_size}.")
    if max_side < 0:
        raise CgdistillError(f"--max-side must be 0 (no limit) or positive, got {max_side}.")
    output_dir = prepare_output_dir(output_dir, "--output")
    outputs, renamed = plan_outputs(files, output_dir, direction)
    result = TranslateResult(renamed=renamed)
    model = prepare_generator(generator, device)
    tiles = TileDecider(model, device, parse_tile(tile), max_memory, tiled_model)
    workers = workers or default_workers()
    done = 0
    total = len(files)
    start = time.perf_counter()
    # Held decoded images across all sizes; beyond this the fullest bucket runs early (bounded memory).
    max_held = max(2 * batch_size, 8)

    with (
        ThreadPoolExecutor(workers, thread_name_prefix="decode") as decoders,
        ThreadPoolExecutor(workers, thread_name_prefix="encode") as encoders,
    ):
        writes: list[tuple[int, Future[None]]] = []
        buckets: dict[tuple[int, int], list[_Decoded]] = {}

        def run(bucket_key: tuple[int, int]) -> None:
            nonlocal done
            items = buckets.pop(bucket_key)
            plan = tiles.plan(*bucket_key)
            if device.type == "cpu":
                threads.tick()  # a job that started or ended beside us changes the count here
            if plan is not None and plan.tiled:
                for item in items:
                    pixels = tiles.translate(item.pixels, plan, tile_progress)
                    writes.append((item.index, encoders.submit(_encode, pixels, item.alpha, outputs[item.index])))
                    done += 1
                    if progress is not None:
                        progress(done, total)
                return
            step = tiles.batches(len(items), plan)
            for first in range(0, len(items), step):
                chunk = items[first : first + step]
                batch = torch.from_numpy(np.stack([item.pixels for item in chunk]))
                if device.type == "cuda":
                    batch = batch.pin_memory()
                translated = translate_batch(model, batch, device).numpy()
                for item, pixels in zip(chunk, translated, strict=True):
                    writes.append((item.index, encoders.submit(_encode, pixels, item.alpha, outputs[item.index])))
                done += len(chunk)
                if progress is not None:
                    progress(done, total)

        for item in _decoded_in_order(decoders, files, max_side, window=batch_size + 2 * workers):
            if item.error is not None:
                result.failures.append((files[item.index], item.error))
                done += 1
                if progress is not None:
                    progress(done, total)
                continue
            key = item.pixels.shape[:2]
            buckets.setdefault(key, []).append(item)
            if len(buckets[key]) >= batch_size:
                run(key)
            elif sum(len(b) for b in buckets.values()) > max_held:
                run(max(buckets, key=lambda k: len(buckets[k])))
        for key in list(buckets):
            run(key)
        for index, future in writes:
            try:
                future.result()
            except OSError as exc:
                result.failures.append((files[index], f"Cannot write {outputs[index]}: {exc.strerror or exc}."))
            else:
                result.written.append((files[index], outputs[index]))
    result.seconds = time.perf_counter() - start
    result.notes.extend(tiles.notes)
    order = {path: i for i, path in enumerate(files)}
    result.written.sort(key=lambda pair: order[pair[0]])
    result.failures.sort(key=lambda pair: order[pair[0]])
    return result
