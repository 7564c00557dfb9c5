"""Command line: each module registers one command group on ``app``; logic lives in the library.

A command imports the library modules it needs (and so torch) inside its function, when it runs:
``--help``, ``--version`` and ``download --list`` then start in a fraction of a second.
tests/test_cli_startup.py fails if importing this package imports torch.
"""

from cgdistill.cli import compare as _compare  # noqa: F401  (registers `compare`)
from cgdistill.cli import demo as _demo  # noqa: F401  (registers `demo`)
from cgdistill.cli import download as _download  # noqa: F401  (registers `download`)
from cgdistill.cli import export as _export  # noqa: F401  (registers `export`)
from cgdistill.cli import inspect as _inspect  # noqa: F401  (registers `inspect`)
from cgdistill.cli import serve as _serve  # noqa: F401  (registers `serve`)
from cgdistill.cli import train as _train  # noqa: F401  (registers `train-teacher`, `distill`)
from cgdistill.cli import translate as _translate  # noqa: F401  (registers `translate`)
from cgdistill.cli.app import app, main, run

__all__ = ["app", "main", "run"]
