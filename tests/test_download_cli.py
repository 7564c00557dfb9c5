"""`cgdistill download` end to end through the CLI, against a loopback server."""

from __future__ import annotations

import io
import re
import types
import zipfile
from pathlib import Path

import pytest


def dataset_zip(top: str = "x", n: int = 3) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for split in ("trainA", "trainB", "testA", "testB"):
            for index in range(n):
                archive.writestr(f"{top}/{split}/{index}.png", bytes(range(256)) * 40)
    return buffer.getvalue()


@pytest.fixture
def fake_official(monkeypatch: pytest.MonkeyPatch, home: Path) -> list[dict]:
    """Stand in for cgdistill.official.import_official (tested on its own) and record how the CLI calls it."""
    calls: list[dict] = []

    def import_official(
        pth_path: Path,
        name: str,
        direction: str | None = None,
        dataset: str | None = None,
        key: str | None = None,
        default_direction: str = "A2B",
    ) -> types.SimpleNamespace:
        calls.append(
            {"pth": Path(pth_path), "name": name, "direction": direction or default_direction, "dataset": dataset}
        )
        run = home / "runs" / name
        run.mkdir(parents=True)
        chosen = direction or default_direction
        generator = types.SimpleNamespace(
            direction=chosen, network=None, layout_title="a layout", decided_by="default", notes=[]
        )
        return types.SimpleNamespace(run=run, directions=[chosen], generators=[generator])

    from cgdistill import official

    monkeypatch.setattr(official, "import_official", import_official)
    return calls


