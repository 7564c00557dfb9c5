"""Safe extraction of dataset zips: vet every entry first, extract beside the target, rename into place.

A zip from the internet is untrusted input: an entry named ``../../.bashrc``, ``/etc/x``,
``C:\\x`` or a symbolic link could write outside the dataset folder. The whole archive is refused
before a single byte is written, and a failure at any later step leaves no half dataset behind.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

from cgdistill.data.registry import SPLITS, TRAIN_SPLITS
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import fsync_dir, require_free_space, storage_errors
from cgdistill.paths import has_layout

_STAGING_SUFFIXES = (".extracting", ".building", ".old")  # .building: the toy generator's


def expected_layout(required: tuple[str, ...] = TRAIN_SPLITS) -> str:
    """The layout in words, for error messages."""
    optional = [split for split in SPLITS if split not in required]
    text = ", ".join(f"NAME/{split}/" for split in required)
    if optional:
        text += f" (and optionally {', '.join(f'NAME/{split}/' for split in optional)})"
    return text + ", each a folder of images"


def unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why extracting this entry could write outside the target, or None when it is safe."""
    name = info.filename
    if name.startswith(("/", "\\")):
        return "is an absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "starts with a drive letter"
    if ".." in re.split(r"[\\/]", name):
        return "contains a '..' component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return None


def extract_dataset(
    zip_path: Path,
    target: Path,
    *,
    required: tuple[str, ...] = TRAIN_SPLITS,
    fix: str = "download it again",
) -> Path:
    """Extract a dataset zip so that ``target`` holds its ``trainA/ trainB/ [testA/ testB/]``.

    Published zips wrap the splits in a top-level ``NAME/`` folder; the folder holding them is found
    wherever it is. ``fix`` completes the sentence shown when the zip is corrupt.
    """
    zip_path = Path(zip_path)
    target = Path(target)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CgdistillError(f"{zip_path} is not a readable zip file ({exc}); {fix}.") from None
    with archive:
        for info in archive.infolist():
            reason = unsafe_reason(info)
            if reason is not None:
                raise CgdistillError(
                    f"{zip_path} was refused because its entry {info.filename!r} {reason}; "
                    "nothing was extracted, use a zip whose entries all stay inside the dataset folder."
                )
        try:
            bad_entry = archive.testzip()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
            raise CgdistillError(f"{zip_path} is corrupt ({exc}); {fix}.") from None
        if bad_entry is not None:
            raise CgdistillError(f"{zip_path} is corrupt (entry {bad_entry!r} fails its CRC check); {fix}.")

        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
        # The whole archive lands beside the target before the swap: refuse at once what cannot fit.
        require_free_space(target.parent, sum(info.file_size for info in archive.infolist()), f"Extracting {zip_path}")
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extracting", dir=target.parent))
        try:
            with storage_errors(staging):
                archive.extractall(staging)
            root = find_dataset_root(staging, required)
            if root is None:
                raise CgdistillError(
                    f"{zip_path} does not hold a dataset in the expected layout: {expected_layout(required)}."
                )
            swap_into_place(root, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def find_dataset_root(folder: Path, required: tuple[str, ...] = TRAIN_SPLITS, max_depth: int = 3) -> Path | None:
    """The shallowest folder under ``folder`` that holds the ``required`` split folders."""
    level = [folder]
    for _ in range(max_depth + 1):
        for candidate in level:
            if has_layout(candidate, required):
                return candidate
        level = sorted(
            child
            for parent in level
            for child in parent.iterdir()
            if child.is_dir() and not child.is_symlink() and not child.name.startswith((".", "__MACOSX"))
        )
        if not level:
            return None
    return None


def swap_into_place(new: Path, target: Path) -> None:
    """Replace ``target`` with the folder ``new`` (same file system) by renames, never a half copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target.exists() or target.is_symlink()):
        os.replace(new, target)
        fsync_dir(target.parent)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    old.rmdir()
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    fsync_dir(target.parent)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def remove_stale_staging(target: Path) -> None:
    """Delete staging folders a killed extraction or generation of ``target`` left beside it."""
    for leftover in target.parent.glob(f".{target.name}.*"):
        if leftover.name.endswith(_STAGING_SUFFIXES) and leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
