"""Image files through a :class:`~cgdistill.policy.Runner`: any image in, a translated PNG of the same size out.

The pipeline keeps the model busy: worker threads decode the next images and encode finished ones
while the main thread hands images of one size at a time to the runner, which runs them in batches
or in tiles (its policy). Images of any size work because the forward pass pads them to the
generator's multiple and crops the result back (``forward``).
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
from PIL import Image

from cgdistill.data.images import read_image_with_alpha
from cgdistill.errors import CgdistillError
from cgdistill.forward import shrink_to_max_side
from cgdistill.fsutil import atomic_path
from cgdistill.options import DEFAULT_BATCH_SIZE, DEFAULT_MAX_SIDE
from cgdistill.policy import Runner, check_sizes

PNG_COMPRESS_LEVEL = 3  # zlib level: 6 (PIL's default) costs ~2x the time for ~5% smaller files


@dataclass
class TranslateResult:
    """What a translate call did: written files, failures with reasons, and its speed."""

    written: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output)
    failures: list[tuple[Path, str]] = field(default_factory=list)  # (input, one-sentence reason)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0


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
    runner: Runner,
    files: Sequence[Path],
    outputs: Sequence[Path],
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    tile_progress: Callable[[int, int], None] | None = None,
) -> TranslateResult:
    """Translate ``files`` into ``outputs`` (one each, planned by ``worklist``); failures are collected, never raised.

    Images are grouped into batches of equal size (in input order within each size); a batch runs
    as soon as it is full, and at the end whatever is left runs as smaller batches. How each size
    runs (one pass in batches that fit the memory budget, or exact tiles) is ``runner``'s policy;
    ``tile_progress`` counts one tiled image's tiles.
    """
    check_sizes(max_side, batch_size)
    result = TranslateResult()
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
            chunks = runner.translate_same_size([item.pixels for item in items], tile_progress)
            first = 0
            for translated in chunks:
                chunk = items[first : first + len(translated)]
                first += len(translated)
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
    order = {path: i for i, path in enumerate(files)}
    result.written.sort(key=lambda pair: order[pair[0]])
    result.failures.sort(key=lambda pair: order[pair[0]])
    return result