def test_download_url_resumes_a_cut_transfer_and_extracts_the_four_folders(cli, server, home):
    data = dataset_zip()
    url = server.add("/x.zip", data, cut_after=len(data) // 2)
    result = cli("download", "mine", "--url", url)
    assert result.code == 0, result.err
    target = home / "datasets" / "mine"
    assert sorted(p.name for p in target.iterdir()) == ["testA", "testB", "trainA", "trainB"]
    assert [r.range for r in server.requests] == [None, f"bytes={len(data) // 2}-"]
    assert "Downloaded dataset mine" in result.out
    assert "cgdistill train-teacher --data mine" in result.err_text


def test_download_of_a_present_dataset_says_so_and_does_nothing(cli, server):
    url = server.add("/x.zip", dataset_zip())
    assert cli("download", "mine", "--url", url).code == 0
    again = cli("download", "mine", "--url", url)
    assert again.code == 0
    assert "already here" in again.out
    assert len(server.requests) == 1


def test_force_downloads_again(cli, server, home):
    url = server.add("/x.zip", dataset_zip(n=1))
    assert cli("download", "mine", "--url", url).code == 0
    server.add("/x.zip", dataset_zip(n=4))
    assert cli("download", "mine", "--url", url, "--force").code == 0
    assert len(list((home / "datasets" / "mine" / "trainA").iterdir())) == 4
    assert len(server.requests) == 2


def test_download_from_file_works_offline(cli, home, tmp_path):
    source = tmp_path / "local.zip"
    source.write_bytes(dataset_zip())
    result = cli("download", "horse2zebra", "--from-file", source)
    assert result.code == 0, result.err
    assert (home / "datasets" / "horse2zebra" / "trainB" / "2.png").is_file()
    assert source.is_file()  # the user's file is theirs: never deleted


def test_a_corrupt_download_is_refused_with_force_as_the_fix(cli, server, home):
    url = server.add("/x.zip", b"this is not a zip file" * 100)
    result = cli("download", "mine", "--url", url)
    assert result.code == 2
    assert "--force" in result.err_text
    assert not (home / "datasets" / "mine").exists()


def test_a_404_is_one_sentence_naming_the_url(cli, server):
    result = cli("download", "mine", "--url", server.url("/gone.zip"))
    assert result.code == 2
    assert "gone.zip answered HTTP 404" in result.err_text
    assert "Traceback" not in result.err


def test_an_unknown_name_lists_the_valid_names(cli):
    result = cli("download", "horse2cat")
    assert result.code == 2
    assert "horse2zebra" in result.err_text and "monet2photo" in result.err_text
    assert "--url" in result.err_text


def test_download_list_shows_what_is_here(cli, server):
    url = server.add("/x.zip", dataset_zip())
    assert cli("download", "horse2zebra", "--url", url).code == 0
    result = cli("download", "--list")
    assert result.code == 0
    datasets_table, models_table = result.out.split("Pretrained generators")
    rows = {line.split("│")[1].strip(): line for line in datasets_table.splitlines() if line.count("│") > 3}
    assert "yes" in rows["horse2zebra"] and "KiB" in rows["horse2zebra"]
    assert "home/datasets/horse2zebra" in re.sub(r"[│\s]", "", datasets_table)
    assert "no" in rows["monet2photo"]
    assert "style_monet" in models_table


def test_download_without_a_name_is_a_usage_error(cli):
    result = cli("download")
    assert result.code == 2
    assert "--list" in result.err_text


def test_download_toy_generates_the_dataset(cli, home):
    pytest.importorskip("cgdistill.data.toy")
    result = cli("download", "toy")
    assert result.code == 0, result.err
    assert (home / "datasets" / "toy" / "trainA").is_dir()
    assert (home / "datasets" / "toy" / "trainB").is_dir()
    assert "already here" in cli("download", "toy").out


def test_pretrained_download_fetches_the_weights_and_imports_them_with_the_registry_direction(
    cli, server, home, fake_official
):
    url = server.add("/zebra2horse.pth", b"weights")
    result = cli("download", "--pretrained", "zebra2horse", "--url", url)
    assert result.code == 0, result.err
    assert (home / "downloads" / "zebra2horse.pth").read_bytes() == b"weights"
    assert fake_official == [
        {
            "pth": home / "downloads" / "zebra2horse.pth",
            "name": "zebra2horse",
            "direction": "B2A",
            "dataset": "horse2zebra",
        }
    ]
    assert "zebras -> horses" in result.out
    assert "--model zebra2horse" in result.err_text


def test_pretrained_from_file_accepts_any_name_as_a2b_unless_told(cli, tmp_path, fake_official):
    pth = tmp_path / "mine.pth"
    pth.write_bytes(b"weights")
    assert cli("download", "--pretrained", "my_gen", "--from-file", pth).code == 0
    assert cli("download", "--pretrained", "other_gen", "--from-file", pth, "--direction", "B2A").code == 0
    assert [(c["name"], c["direction"], c["dataset"]) for c in fake_official] == [
        ("my_gen", "A2B", None),
        ("other_gen", "B2A", None),
    ]


def test_pretrained_unknown_name_lists_the_models(cli, fake_official):
    result = cli("download", "--pretrained", "style_picasso")
    assert result.code == 2
    assert "style_monet" in result.err_text
    assert fake_official == []


def test_pretrained_bad_direction_is_refused(cli, tmp_path, fake_official):
    pth = tmp_path / "mine.pth"
    pth.write_bytes(b"weights")
    result = cli("download", "--pretrained", "x", "--from-file", pth, "--direction", "sideways")
    assert result.code == 2
    assert "A2B or B2A" in result.err_text


def test_pretrained_end_to_end_stores_a_teacher_run_with_the_generator_direction(cli, server, home, tmp_path):
    pytest.importorskip("cgdistill.official")
    helpers = pytest.importorskip("test_official")  # builds a network in the published layout
    import torch

    from cgdistill.weights import read_info

    pth = tmp_path / "style_monet.pth"
    torch.save(helpers.official_network(ngf=8, n_blocks=2).state_dict(), pth)
    url = server.add("/style_monet.pth", pth.read_bytes(), cut_after=pth.stat().st_size // 3)
    result = cli("download", "--pretrained", "style_monet", "--url", url)
    assert result.code == 0, result.err
    model = home / "runs" / "style_monet" / "G_B2A.safetensors"
    info = read_info(model)
    assert (info.direction, info.dataset) == ("B2A", "monet2photo")
    assert "photos -> Monet paintings" in result.out


def _official_pth(tmp_path: Path) -> Path:
    helpers = pytest.importorskip("test_official")  # builds a network in the published layout
    import torch

    pth = tmp_path / "x.pth"
    torch.save(helpers.official_network(ngf=4, n_blocks=1).state_dict(), pth)
    return pth


def _trained_teacher(home: Path, name: str) -> Path:
    from cgdistill.data.toy import make_toy_dataset
    from cgdistill.train.config import TeacherConfig
    from cgdistill.train.teacher import train_teacher

    make_toy_dataset(home / "datasets" / "toy", size=32, n_train=2, n_test=1)
    config = TeacherConfig(data="toy", name=name, blocks=1, ngf=4, ndf=4, image_size=24, load_size=28, max_steps=1,
                           device="cpu", amp=False, workers=0, sample_every=1000)  # fmt: skip
    return train_teacher(config)


def test_importing_over_a_trained_run_is_refused_and_changes_nothing(cli, home, tmp_path):
    run = _trained_teacher(home, "t")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = cli("download", "--pretrained", "t", "--from-file", _official_pth(tmp_path))
    assert result.code == 2
    assert "--name" in result.err_text and "--force" in result.err_text
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_an_import_can_take_another_name(cli, home, tmp_path):
    _trained_teacher(home, "t")
    result = cli("download", "--pretrained", "t", "--from-file", _official_pth(tmp_path), "--name", "t-official")
    assert result.code == 0, result.err
    assert (home / "runs" / "t-official" / "G_A2B.safetensors").is_file()


def test_force_replaces_a_trained_run_whole(cli, home, tmp_path):
    run = _trained_teacher(home, "t")
    result = cli("download", "--pretrained", "t", "--from-file", _official_pth(tmp_path), "--force")
    assert result.code == 0, result.err
    assert sorted(p.name for p in run.iterdir()) == ["G_A2B.safetensors", "config.json"]
    assert not [p for p in (home / "runs").iterdir() if p.name.startswith(".")]


def test_a_failed_forced_import_keeps_the_trained_run(cli, home, tmp_path):
    run = _trained_teacher(home, "t")
    before = sorted(p.name for p in run.iterdir())
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    result = cli("download", "--pretrained", "t", "--from-file", broken, "--force")
    assert result.code == 2
    assert sorted(p.name for p in run.iterdir()) == before
    assert not [p for p in (home / "runs").iterdir() if p.name.startswith(".")]


def test_reimporting_over_an_earlier_import_needs_no_force(cli, home, tmp_path):
    pth = _official_pth(tmp_path)
    assert cli("download", "--pretrained", "mine", "--from-file", pth).code == 0
    assert cli("download", "--pretrained", "mine", "--from-file", pth).code == 0


def _pair_pth(tmp_path: Path) -> Path:
    """A file with two generators whose names say their direction (imports as A2B and B2A)."""
    helpers = pytest.importorskip("test_official")
    import torch

    pth = tmp_path / "pair.pth"
    pair = {"G_AB": helpers.official_network(ngf=4, n_blocks=1, seed=1).state_dict()}
    pair["G_BA"] = helpers.official_network(ngf=4, n_blocks=1, seed=2).state_dict()
    torch.save(pair, pth)
    return pth


def test_reimporting_both_directions_over_an_earlier_import_needs_no_force(cli, home, tmp_path):
    pth = _pair_pth(tmp_path)
    assert cli("download", "--pretrained", "pair", "--from-file", pth).code == 0
    again = cli("download", "--pretrained", "pair", "--from-file", pth)
    assert again.code == 0, again.err
    run = home / "runs" / "pair"
    assert sorted(p.name for p in run.iterdir()) == ["G_A2B.safetensors", "G_B2A.safetensors", "config.json"]


def test_an_import_made_before_layouts_is_still_an_earlier_import(cli, home, tmp_path):
    import json

    run = home / "runs" / "old"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"kind": "teacher", "source": "official-pretrained"}))
    result = cli("download", "--pretrained", "old", "--from-file", _official_pth(tmp_path))
    assert result.code == 0, result.err
    assert json.loads((run / "config.json").read_text())["source"] == "imported-pretrained"


def test_key_and_name_together_import_one_network_beside_a_trained_run(cli, home, tmp_path):
    run = _trained_teacher(home, "t")
    before = sorted(p.name for p in run.iterdir())
    result = cli("download", "--pretrained", "t", "--from-file", _pair_pth(tmp_path), "--key", "G_BA", "--name", "t2")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (home / "runs" / "t2").iterdir()) == ["G_B2A.safetensors", "config.json"]
    assert sorted(p.name for p in run.iterdir()) == before


def test_force_replaces_a_trained_run_with_both_imported_directions(cli, home, tmp_path):
    run = _trained_teacher(home, "t")
    result = cli("download", "--pretrained", "t", "--from-file", _pair_pth(tmp_path), "--force")
    assert result.code == 0, result.err
    assert sorted(p.name for p in run.iterdir()) == ["G_A2B.safetensors", "G_B2A.safetensors", "config.json"]
