"""The one HTTP fetcher (datasets, pretrained weights, Inception weights) and the download flows.

``fetch`` writes to ``<dest>.part`` and only renames it to ``dest`` once every announced byte is
there, so a cut connection or Ctrl-C leaves a ``.part`` that the automatic retry, or the next run,
continues with an HTTP Range request.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cgdistill import __version__, paths
from cgdistill.data.extract import extract_dataset, remove_stale_staging
from cgdistill.data.registry import (
    DATASETS,
    TRAIN_SPLITS,
    check_name,
    get_dataset,
)
from cgdistill.errors import CgdistillError, WorkFailed
from cgdistill.fsutil import NoSpace, fsync_dir, not_a_file_reason, require_free_space, storage_errno, storage_errors
from cgdistill.paths import has_layout

# Seconds before the first retry; doubled on each further one. Tests set it near zero.
DEFAULT_BACKOFF_S = 1.0
DEFAULT_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_USER_AGENT = f"cgdistill/{__version__} (+https://pypi.org/project/cgdistill)"


class _Transient(Exception):
    """A failure worth retrying: connection errors, timeouts, 5xx, a transfer cut short."""

    def __init__(self, reason: str, *, progressed: bool = False, network: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.progressed = progressed  # bytes arrived before it failed: the retry budget starts again
        self.network = network  # the server could not be reached at all


def part_path(dest: Path) -> Path:
    """Where ``fetch`` keeps the bytes of an unfinished download of ``dest``."""
    return dest.with_suffix(dest.suffix + ".part")


def fetch(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    description: str | None = None,
    retries: int = 4,
    progress: bool = True,
    backoff: float | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download ``url`` to ``dest``, resuming any earlier partial download, and return ``dest``.

    Transient errors are retried ``retries`` times with exponential backoff (``backoff`` seconds,
    doubled each time; default ``DEFAULT_BACKOFF_S``), each retry continuing where the bytes stopped.
    The byte count the server announced (and ``expected_size`` when given) is verified before
    ``dest`` appears, so ``dest`` existing means the download completed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    delay = DEFAULT_BACKOFF_S if backoff is None else backoff
    failures = 0
    with _progress_bar(progress, description or dest.name) as bar:
        while True:
            try:
                size = _attempt(url, part, expected_size, timeout, bar)
                break
            except _Transient as exc:
                failures = 1 if exc.progressed else failures + 1
                if failures > retries:
                    raise _give_up(url, part, exc, retries) from None
                bar.note(f"{url}: {exc.reason}; retrying in {delay * 2 ** (failures - 1):.3g} s")
                time.sleep(delay * 2 ** (failures - 1))
            except KeyboardInterrupt:
                kept = part.stat().st_size if part.exists() else 0
                if kept:
                    bar.note(f"Interrupted: {kept:,} bytes kept in {part}; run the same command again to resume.")
                raise
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise WorkFailed(f"{url} delivered {size:,} bytes instead of the expected {expected_size:,}; try again later.")
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest


def _attempt(url: str, part: Path, expected_size: int | None, timeout: float, bar: _Bar) -> int:
    """One request: continue ``part`` from its current size; return the final size when complete."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # Range past the end: either the .part is already whole, or it belongs to another file.
            total = _range_total(exc.headers.get("Content-Range"))
            if total == offset and expected_size in (None, offset):
                return offset
            part.unlink()
            return _attempt(url, part, expected_size, timeout, bar)
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Transient(f"{url} answered HTTP {exc.code} ({exc.reason})") from None
        raise CgdistillError(
            f"{url} answered HTTP {exc.code} ({exc.reason}); check the name or URL, "
            "or pass --from-file with a copy you downloaded yourself."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _Transient(f"could not connect ({reason})", network=True) from None

    with response:
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Transient(f"{url} resumed at byte {start} instead of {offset}; starting again")
            mode = "ab"
        else:
            if offset:
                bar.note(f"{url} does not support resuming; starting again from zero")
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        if total is not None and expected_size is not None and total != expected_size:
            raise WorkFailed(
                f"{url} announced {total:,} bytes but {expected_size:,} were expected; "
                "the file on the server changed or the URL is wrong."
            )
        size = total if total is not None else expected_size
        if size is not None:
            require_free_space(part.parent, size - offset, f"Downloading {url}")
        bar.start(size, offset)
        received = offset
        with _no_space_keeps(part), open(part, mode) as handle:
            try:
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(received)
            except (OSError, http.client.HTTPException) as exc:
                if storage_errno(exc) is not None:
                    raise  # the disk, not the connection: retrying cannot help
                raise _Transient(
                    f"connection lost after {received:,} bytes ({exc or type(exc).__name__})",
                    progressed=received > offset,
                ) from None
            finally:
                handle.flush()
                os.fsync(handle.fileno())
    if total is not None and received < total:
        # http.client returns a short body silently when the server closes early.
        raise _Transient(f"connection closed after {received:,} of {total:,} bytes", progressed=received > offset)
    if total is not None and received > total:
        part.unlink()
        raise WorkFailed(f"{url} sent {received:,} bytes but announced {total:,}; try again later.")
    return received


@contextlib.contextmanager
def _no_space_keeps(part: Path) -> Iterator[None]:
    """A full disk during a download: one sentence; the bytes received stay for the next run to resume."""
    try:
        with storage_errors(part):
            yield
    except NoSpace as full:
        kept = part.stat().st_size if part.exists() else 0
        raise full.then(
            f"the {kept:,} bytes received are kept in {part}: free some space and run the same command again "
            "to resume (or delete that file to give the space back)"
        ) from None


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _parse_content_range(value: str | None) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None)."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        raise _Transient(f"the server answered a Range request without a valid Content-Range ({value!r})")
    total = match.group(3)
    return int(match.group(1)), (int(total) if total != "*" else None)


