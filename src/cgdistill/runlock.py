"""One writer per run: an advisory lock that a training, resume or import holds for its whole life.

The lock is the file ``<home>/runs/.<run>.lock``, beside the run folder rather than in it: an
import replaces the folder by a rename, and a lock inside would move away with it (run names never
start with a dot, so the file is never a run). It is an ``flock``, which the kernel drops when the
holder ends in any way (``kill -9``, a crash, power loss), so a dead process never locks a run: the
next writer takes the run over and says whose it was. The file holds the holder's pid, host, start
time and command line, for the sentence that refuses a second writer; a clean release removes it.
Readers (translate, compare, export, inspect) never look at it.

Where ``flock`` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cgdistill.errors import CgdistillError
from cgdistill.fsutil import NoSpace, storage_errors

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def lock_path(run_dir: Path) -> Path:
    return run_dir.with_name(f".{run_dir.name}.lock")


def _holder_record() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": shlex.join(["cgdistill", *sys.argv[1:]]),
    }


def _read_holder(handle) -> dict | None:
    try:
        handle.seek(0)
        record = json.loads(handle.read() or "null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return (
        f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')}: `{holder.get('command')}`)"
    )


@dataclass
class RunLock:
    """A held run lock; :meth:`release` (or leaving :func:`hold_run`) lets the next writer in.

    ``taken_over`` is the record of a holder that ended without releasing the run (it died).
    """

    path: Path
    handle: object = None
    taken_over: dict | None = field(default=None)

    def release(self) -> None:
        if self.handle is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.handle.fileno()).st_ino:
                self.path.unlink()  # removed while still held: a newcomer then locks a new file
        self.handle.close()  # closing drops the flock
        self.handle = None


def _open(path: Path):
    try:
        with storage_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            return open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the life of the lock
    except NoSpace:
        raise
    except OSError as exc:
        raise CgdistillError(
            f"Cannot create the run lock {path} ({exc.strerror or exc}); make {path.parent} writable or pass "
            "another --home."
        ) from None


def lock_run(run_dir: Path) -> RunLock:
    """Take run ``run_dir``'s lock, or refuse in one sentence that names the holder and what to do."""
    path = lock_path(run_dir)
    if fcntl is None:
        return RunLock(path)
    while True:
        handle = _open(path)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            pid = holder.get("pid") if holder else None
            stop = f"stop it (`kill -TERM {pid}` saves a checkpoint)" if isinstance(pid, int) else "stop it"
            raise CgdistillError(
                f"Run '{run_dir.name}' is being written by {_describe(holder)}; wait for it to finish or "
                f"{stop}, then run the command again (use another --name to start a separate run)."
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder released (and removed) it between our open and our flock: retry
            handle.close()
            continue
        previous = _read_holder(handle)  # a clean release leaves no file: this holder died holding it
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_holder_record()) + "\n")
        handle.flush()
        return RunLock(path, handle, previous)


@contextlib.contextmanager
def hold_run(run_dir: Path) -> Iterator[RunLock]:
    """Hold ``run_dir``'s lock for the ``with`` block."""
    lock = lock_run(run_dir)
    try:
        yield lock
    finally:
        lock.release()


def taken_over_note(run_dir: Path, lock: RunLock) -> str | None:
    """The line that says a run was taken over from a writer that died, or None."""
    if lock.taken_over is None:
        return None
    return f"Run '{run_dir.name}' was last written by {_describe(lock.taken_over)}, which ended without releasing it."
