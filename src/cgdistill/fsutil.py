"""Atomic file writes: a crash at any moment leaves either the old file or the new one."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from cgdistill.errors import CgdistillError, WorkFailed


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so a rename inside it survives a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (threads write files too)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # elsewhere the only way to read it is to set it and put it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


# Errors that say the storage, not the data, is at fault: a full disk, an exceeded quota, read-only media.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class NoSpace(WorkFailed):
    """A write failed for lack of space or on read-only media. ``reason`` is the sentence's first
    clause (path, needed and free space), so that a caller can say what was kept and how to go on."""

    def __init__(self, reason: str, then: str = "free some space and run the command again") -> None:
        super().__init__(f"{reason}; {then}.")
        self.reason = reason

    def then(self, what: str) -> NoSpace:
        """The same failure, ending with ``what`` the user should know and do."""
        return NoSpace(self.reason, what)


def storage_errno(exc: BaseException) -> int | None:
    """ENOSPC, EDQUOT or EROFS when ``exc`` (or what caused it) is one, else None. Libraries that
    write in native code report the OS error in their message only (safetensors: "... (os error 28)")."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            return exc.errno
        found = re.search(r"os error (\d+)", str(exc))
        if found and int(found[1]) in _STORAGE_ERRNOS:
            return int(found[1])
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def free_bytes(path: Path | str) -> int | None:
    """Free space for an unprivileged user on the file system that holds (or would hold) ``path``."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def format_bytes(count: int) -> str:
    """Bytes for a person, in binary units labelled as such (``812 bytes``, ``97.7 KiB``, ``1.5 GiB``).

    The one byte formatter: binary, because the sizes a user writes (``--max-memory 1.5G``) are read
    in powers of 1024.
    """
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{count:,} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def no_space(path: Path | str, code: int = errno.ENOSPC, needed: int | None = None) -> NoSpace:
    """The one sentence for a write to ``path`` that the storage refused."""
    if code == errno.EROFS:
        return NoSpace(f"Cannot write {path}: it is on a read-only file system", "pass a writable --home or --output")
    what = "the disk quota is exceeded" if code == errno.EDQUOT else "no space is left on its device"
    free = free_bytes(path)
    sizes = [f"about {format_bytes(needed)} needed"] if needed else []
    sizes += [f"{format_bytes(free)} free"] if free is not None and code != errno.EDQUOT else []
    return NoSpace(f"Cannot write {path}: {what}" + (f" ({', '.join(sizes)})" if sizes else ""))


@contextlib.contextmanager
def storage_errors(path: Path | str, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk, an exceeded quota or read-only media inside the block into :func:`no_space`."""
    try:
        yield
    except NoSpace:
        raise
    except Exception as exc:
        code = storage_errno(exc)
        if code is None:
            raise
        raise no_space(path, code, needed) from None


def require_free_space(path: Path | str, needed: int, what: str) -> None:
    """Refuse before writing ``needed`` bytes under ``path`` (``what``: a download, an extract) that
    cannot fit, instead of failing part-way."""
    free = free_bytes(path)
    if free is not None and free < needed:
        raise NoSpace(
            f"{what} needs {format_bytes(needed)} in {path} but only {format_bytes(free)} is free",
            "free some space (or pass another --home) and run the command again",
        )


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it into place.

    On any exception the temporary file is removed and ``target`` is untouched; a full disk, an
    exceeded quota or read-only media become one sentence (:class:`NoSpace`) naming ``target``.
    """
    target = Path(target)
    with storage_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            # mkstemp makes the file private (0600); the result should be as readable as open() would make it.
            os.chmod(tmp, 0o666 & ~current_umask())
            yield tmp
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def atomic_write_bytes(target: Path | str, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def not_a_file_reason(path: Path | str) -> str:
    """Why ``path`` is not a regular file we can read, as the end of a sentence ("does not exist", ...)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "does not exist"
    except (OSError, ValueError) as exc:
        return f"cannot be used ({getattr(exc, 'strerror', None) or exc})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device, FIFO or socket)"
    return "is a file"


def prepare_output_dir(folder: Path | str, flag: str) -> Path:
    """Create ``folder`` and prove it takes files, before any work whose results would go there.

    ``flag`` is the option that named it, for the sentence that says what to change.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CgdistillError(f"Output folder {folder} is a file, not a folder; pass another {flag}.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cgdistill-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CgdistillError(
            f"Cannot write into output folder {folder} ({exc.strerror or exc}); pass another {flag}."
        ) from None
    return folder
