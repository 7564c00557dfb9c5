"""The schema of a model file's metadata: every entry's type, range and allowed values, in one table.

A ``.safetensors`` file may come from anyone, so its metadata is input to check, not data to trust:
:func:`parse_metadata` turns the raw strings into typed values or one sentence naming the file and
the entry, before anything builds a network, names an output or resolves a dataset from it.

Adding an entry (a new architecture option, say) is one line in the table it belongs to; entries
the schema does not know are ignored, and so are unknown keys inside ``extra``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from cgdistill.errors import CgdistillError
from cgdistill.nets import GeneratorConfig
from cgdistill.options import BLOCKS, DIRECTIONS, ENDS, NORMS, PADDINGS, UPSAMPLES

FORMAT = "cgdistill"
FORMAT_VERSION = 1
DOMAINS = ("A", "B")
KINDS = ("generator", "discriminator")
MAX_TEXT = 1024  # longer than any path or name we write; a stranger's file gets no more
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,18}")


def integer(low: int, high: int) -> Callable[[str], int]:
    """A decimal integer in [low, high]."""

    def parse(text: str) -> int:
        if not _WHOLE_NUMBER.fullmatch(text):
            raise ValueError(f"is not a whole number ({text[:40]!r})")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"is {value}, outside {low}..{high}")
        return value

    return parse


def one_of(*allowed: str) -> Callable[[str], str]:
    """Exactly one of ``allowed``."""

    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"is {text[:40]!r}, not one of {', '.join(allowed)}")
        return text

    return parse


def text(text: str) -> str:
    """Printable text of bounded length (names and paths we display and may resolve)."""
    if len(text) > MAX_TEXT:
        raise ValueError(f"is {len(text)} characters long (at most {MAX_TEXT})")
    if not text.isprintable():
        raise ValueError("contains control characters")
    return text


def plain_name(value: str) -> str:
    """A dataset's name: one folder name, never a path.

    Files written before names were enforced recorded ``--data /some/folder`` as the whole path;
    they read as the folder's name (what is recorded now), so they keep loading.
    """
    value = text(value)
    name = PureWindowsPath(value).name if "/" in value or "\\" in value else value
    if not name or name in (".", ".."):
        raise ValueError(f"is {value[:40]!r}, not a dataset name")
    return name


def json_object(value: str) -> dict:
    """A JSON object (free-form; keys this version does not know are kept and ignored)."""
    try:
        parsed = json.loads(value)
    except ValueError:
        raise ValueError("is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"is JSON {type(parsed).__name__}, not an object")
    return parsed


@dataclass(frozen=True)
class Entry:
    """One metadata entry: how its text becomes a value, and whether a file must have it."""

    parse: Callable[[str], object]
    required: bool = False


COMMON_FIELDS: dict[str, Entry] = {
    "format_version": Entry(integer(1, 10**6), required=True),
    "kind": Entry(one_of(*KINDS), required=True),
    "cgdistill_version": Entry(text),
    "step": Entry(integer(0, 10**15)),
    "direction": Entry(one_of(*DIRECTIONS)),
    "dataset": Entry(plain_name),
    "image_size": Entry(integer(1, 1 << 16)),
    "teacher": Entry(text),
    "judges": Entry(one_of(*DOMAINS)),  # discriminators: the domain whose images it judges (absent before issue 14)
    "extra": Entry(json_object),
}

# Architecture entries: passed to the network's config, so each is a field of GeneratorConfig /
# DiscriminatorConfig; absent optional entries take that config's default.
GENERATOR_FIELDS: dict[str, Entry] = {
    "blocks": Entry(integer(1, 256), required=True),
    "ngf": Entry(integer(1, 4096), required=True),
    "norm": Entry(one_of(*NORMS), required=True),
    "upsample": Entry(one_of(*UPSAMPLES)),
    "in_channels": Entry(integer(1, 64)),
    "out_channels": Entry(integer(1, 64)),
    "down_padding": Entry(one_of(*PADDINGS)),
    "up_padding": Entry(one_of(*PADDINGS)),
    "block": Entry(one_of(*BLOCKS)),
    "ends": Entry(one_of(*ENDS)),  # absent before issue 29: full
}
DISCRIMINATOR_FIELDS: dict[str, Entry] = {
    "ndf": Entry(integer(1, 4096), required=True),
    "n_layers": Entry(integer(1, 16), required=True),
    "norm": Entry(one_of(*NORMS), required=True),
    "in_channels": Entry(integer(1, 64)),
}
ARCHITECTURES = {"generator": ("resnet", GENERATOR_FIELDS), "discriminator": ("patchgan", DISCRIMINATOR_FIELDS)}


def _parse(meta: dict[str, str], fields: dict[str, Entry], path: Path) -> dict[str, object]:
    values = {}
    for key, entry in fields.items():
        if key not in meta:
            if entry.required:
                raise CgdistillError(
                    f"Model file {path} lacks the '{key}' metadata; it is damaged or from another tool."
                )
            continue
        try:
            values[key] = entry.parse(meta[key])
        except ValueError as exc:
            raise CgdistillError(
                f"Model file {path} has invalid '{key}' metadata: it {exc}; the file is damaged or not a "
                "cgdistill model, so it is not used."
            ) from None
    return values


def parse_metadata(meta: dict[str, str], path: Path) -> tuple[dict[str, object], dict[str, object]]:
    """Check ``meta`` against the schema; returns (common values, architecture config), both typed.

    Raises one sentence naming ``path`` and the entry at fault, or asking for a newer cgdistill.
    """
    if meta.get("format") != FORMAT:
        raise CgdistillError(
            f"{path} is a safetensors file but was not written by cgdistill (no format=cgdistill metadata); "
            "import official CycleGAN weights with `cgdistill download --pretrained NAME --from-file FILE.pth`."
        )
    common = _parse(meta, COMMON_FIELDS, path)
    if common["format_version"] > FORMAT_VERSION:
        from cgdistill import __version__

        raise CgdistillError(
            f"{path} uses model format version {common['format_version']}, newer than this cgdistill "
            f"({__version__}) reads; upgrade cgdistill."
        )
    arch, fields = ARCHITECTURES[common["kind"]]
    common["arch"] = _parse(meta, {"arch": Entry(one_of(arch))}, path).get("arch", arch)
    config = _parse(meta, fields, path)
    if common["kind"] == "generator":
        try:  # entries that are each valid may still not go together (deconv with up_padding, say)
            GeneratorConfig(**config)
        except ValueError as exc:
            raise CgdistillError(
                f"Model file {path} has inconsistent architecture metadata ({exc}); the file is damaged or not a "
                "cgdistill model, so it is not used."
            ) from None
    return common, config
