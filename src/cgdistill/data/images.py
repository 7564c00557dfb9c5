"""Reading user images of any common format as 8-bit RGB, and a fast check that they can be read.

Real datasets hold grayscale scans, palette GIFs, RGBA PNGs, 16-bit TIFFs, CMYK JPEGs and phone
photos whose pixels are stored sideways with an EXIF orientation tag. Everything downstream wants
plain 8-bit RGB the right way up, so every image enters the project through :func:`read_image`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cgdistill.errors import CgdistillError

# Lower-case suffixes; matching is case-insensitive (photos often end in .JPG).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}

# What PIL raises for files it cannot parse (truncated, corrupt, unsupported, too large).
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is a known image format."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (and its subfolders when ``recursive``), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CgdistillError(f"Image folder {folder} does not exist.")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if is_image_file(p) and p.is_file())


def _reason(error: BaseException) -> str:
    """PIL's complaint in a few words, without the file name (the sentence around it names the file)."""
    if isinstance(error, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(error, FileNotFoundError):
        return "the file does not exist"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    text = str(error).strip().rstrip(".")
    return text or type(error).__name__


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path`` with EXIF orientation applied, or raise a one-sentence error."""
    path = Path(path)
    if not path.is_file():
        raise CgdistillError(f"Image file {path} does not exist.")
    try:
        with warnings.catch_warnings():
            # A large but legal image is not an error here; a decompression bomb still raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                transposed = ImageOps.exif_transpose(image)
                # exif_transpose returns a copy when it rotates; copy otherwise so the file is closed.
                return transposed if transposed is not image else image.copy()
    except CgdistillError:
        raise
    except _READ_ERRORS as error:
        raise CgdistillError(f"Cannot read image {path}: {_reason(error)}.") from error


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; alpha is dropped (the colour under it is kept)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(image)).convert("RGB")
    if mode == "P":
        # Palette images with a transparent index go through RGBA so PIL resolves the palette fully.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        return image.convert("RGB")
    if mode in _ALPHA_MODES:
        return image.convert("RGBA").convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV: PIL knows the conversion (CMYK JPEGs are un-inverted when decoded).
    return image.convert("RGB")


def _scale_to_uint8(image: Image.Image) -> np.ndarray:
    """Map high-bit-depth grayscale to 0-255 by its full range (65535 -> 255), never by clipping."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        # Float images: [0, 1] is the usual convention; anything larger is scaled by its maximum.
        top = max(1.0, float(values.max(initial=0.0)))
    else:
        # 16-bit files open as I;16 or I (32-bit ints holding 0..65535); wider data by its maximum.
        top = max(65535.0, float(values.max(initial=0.0)))
    return np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)


def read_image(path: Path) -> Image.Image:
    """Read ``path`` as an 8-bit RGB image the right way up (EXIF orientation applied).

    Grayscale, palette, RGBA (alpha dropped), 16-bit and CMYK images are all converted, so
    training and evaluation never see anything but RGB. Raises CgdistillError naming the file.
    """
    image = _open(path)
    try:
        return _to_rgb(image)
    except _READ_ERRORS as error:
        raise CgdistillError(f"Cannot convert image {path} ({image.mode}) to RGB: {_reason(error)}.") from error


def read_image_with_alpha(path: Path) -> tuple[Image.Image, Image.Image | None]:
    """Read ``path`` as (RGB image, alpha channel as an ``L`` image, or None when it has none).

    ``translate`` translates the colour and puts the original transparency back on the result.
    """
    image = _open(path)
    try:
        has_alpha = image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
        if not has_alpha:
            return _to_rgb(image), None
        rgba = image.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    except _READ_ERRORS as error:
        raise CgdistillError(f"Cannot convert image {path} ({image.mode}) to RGB: {_reason(error)}.") from error


def probe_image(path: Path) -> tuple[int, int]:
    """Check ``path``'s header without decoding the pixels and return its stored (width, height).

    Fast enough to run over a whole dataset before training starts. Raises CgdistillError naming
    the file when it is not a readable image.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                size = image.size
                image.verify()
    except _READ_ERRORS as error:
        raise CgdistillError(f"Cannot read image {path}: {_reason(error)}.") from error
    if size[0] < 1 or size[1] < 1:
        raise CgdistillError(f"Image {path} is empty ({size[0]}x{size[1]} pixels).")
    return size


def probe_images(paths: Iterable[Path]) -> tuple[dict[Path, tuple[int, int]], list[tuple[Path, str]]]:
    """Header-check ``paths``: ({readable path: (width, height)}, [(unreadable path, reason), ...])."""
    sizes: dict[Path, tuple[int, int]] = {}
    bad: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        try:
            sizes[path] = probe_image(path)
        except CgdistillError as error:
            bad.append((path, _short_reason(error, path)))
    return sizes, bad


def _short_reason(error: CgdistillError, path: Path) -> str:
    """The reason part of a probe error, without the file name (callers print the name themselves)."""
    message = error.message
    prefix = f"Cannot read image {path}: "
    return message[len(prefix) :].rstrip(".") if message.startswith(prefix) else message.rstrip(".")
