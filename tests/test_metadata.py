"""A model file's metadata is a stranger's input: one schema checks it before anything uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cgdistill.errors import CgdistillError
from cgdistill.metadata import GENERATOR_FIELDS
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.weights import load_generator, read_info, save_generator
from cgdistill.worklist import plan_outputs


def model_file(path: Path, **changes: str | None) -> Path:
    """A tiny generator file whose metadata entries are replaced (None removes one)."""
    save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), path, direction="A2B", dataset="toy")
    with safe_open(str(path), "pt") as handle:
        meta = dict(handle.metadata())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    save_file(load_file(str(path)), str(path), metadata=meta)
    return path


BAD_METADATA = [
    ("blocks", "three"),
    ("blocks", "-2"),
    ("blocks", "0"),
    ("blocks", "1e9"),
    ("ngf", "0"),
    ("ngf", "4.5"),
    ("ngf", "99999999"),
    ("norm", "weird"),
    ("upsample", "pixelshuffle"),
    ("down_padding", "mirror"),
    ("up_padding", "circular"),
    ("in_channels", "0"),
    ("direction", "/../../x"),
    ("direction", "X2Y"),
    ("direction", "a2b"),
    ("extra", "{not json"),
    ("extra", "[1, 2]"),
    ("format_version", "one"),
    ("format_version", "0"),
    ("kind", "painter"),
    ("arch", "unet"),
    ("step", "-1"),
    ("image_size", "big"),
    ("dataset", "../.."),  # a path reads as its folder's name; one that names no folder is refused
    ("teacher", "x" * 5000),
    ("teacher", "bad\x00name"),
]


@pytest.mark.parametrize(("key", "value"), BAD_METADATA)
def test_malformed_metadata_is_one_sentence_naming_the_file_and_the_field(tmp_path, key, value):
    path = model_file(tmp_path / "G.safetensors", **{key: value})
    with pytest.raises(CgdistillError) as caught:
        read_info(path)
    message = caught.value.message
    assert str(path) in message and key in message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("key", ["blocks", "ngf", "norm", "kind"])
def test_a_missing_required_field_is_named(tmp_path, key):
    path = model_file(tmp_path / "G.safetensors", **{key: None})
    with pytest.raises(CgdistillError, match=f"'{key}'"):
        read_info(path)


@pytest.mark.parametrize(("key", "value"), BAD_METADATA[:6])
def test_translate_refuses_malformed_metadata_with_exit_2(cli, tmp_path, key, value):
    path = model_file(tmp_path / "G.safetensors", **{key: value})
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16)).save(image)
    result = cli("translate", image, "--model", path, "-o", tmp_path / "out")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_direction_from_a_file_never_leaves_the_output_folder(cli, tmp_path):
    path = model_file(tmp_path / "G.safetensors", direction="/../../x")
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16)).save(image)
    out = tmp_path / "OUT" / "deep"
    result = cli("translate", image, "--model", path, "-o", out)
    assert result.code == 2
    assert not (tmp_path / "OUT" / "x.png").exists() and not out.exists()


def test_entries_valid_alone_but_not_together_are_one_sentence(tmp_path):
    # Transposed convs do not pad, so a deconv generator with a zero up_padding describes no network.
    path = model_file(tmp_path / "G.safetensors", upsample="deconv", up_padding="zeros")
    with pytest.raises(CgdistillError, match="inconsistent architecture metadata") as caught:
        read_info(path)
    assert str(path) in caught.value.message and "up_padding" in caught.value.message


def test_unknown_keys_are_tolerated_at_the_top_and_in_extra(tmp_path):
    path = model_file(tmp_path / "G.safetensors", padding="zeros-someday", extra='{"future": [1, 2], "init": "copy"}')
    info = read_info(path)
    assert info.extra == {"future": [1, 2], "init": "copy"}
    assert load_generator(path)[0].config.blocks == 1


def test_optional_fields_fall_back_to_the_architecture_defaults(tmp_path):
    path = model_file(tmp_path / "G.safetensors", upsample=None, in_channels=None, out_channels=None, direction=None)
    info = read_info(path)
    assert info.direction is None
    assert load_generator(path)[0].config == GeneratorConfig(blocks=1, ngf=4)


def test_every_generator_config_field_has_a_schema_entry():
    # A new architecture field (say `block`) is one entry in GENERATOR_FIELDS and nothing else.
    assert set(GeneratorConfig().to_dict()) <= set(GENERATOR_FIELDS)


def test_weights_larger_than_the_file_holds_are_refused_before_building(tmp_path):
    # Plausible numbers, but the tensors do not fit: nothing of the described size is allocated.
    path = model_file(tmp_path / "G.safetensors", blocks="100", ngf="4096")
    with pytest.raises(CgdistillError, match="do not fit"):
        load_generator(path)


def test_output_names_stay_inside_the_output_folder(tmp_path):
    outputs, _ = plan_outputs([tmp_path / "in.png"], tmp_path / "out", "B2A")
    assert outputs == [tmp_path / "out" / "in_B2A.png"]
    with pytest.raises(CgdistillError, match="Direction .* is not valid"):
        plan_outputs([tmp_path / "in.png"], tmp_path / "out", "/../../x")


def test_a_file_reading_would_refuse_is_never_written(tmp_path):
    with pytest.raises(CgdistillError, match="'dataset'"):
        save_generator(ResnetGenerator(GeneratorConfig(blocks=1, ngf=4)), tmp_path / "G.safetensors", dataset="x/..")
    assert not any(tmp_path.iterdir())


def test_a_run_on_a_data_folder_given_by_path_records_the_folders_name(home, tmp_path):
    from cgdistill.data.toy import make_toy_dataset
    from cgdistill.train.config import TeacherConfig
    from cgdistill.train.teacher import train_teacher

    data = make_toy_dataset(tmp_path / "my pairs", size=32, n_train=2, n_test=1)
    run = train_teacher(
        TeacherConfig(
            data=str(data),
            name="t",
            blocks=1,
            ngf=4,
            ndf=4,
            image_size=24,
            load_size=28,
            max_steps=1,
            device="cpu",
            amp=False,
            workers=0,
            sample_every=1000,
        )  # fmt: skip
    )
    assert read_info(run / "G_A2B.safetensors").dataset == "my pairs"
