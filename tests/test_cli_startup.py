"""The command line starts without torch: parsing, --help, --version and `download --list` need none
of the library's heavy modules, which the commands import when they run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from cgdistill.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_the_commands_are_all_here():
    assert {"train-teacher", "distill", "translate", "compare", "download", "demo"} <= set(COMMANDS)


def test_importing_the_cli_and_building_its_commands_imports_no_torch():
    result = _python(
        "import sys, typer, cgdistill.cli\n"
        "assert 'torch' not in sys.modules, 'import cgdistill.cli imported torch'\n"
        "typer.main.get_command(cgdistill.cli.app)\n"
        "assert 'torch' not in sys.modules, 'building the click commands imported torch'\n"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["--help"], ["download", "--list"]] + [[command, "--help"] for command in COMMANDS],
    ids=lambda argv: " ".join(argv),
)
def test_help_version_and_lists_run_without_torch(argv):
    result = _python(
        "import sys\n"
        "from cgdistill.cli import run\n"
        f"code = run({argv!r})\n"
        "assert code == 0, f'exit code {code}'\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_console_entry_point_shows_help():
    result = subprocess.run([sys.executable, "-m", "cgdistill", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "train-teacher" in result.stdout and "distill" in result.stdout
