import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cgdistill.errors import CgdistillError
from cgdistill.nets import DiscriminatorConfig, GeneratorConfig, PatchDiscriminator, ResnetGenerator
from cgdistill.weights import (
    load_discriminator,
    load_generator,
    read_info,
    read_safetensors,
    save_discriminator,
    save_generator,
)


def test_generator_is_rebuilt_from_its_file_alone(tmp_path: Path):
    g = ResnetGenerator(GeneratorConfig(blocks=2, ngf=8, norm="instance-affine", upsample="resize-conv")).eval()
    path = save_generator(g, tmp_path / "G.safetensors", direction="B2A", dataset="toy", image_size=64, step=12)
    loaded, info = load_generator(path)
    assert loaded.config == g.config
    assert (info.direction, info.dataset, info.image_size, info.step) == ("B2A", "toy", 64, 12)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), g(x), rtol=0, atol=0)


def test_metadata_lists_the_design_fields(tmp_path: Path):
    g = ResnetGenerator(GeneratorConfig(blocks=3, ngf=8))
    path = save_generator(g, tmp_path / "G.safetensors", direction="A2B", teacher="runs/toy")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    for key in (
        "format",
        "format_version",
        "kind",
        "arch",
        "blocks",
        "ngf",
        "norm",
        "upsample",
        "direction",
        "step",
        "teacher",
        "cgdistill_version",
    ):
        assert key in meta
    assert meta["format"] == "cgdistill" and meta["blocks"] == "3" and meta["teacher"] == "runs/toy"


def test_discriminator_round_trips(tmp_path: Path):
    d = PatchDiscriminator(DiscriminatorConfig(ndf=8, n_layers=2))
    path = save_discriminator(d, tmp_path / "D_A.safetensors", dataset="toy")
    loaded, info = load_discriminator(path)
    assert info.kind == "discriminator" and loaded.config == d.config


def test_save_leaves_no_temporary_files(tmp_path: Path):
    save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), tmp_path / "G.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["G.safetensors"]


def test_a_failed_save_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), tmp_path / "G.safetensors", step=1)
    import cgdistill.fsutil as fsutil

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fsutil.os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), path, step=2)
    monkeypatch.undo()
    assert read_info(path).step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["G.safetensors"]


def test_a_file_that_is_not_safetensors_is_one_sentence_naming_it(tmp_path: Path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(CgdistillError, match="model.safetensors is not a readable safetensors"):
        load_generator(bad)


def test_a_truncated_file_is_refused(tmp_path: Path):
    path = save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), tmp_path / "G.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CgdistillError, match="G.safetensors"):
        load_generator(path)


def test_a_foreign_safetensors_file_is_refused(tmp_path: Path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CgdistillError, match="not written by cgdistill"):
        load_generator(path)


def test_a_discriminator_is_not_loaded_as_a_generator(tmp_path: Path):
    path = save_discriminator(PatchDiscriminator(DiscriminatorConfig(ndf=4)), tmp_path / "D.safetensors")
    with pytest.raises(CgdistillError, match="not a generator"):
        load_generator(path)


def test_the_padding_of_an_imported_layout_round_trips_through_the_metadata(tmp_path: Path):
    config = GeneratorConfig(blocks=2, ngf=8, upsample="resize-conv", down_padding="reflect", up_padding="zeros")
    g = ResnetGenerator(config).eval()
    loaded, _ = load_generator(save_generator(g, tmp_path / "G.safetensors"))
    assert loaded.config == config
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), g(x), rtol=0, atol=0)


def test_a_separable_generator_round_trips_with_its_block_kind(tmp_path: Path):
    g = ResnetGenerator(GeneratorConfig(blocks=2, ngf=8, block="separable")).eval()
    path = save_generator(g, tmp_path / "G.safetensors")
    assert read_info(path).config["block"] == "separable"
    loaded, _ = load_generator(path)
    assert loaded.config.block == "separable"
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), g(x), rtol=0, atol=0)


def test_a_file_written_before_the_padding_fields_loads_with_the_published_padding(tmp_path: Path):
    g = ResnetGenerator(GeneratorConfig(blocks=1, ngf=4))
    path = save_generator(g, tmp_path / "G.safetensors")
    tensors, meta = read_safetensors(path)
    del meta["down_padding"], meta["up_padding"]
    save_file(tensors, str(path), metadata=meta)
    loaded, _ = load_generator(path)
    assert (loaded.config.down_padding, loaded.config.up_padding) == ("zeros", "reflect")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_files_written_atomically_get_the_mode_open_would_give(tmp_path: Path, umask: int):
    from cgdistill.fsutil import atomic_write_text

    previous = os.umask(umask)
    try:
        model = save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), tmp_path / "G.safetensors")
        atomic_write_text(tmp_path / "config.json", "{}")
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == expected
    assert stat.S_IMODE(model.stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == expected


def test_a_file_that_recorded_its_dataset_as_a_path_reads_as_the_folders_name(tmp_path):
    # Before dataset names were enforced, `--data /some/folder` went into the metadata whole.
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), tmp_path / "G.safetensors", dataset="toy")
    with safe_open(str(path), "pt") as handle:
        meta = dict(handle.metadata())
    save_file(load_file(str(path)), str(path), metadata={**meta, "dataset": "/data/shared/monet2photo-mini"})
    assert read_info(path).dataset == "monet2photo-mini"


def test_a_file_written_before_block_kinds_existed_loads_as_standard(tmp_path: Path):
    g = ResnetGenerator(GeneratorConfig(blocks=1, ngf=4))
    path = save_generator(g, tmp_path / "G.safetensors")
    tensors, meta = read_safetensors(path)
    del meta["block"]
    save_file(tensors, str(path), metadata=meta)
    loaded, _ = load_generator(path)
    assert loaded.config.block == "standard"
