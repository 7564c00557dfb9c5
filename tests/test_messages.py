"""Messages show values exactly as they are: a path or name is never read as rich markup."""

from __future__ import annotations

import pytest

from cgdistill.cli.app import styled
from cgdistill.errors import CgdistillError


def test_an_error_naming_a_path_with_markup_prints_it_verbatim(cli, tmp_path):
    missing = tmp_path / "nope[/]x.safetensors"
    result = cli("translate", "x.png", "--model", missing)
    assert result.code == 2
    assert "Traceback" not in result.err
    assert f"{missing}" in result.err_text


def test_bracketed_words_in_an_error_survive(cli, monkeypatch):

    def refuse(*_args, **_kwargs):
        raise CgdistillError("install it with `pip install 'cgdistill[tensorboard]'` and [bold]retry[/bold].")

    monkeypatch.setattr("cgdistill.translate.resolve_generator", refuse)
    result = cli("translate", "x.png")
    assert result.code == 2
    assert "pip install 'cgdistill[tensorboard]'" in result.err
    assert "[bold]retry[/bold]" in result.err


def test_emoji_codes_in_values_are_not_replaced(cli, tmp_path):
    missing = tmp_path / "a:cat:b.safetensors"
    result = cli("translate", "x.png", "--model", missing)
    assert ":cat:" in result.err


@pytest.mark.parametrize("value", ["[/]", "[bold]x[/bold]", "a\\", "[red", "{0}", ":smile:"])
def test_styled_escapes_every_value(value):
    text = styled("[bold]{}[/] and {}", value, value)
    assert text.plain == f"{value} and {value}"


def test_training_messages_show_run_and_data_names_verbatim(cli, tmp_path):
    from cgdistill.data.toy import make_toy_dataset

    data = make_toy_dataset(tmp_path / "toy[bold]x", size=32, n_train=2, n_test=1)
    result = cli(
        "train-teacher", "--data", data, "--name", "r[red]1", "--max-steps", "1", "--image-size", "24",
        "--load-size", "28", "--ngf", "4", "--ndf", "4", "--blocks", "1", "--device", "cpu", "--no-amp",
        "--workers", "0",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "r[red]1" in result.out
    assert "toy[bold]x" in result.err


def test_inspect_and_import_show_file_and_network_names_verbatim(cli, tmp_path, home):
    import torch

    helpers = pytest.importorskip("test_official")
    plain = tmp_path / "g.pth"
    torch.save({"nets": {"G_AB[red]": helpers.official_network(ngf=4, n_blocks=1).state_dict()}}, plain)
    path = plain.rename(tmp_path / "g[bold]x[red] \\.pth")  # torch.save refuses such names
    shown = cli("inspect", path)
    assert shown.code == 0, shown.err
    assert str(path) in shown.out and "G_AB[red]" in shown.out
    assert f"--from-file {path}" in shown.err_text
    imported = cli("download", "--pretrained", "mine", "--from-file", path)
    assert imported.code == 0, imported.err
    assert "'nets.G_AB[red]'" in imported.out
