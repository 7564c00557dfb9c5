"""Stopping a run on request: Ctrl-C, SIGTERM and SIGHUP ask the loop to save and exit.

The loop (train/loop.py) enters :class:`StopFlag` around its steps, asks it after each step whether
a stop was requested, and raises :class:`TrainingInterrupted` once the checkpoint is saved; the CLI
turns that into the resume hint and the exit status.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cgdistill.errors import CgdistillError

RESUMABLE_EXIT = 75
"""Exit status after SIGTERM or SIGHUP once the checkpoint is saved: ``EX_TEMPFAIL`` of sysexits.h
("temporary failure, try again later"), for a scheduler to requeue with ``--resume``. A process the
signal killed before training began (nothing to save) ends as signals do, 143 or 129."""


def signal_name(signum: int | None) -> str:
    """``SIGTERM``; for a stop that another rank received (the signal is not shared), "another rank's signal"."""
    return signal.Signals(signum).name if signum is not None else "another rank's signal"


class TrainingInterrupted(CgdistillError):
    """Ctrl-C, SIGTERM or SIGHUP: the state was saved at ``step``; the CLI says how to resume.

    The exit status is 130 for Ctrl-C (the shell's convention) and :data:`RESUMABLE_EXIT` for the
    signals a scheduler, a container runtime or a closed terminal sends.
    """

    def __init__(self, step: int, run_dir: Path, signum: int | None = signal.SIGINT) -> None:
        code = 130 if signum == signal.SIGINT else RESUMABLE_EXIT
        super().__init__(
            f"Stopped by {signal_name(signum)} at step {step}; the checkpoint in {run_dir} is complete.",
            exit_code=code,
        )
        self.step, self.run_dir, self.signum = step, run_dir, signum


# What asks a run to stop and save: Ctrl-C, the scheduler's or container runtime's SIGTERM, and the
# SIGHUP of a closed terminal or SSH session.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopFlag:
    """The first stop signal asks the loop to stop after the current step and save.

    A second Ctrl-C stops at once (the last complete checkpoint stays); a repeated TERM or HUP changes
    nothing, since a scheduler's follow-up is SIGKILL anyway, and after a stop by either (or, under
    DDP, by another rank's signal: torchrun then TERMs the ranks still running) they stay ignored
    until the process exits. While a checkpoint is written (:meth:`saving`) every signal waits
    for it. A signal the process ignored (``nohup``) stays ignored.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped = False  # the loop stops for a signal (this process's or, under DDP, another rank's)
        self._saving = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal reached this process."""
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        elif signum == signal.SIGINT and not self._saving:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """While a checkpoint is written: a second Ctrl-C waits for it instead of stopping at once."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            # After a TERM or HUP the process is on its way out with a complete checkpoint: a repeat
            # (schedulers resend) must not turn its exit status into "killed".
            stopping = self.stopped and self.signum != signal.SIGINT and signum != signal.SIGINT
            signal.signal(signum, signal.SIG_IGN if stopping else previous)
