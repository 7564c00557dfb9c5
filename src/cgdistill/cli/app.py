"""The Typer app, its global options, and the error convention every command shares."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cgdistill import __version__, paths
from cgdistill.errors import CgdistillError

app = typer.Typer(
    name="cgdistill",
    help="Train CycleGAN teachers and distill them into small, fast student generators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Under torchrun rank 0 speaks for the job; the other ranks print only their errors.
_RANK = int(os.environ.get("RANK", "0") or 0)

# Results go to stdout; progress, notes and errors to stderr (so `--json` output stays clean).
console = Console(highlight=False, quiet=_RANK > 0)
err_console = Console(stderr=True, highlight=False, quiet=_RANK > 0)

_debug = {"on": False}


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"cgdistill {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar=paths.HOME_ENV,
            help="Root for datasets, runs and auxiliary weights (default: the user cache dir).",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Train CycleGAN teachers and distill them into small, fast student generators."""
    paths.set_home(home)
    _debug["on"] = debug


def note(message: str) -> None:
    """A line for the user that is not the command's result (goes to stderr)."""
    err_console.print(message, soft_wrap=True)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting (used by ``main`` and the tests)."""
    paths.set_home(None)
    _debug["on"] = False
    try:
        app(args=argv, prog_name="cgdistill")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except CgdistillError as exc:
        if _debug["on"]:
            traceback.print_exc()
        if _RANK > 0:
            Console(stderr=True, highlight=False).print(
                f"[bold red]Error (rank {_RANK}):[/] {escape(exc.message)}", soft_wrap=True
            )
        else:
            err_console.print(f"[bold red]Error:[/] {escape(exc.message)}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        return 130
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:]))