def _range_total(value: str | None) -> int | None:
    """The TOTAL of a 416 answer's ``bytes */TOTAL``."""
    match = re.match(r"bytes\s+\*/(\d+)", value or "")
    return int(match.group(1)) if match else None


def _give_up(url: str, part: Path, exc: _Transient, retries: int) -> WorkFailed:
    kept = part.stat().st_size if part.exists() else 0
    resume = f"; the {kept:,} bytes received so far are kept and the next run resumes from them" if kept else ""
    attempts = f"after {retries + 1} attempt{'s' if retries else ''}"
    if exc.network:
        return WorkFailed(
            f"Could not download {url} {attempts} ({exc.reason}); check the network connection, "
            f"or pass --url with a mirror or --from-file with a copy you downloaded yourself{resume}."
        )
    return WorkFailed(f"Download of {url} failed {attempts}: {exc.reason}{resume}.")


class _Bar:
    """A rich progress bar on stderr (bytes, speed, ETA), or nothing when progress is off."""

    def __init__(self, progress, task) -> None:  # noqa: ANN001  (rich types stay lazy)
        self._progress = progress
        self._task = task

    def start(self, total: int | None, completed: int) -> None:
        if self._progress is not None:
            self._progress.reset(self._task, total=total, completed=completed, visible=True)

    def update(self, completed: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed)

    def note(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, soft_wrap=True, markup=False)  # URLs and paths as written


@contextlib.contextmanager
def _progress_bar(enabled: bool, description: str) -> Iterator[_Bar]:
    if not enabled:
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),  # as fsutil.format_bytes: one rule for sizes
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True, highlight=False)) as progress:
        yield _Bar(progress, progress.add_task(description, total=None, visible=False))


# --- datasets ---------------------------------------------------------------------------------


@dataclass
class DatasetResult:
    """What ``download_dataset`` did: ``status`` is present, downloaded, extracted or generated."""

    name: str
    path: Path
    status: str
    source: str


@dataclass
class DatasetStatus:
    """One row of ``download --list``."""

    name: str
    path: Path
    present: bool
    size_bytes: int
    source: str  # URL, "generated locally", "manual", or "custom" for folders outside the registry
    domain_a: str | None = None
    domain_b: str | None = None


def downloads_dir() -> Path:
    """Zips and .pth files in transit (and their .part files) live here, under the home."""
    return paths.home() / "downloads"


