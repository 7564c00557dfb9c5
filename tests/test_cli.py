from cgdistill import __version__, paths


def test_version_prints_the_package_version(cli):
    result = cli("--version")
    assert result.code == 0
    assert __version__ in result.out


def test_help_lists_the_global_options(cli):
    result = cli("--help")
    assert result.code == 0
    assert "--home" in result.out


def test_unknown_option_is_a_usage_error_with_exit_code_2(cli):
    assert cli("--no-such-flag").code == 2


def test_home_flag_overrides_the_environment(cli, tmp_path, monkeypatch):
    seen = {}
    from cgdistill.cli.app import app

    @app.command("where-is-home", hidden=True)
    def _where() -> None:
        seen["home"] = paths.home()

    try:
        assert cli("--home", tmp_path / "elsewhere", "where-is-home").code == 0
    finally:
        app.registered_commands.pop()
    assert seen["home"] == tmp_path / "elsewhere"


def test_module_entry_point_runs(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "cgdistill", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout
