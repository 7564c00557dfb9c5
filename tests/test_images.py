"""Reading images: every common mode becomes 8-bit RGB the right way up; bad files are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cgdistill.data.images import list_images, probe_image, read_image, read_image_with_alpha
from cgdistill.errors import CgdistillError
from image_folder import check_images

RED, BLUE = (255, 0, 0), (0, 0, 255)


def rgb(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored sideways: left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise".
    stored = Image.new("RGB", (32, 16), RED)
    stored.paste(BLUE, (16, 0, 32, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, quality=95, exif=exif)

    pixels = rgb(read_image(path))
    assert pixels.shape == (32, 16, 3)
    assert np.allclose(pixels[4, 8], RED, atol=20)
    assert np.allclose(pixels[28, 8], BLUE, atol=20)


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(np.array([[0, 77], [200, 255]], dtype=np.uint8)).save(path)
    pixels = rgb(read_image(path))
    assert np.array_equal(pixels[..., 0], [[0, 77], [200, 255]])
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "depth.png"
    Image.fromarray(np.array([[0, 257 * 128], [257 * 200, 65535]], dtype=np.uint16)).save(path)
    pixels = rgb(read_image(path))
    assert np.array_equal(pixels[..., 0], [[0, 128], [200, 255]])


def test_sixteen_bit_tiff_is_scaled_too(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(path)
    assert np.array_equal(rgb(read_image(path))[..., 1], [[0, 255]])


def test_palette_image_keeps_its_colours(tmp_path: Path) -> None:
    path = tmp_path / "palette.gif"
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE] + [0] * 762)
    image.putdata([0, 1])
    image.save(path)
    assert np.array_equal(rgb(read_image(path))[0], [RED, BLUE])
    assert read_image_with_alpha(path)[1] is None


def test_palette_image_with_transparency_drops_it_for_training_and_returns_it_for_translate(tmp_path: Path) -> None:
    path = tmp_path / "sticker.png"
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE] + [0] * 762)
    image.putdata([0, 1])
    image.save(path, transparency=1)
    assert np.array_equal(rgb(read_image(path))[0], [RED, BLUE])
    colour, alpha = read_image_with_alpha(path)
    assert np.array_equal(rgb(colour)[0], [RED, BLUE])
    assert alpha is not None and alpha.tobytes() == bytes([255, 0])


def test_rgba_drops_alpha_and_keeps_the_colour_under_it(tmp_path: Path) -> None:
    path = tmp_path / "logo.png"
    Image.fromarray(np.array([[[10, 20, 30, 255], [40, 50, 60, 0]]], dtype=np.uint8), "RGBA").save(path)
    assert np.array_equal(rgb(read_image(path))[0], [[10, 20, 30], [40, 50, 60]])
    colour, alpha = read_image_with_alpha(path)
    assert np.array_equal(rgb(colour)[0], [[10, 20, 30], [40, 50, 60]])
    assert alpha is not None and alpha.mode == "L" and alpha.tobytes() == bytes([255, 0])


def test_grayscale_with_alpha_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[[90, 0], [180, 255]]], dtype=np.uint8), "LA").save(path)
    assert np.array_equal(rgb(read_image(path))[0], [[90] * 3, [180] * 3])


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=100)
    assert np.allclose(rgb(read_image(path))[4, 4], RED, atol=8)


def test_rgb_without_alpha_has_no_alpha(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGB", (3, 3), BLUE).save(path)
    colour, alpha = read_image_with_alpha(path)
    assert alpha is None and np.array_equal(rgb(colour)[1, 1], BLUE)


def test_unreadable_file_raises_a_sentence_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(CgdistillError, match=r"notes\.png"):
        read_image(path)
    with pytest.raises(CgdistillError, match=r"missing\.png does not exist"):
        read_image(tmp_path / "missing.png")


def test_check_images_reports_corrupt_files_by_name_and_keeps_good_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), RED).save(good)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00" * 100)
    damaged = tmp_path / "damaged.png"
    data = bytearray(good.read_bytes())
    data[60] ^= 0xFF  # corrupt a byte inside a chunk: the CRC check fails without decoding pixels
    damaged.write_bytes(bytes(data))

    readable, bad = check_images([good, garbage, damaged])
    assert readable == [good]
    assert [path.name for path, _ in bad] == ["garbage.jpg", "damaged.png"]
    assert all(reason and str(tmp_path) not in reason for _, reason in bad)


def test_probe_image_reads_the_size_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (40, 10)).save(path)
    assert probe_image(path) == (40, 10)


def test_list_images_is_sorted_case_insensitive_and_skips_other_files(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.JpEg", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.webp").write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.JpEg"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.jpg", "b.PNG", "c.JpEg", "d.webp"]


def test_list_images_of_a_missing_folder_is_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(CgdistillError, match="does not exist"):
        list_images(tmp_path / "nowhere")