def _required(name: str) -> tuple[str, ...]:
    entry = DATASETS.get(name)
    return entry.required if entry is not None else TRAIN_SPLITS


def download_dataset(
    name: str,
    *,
    url: str | None = None,
    from_file: Path | str | None = None,
    force: bool = False,
    progress: bool = True,
    retries: int = 4,
) -> DatasetResult:
    """Make ``<home>/datasets/NAME`` from the registry, a URL, a local zip, or (toy) the generator.

    With ``url`` or ``from_file`` any NAME is allowed. A complete dataset already there is left
    alone unless ``force``; a failure at any step leaves no half dataset behind.
    """
    check_name(name)
    if url and from_file:
        raise CgdistillError("Pass either --url or --from-file, not both.")
    entry = DATASETS.get(name) if (url or from_file) else get_dataset(name)
    required = _required(name)
    target = paths.dataset_path(name)
    if has_layout(target, required) and not force:
        return DatasetResult(name, target, "present", str(target))
    if target.exists() and not force:
        raise CgdistillError(
            f"{target} exists but is not a complete dataset (it lacks {'/'.join(required)}); "
            "move it away or pass --force to replace it."
        )

    if from_file is not None:
        zip_path = Path(from_file).expanduser()
        if not os.path.isfile(zip_path):
            raise CgdistillError(
                f"Zip file {zip_path} {not_a_file_reason(zip_path)}; check the path given to --from-file."
            )
        extract_dataset(zip_path, target, required=required, fix="check the file, or download it again")
        return DatasetResult(name, target, "extracted", str(zip_path))
    if entry is not None and entry.source == "local" and not url:
        _generate_toy(target)
        return DatasetResult(name, target, "generated", "generated locally")
    if entry is not None and entry.source == "manual" and not url:
        raise CgdistillError(entry.instructions or f"Dataset {name} cannot be downloaded automatically.")

    source = url or (entry.url if entry else None)
    assert source is not None
    zip_path = downloads_dir() / f"{name}.zip"
    if force:
        zip_path.unlink(missing_ok=True)
        part_path(zip_path).unlink(missing_ok=True)
    if not zip_path.is_file():
        fetch(source, zip_path, description=f"{name}.zip", progress=progress, retries=retries)
    again = f"`cgdistill download {name} --force" + (f" --url {url}`" if url else "`")
    extract_dataset(zip_path, target, required=required, fix=f"run {again} to download it again")
    zip_path.unlink(missing_ok=True)  # the extracted folder is what we keep; the zip only doubles the disk use
    return DatasetResult(name, target, "downloaded", source)


def _generate_toy(target: Path) -> None:
    """Build the embedded dataset; ``make_toy_dataset`` builds beside ``target`` and renames it in."""
    from cgdistill.data.toy import make_toy_dataset

    remove_stale_staging(target)
    made = Path(make_toy_dataset(target))
    if not has_layout(made, TRAIN_SPLITS):
        raise WorkFailed(f"The toy generator wrote no trainA/trainB under {made}; this is a bug in cgdistill.")


def list_datasets() -> list[DatasetStatus]:
    """Every registered dataset, and any other dataset folder under the home, with its state."""
    rows = []
    for entry in DATASETS.values():
        path = paths.dataset_path(entry.name)
        present = has_layout(path, entry.required)
        source = {"remote": entry.url or "", "local": "generated locally", "manual": "manual (see docs)"}[entry.source]
        rows.append(
            DatasetStatus(
                entry.name,
                path,
                present,
                _folder_size(path) if present else 0,
                source,
                entry.domain_a,
                entry.domain_b,
            )
        )
    root = paths.datasets_dir()
    if root.is_dir():
        for path in sorted(root.iterdir()):
            if path.is_dir() and not path.name.startswith(".") and path.name not in DATASETS:
                present = has_layout(path, TRAIN_SPLITS)
                rows.append(DatasetStatus(path.name, path, present, _folder_size(path), "custom"))
    return rows


def _folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for file in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, file)).st_size
    return total
