"""The work of one translate call, decided once: which inputs are images and which are videos, and
the name each output gets; then each process's share of it.

Names are decided for all inputs together, before anything runs, so that no two outputs share a
name and no output overwrites an input, however the work is later split between processes
(``torchrun``: each rank translates :meth:`Worklist.share` of it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cgdistill.data.images import list_images
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import not_a_file_reason
from cgdistill.runs import check_direction
from cgdistill.videoio import is_video_file, probe_video

IMAGE_SUFFIX = ".png"


@dataclass(frozen=True)
class Job:
    """One input and the file its translation goes to."""

    source: Path
    output: Path


@dataclass
class Worklist:
    """Images and videos of one call, each with its output; ``renamed`` lists outputs that took a ``-N`` name."""

    images: list[Job] = field(default_factory=list)
    videos: list[Job] = field(default_factory=list)
    renamed: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output given another name)

    def share(self, rank: int, world_size: int) -> Worklist:
        """The part of the work process ``rank`` of ``world_size`` takes: every ``world_size``-th image
        and video from its own offset, so each input goes to exactly one process and the shares differ by
        at most one file of each kind."""
        return Worklist(self.images[rank::world_size], self.videos[rank::world_size], self.renamed)


def find_videos(inputs: Sequence[Path | str]) -> list[tuple[Path, str]]:
    """The videos named in ``inputs``, each with the suffix of its translation (``videoio.probe_video``:
    ``.mp4``, or ``.mkv`` for audio that MP4 cannot hold); a video FFmpeg cannot open is refused here,
    before a model is loaded."""
    return [(Path(path), probe_video(path)) for path in inputs if is_video_file(path)]


def plan_work(
    inputs: Sequence[Path | str],
    videos: Sequence[tuple[Path, str]],
    output_dir: Path | str,
    direction: str,
    *,
    recursive: bool = False,
) -> Worklist:
    """The images in ``inputs`` (files and folders, as :func:`collect_inputs` finds them) and the
    ``videos`` :func:`find_videos` found there, each with its output in ``output_dir``:
    ``<stem>_<direction>.png`` for an image, the video's own suffix for a video. Names are decided
    for all of them together (:func:`plan_outputs`)."""
    named = {video for video, _ in videos}
    images = collect_inputs([path for path in inputs if Path(path) not in named], recursive, output_dir)
    suffixes = [IMAGE_SUFFIX] * len(images) + [suffix for _, suffix in videos]
    outputs, renamed = plan_outputs([*images, *(video for video, _ in videos)], Path(output_dir), direction, suffixes)
    return Worklist(
        [Job(source, output) for source, output in zip(images, outputs[: len(images)], strict=True)],
        [Job(video, output) for (video, _), output in zip(videos, outputs[len(images) :], strict=True)],
        renamed,
    )


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
    files: Sequence[Path], output_dir: Path, direction: str, suffixes: Sequence[str] | None = None
) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """``<output>/<stem>_<direction><suffix>`` for each input (``.png`` unless ``suffixes`` says), never the
    path of an input or of another output.

    Names are built only from the checked direction and the input's own stem, and each must resolve
    to a file directly inside ``output_dir``. A name that is taken gets ``-2``, ``-3``, ... before the
    suffix; the inputs so renamed are returned so that the caller can say so.
    """
    check_direction(direction)
    suffixes = suffixes or [IMAGE_SUFFIX] * len(files)
    folder = output_dir.resolve()
    protected = {f.resolve() for f in files}
    taken: set[Path] = set()
    outputs: list[Path] = []
    renamed: list[tuple[Path, Path]] = []
    for source, suffix in zip(files, suffixes, strict=True):
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
