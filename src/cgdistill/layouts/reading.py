"""Reading a weights file of any origin without running anything in it.

``.pth`` / ``.pt`` / ``.ckpt`` go through ``torch.load(weights_only=True)``, which refuses pickled
objects other than tensors and plain containers; ``.safetensors`` holds no code at all. What comes
out is every tensor under its dotted path, in the order the file stores them (the order modules
were registered in, for ``torch.save``), plus the plain values beside them (epoch, versions).
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cgdistill.errors import CgdistillError
from cgdistill.fsutil import not_a_file_reason
from cgdistill.weights import read_safetensors

WRAPPER_SEGMENTS = ("module", "_orig_mod")
"""Path segments added by DataParallel/DDP and torch.compile when a wrapped model was saved."""

SAFETENSORS_SUFFIX = ".safetensors"


@dataclass
class WeightsFile:
    """What a weights file holds, with nothing interpreted yet."""

    path: Path
    format: str  # "pytorch" or "safetensors"
    tensors: list[tuple[str, torch.Tensor]]
    metadata: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # optimizer states and tensor lists, not networks


def load_weights_only(path: Path) -> object:
    """``torch.load(weights_only=True)`` on the CPU, without torch's warning about the pickle protocol.

    Torch warns when a file was pickled with another protocol than its own (any plain ``pickle.dump``)
    and then loads or refuses it all the same; the caller's outcome says all a user can act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def read_pth(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``: arbitrary pickled objects are refused, never run."""
    if not os.path.isfile(path):
        raise CgdistillError(f"Checkpoint file {path} {not_a_file_reason(path)}.")
    try:
        return load_weights_only(path)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CgdistillError(
                f"{path} contains pickled Python objects other than tensors, which cgdistill refuses to load "
                "(it reads checkpoints with torch.load(weights_only=True) so that no code in them can run); "
                "save the generator's plain state_dict() instead."
            ) from None
        raise CgdistillError(
            f"{path} is not a readable PyTorch checkpoint; it may be truncated or of another format."
        ) from None
    except Exception as exc:  # torch raises many types for damaged files; all are the user's file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CgdistillError(
            f"{path} is not a readable PyTorch checkpoint ({reason}); it may be truncated or of another format."
        ) from None


def natural_key(path: str) -> tuple:
    """``model.10`` after ``model.9``: numbered segments compare as numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.split("."))


def strip_wrappers(key: str) -> str:
    return ".".join(part for part in key.split(".") if part not in WRAPPER_SEGMENTS)


def _is_optimizer_state(obj: Mapping) -> bool:
    return "param_groups" in obj and "state" in obj


def _describe_value(value: object) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _flatten(obj: object, prefix: str, into: WeightsFile) -> None:
    if isinstance(obj, torch.Tensor):
        into.tensors.append((strip_wrappers(prefix), obj))
    elif isinstance(obj, Mapping):
        if _is_optimizer_state(obj):
            into.skipped.append(f"{prefix or 'the file'} (optimizer state)")
            return
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), into)
    elif isinstance(obj, (list, tuple)):
        if any(isinstance(item, (torch.Tensor, Mapping)) for item in obj):
            into.skipped.append(f"{prefix} (a list of {len(obj)} states)")
        else:
            into.metadata[prefix] = _describe_value(list(obj))
    else:
        into.metadata[prefix] = _describe_value(obj)


def read_weights(path: Path | str) -> WeightsFile:
    """Every tensor of a ``.pth``/``.pt``/``.ckpt``/``.safetensors`` file under its dotted path.

    Nested dictionaries become path segments (``{"G_AB": {"model.1.weight": t}}`` gives
    ``G_AB.model.1.weight``); ``module.`` / ``_orig_mod.`` segments are dropped. Safetensors files
    keep no order, so their keys come in natural order.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        raise CgdistillError(
            f"{path} is an ONNX export, not a weights file; use the .safetensors model it was exported from "
            f"(`cgdistill translate --model {path}` runs the ONNX file itself)."
        )
    if path.suffix == SAFETENSORS_SUFFIX:
        tensors, header = read_safetensors(path)
        ordered = sorted(tensors, key=natural_key)
        return WeightsFile(path, "safetensors", [(strip_wrappers(k), tensors[k]) for k in ordered], dict(header))
    obj = read_pth(path)
    if not isinstance(obj, Mapping):
        raise CgdistillError(f"{path} holds a {type(obj).__name__}, not a state dict of named tensors.")
    weights = WeightsFile(path, "pytorch", [])
    _flatten(obj, "", weights)
    if not weights.tensors:
        held = ", ".join(list(weights.metadata)[:4]) or "nothing"
        raise CgdistillError(f"{path} holds no tensors (only {held}); it is not a network's weights.")
    return weights
