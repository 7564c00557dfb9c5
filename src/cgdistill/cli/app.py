"""The Typer app, its global options, and the error convention every command shares."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from cgdistill import __version__, paths, threads
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


def _stdio_to_devnull() -> None:
    """Point standard output and error at /dev/null once their reader is gone, so that later writes,
    and Python's flush at exit (which would turn the exit status into 120), succeed."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


class _Console(Console):
    """rich's console ends the process (exit 1) when its pipe is closed; ours goes quiet instead, so
    that a training run whose terminal or SSH session is gone still saves and exits with its status."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _stdio_to_devnull()


# Results go to stdout; progress, notes and errors to stderr (so `--json` output stays clean).
# No emoji codes: a path such as `a:cat:b.png` is printed as written.
console = _Console(highlight=False, emoji=False, quiet=_RANK > 0)
err_console = _Console(stderr=True, highlight=False, emoji=False, quiet=_RANK > 0)

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
    threads.begin()  # the load sample that the command's first thread count is measured from


def styled(template: str, *values: object) -> Text:
    """The one way to put values into a styled message: ``template`` is our own rich markup and each
    ``{}`` takes a value (a path, a name, text from a file or the user) that is shown exactly as written.

    The markup is rendered with a placeholder in each slot and the values go in afterwards as plain
    text with the slot's style, so no value is ever parsed (escaping alone fails on a trailing backslash).
    """
    holders = [f"\ue000{index}\ue001" for index in range(len(values))]
    rendered = Text.from_markup(template.format(*holders), emoji=False)
    result = Text()
    position = 0
    for holder, value in zip(holders, values, strict=True):
        start = rendered.plain.index(holder, position)
        result.append_text(rendered[position:start])
        piece = Text(str(value))
        for span in rendered.spans:
            if span.start <= start < span.end:
                piece.stylize(span.style)
        result.append_text(piece)
        position = start + len(holder)
    result.append_text(rendered[position:])
    return result


def show(message: str | Text, *, stderr: bool = False) -> None:
    """Print one message: a plain ``str`` is never read as markup; styling comes only from :func:`styled`."""
    target = err_console if stderr else console
    target.print(message, soft_wrap=True, markup=False)


def note(message: str | Text) -> None:
    """A line for the user that is not the command's result (goes to stderr)."""
    show(message, stderr=True)


@contextlib.contextmanager
def terminal_may_be_gone() -> Iterator[None]:
    """Around output while training: after SIGHUP a terminal that is gone fails writes with EIO; the
    work goes on (and saves) without a display, and the consoles go quiet."""
    try:
        yield
    except OSError:
        console.quiet = err_console.quiet = True
        _stdio_to_devnull()


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
            Console(stderr=True, highlight=False, emoji=False).print(
                styled("[bold red]Error (rank {}):[/] {}", _RANK, exc.message), soft_wrap=True
            )
        else:
            note(styled("[bold red]Error:[/] {}", exc.message))
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        return 130
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:]))
