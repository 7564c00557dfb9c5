"""Official CycleGAN generator checkpoints: the one place that knows their layout and its variants.

The reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix) builds its ResNet generator as
one ``nn.Sequential`` named ``model``, so its state-dict keys are positional::

    model.1            7x7 conv (in -> ngf)            -> stem.1      (norm at model.2 -> stem.2)
    model.4, model.7   stride-2 convs                  -> down.0, down.3  (norms model.5, model.8)
    model.(10+i)       residual block i: conv_block.1, norm .2, conv .5, norm .6
                       (trained with dropout: conv .6, norm .7)  -> blocks.i.conv.{1,2,5,6}
    model.(10+n)       transposed conv (4ngf -> 2ngf)  -> up.0.0  (norm model.(11+n) -> up.0.1)
    model.(13+n)       transposed conv (2ngf -> ngf)   -> up.1.0  (norm model.(14+n) -> up.1.1)
    model.(17+n)       7x7 output conv (ngf -> out)    -> head.1

Variants accepted: plain instance norm (the published files), affine instance norm, batch norm (convs
without bias, real running statistics), dropout, a ``module.`` / ``_orig_mod.`` prefix, a
``state_dict``-style wrapper, and the stale InstanceNorm running statistics that the 2018 files carry
(dropped: instance norm never uses them). Files are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from cgdistill import paths
from cgdistill.checkpoint import save_generator
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_write_text, not_a_file_reason
from cgdistill.nets import GeneratorConfig, ResnetGenerator
from cgdistill.runs import CONFIG_FILE, check_direction, generator_file

KEY_PREFIXES = ("module.", "_orig_mod.")
"""Added by DataParallel/DDP and torch.compile when a wrapped model's state dict was saved."""

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "netG", "generator", "params")
"""Keys under which training scripts commonly nest a generator's state dict."""

RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")

_BLOCK_KEY = re.compile(r"^model\.(\d+)\.conv_block\.")


def _describe_shape(tensor: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in tensor.shape) + ")"


def _read_pth(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``: arbitrary pickled objects are refused, never run."""
    if not os.path.isfile(path):
        raise CgdistillError(f"Checkpoint file {path} {not_a_file_reason(path)}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
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


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside common wrappers and check it holds tensors only."""
    for _ in range(3):
        if not isinstance(obj, Mapping) or any(str(k).startswith(("model.", "module.", "_orig_mod.")) for k in obj):
            break
        nested = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
        if not nested:
            break
        obj = obj[nested[0]]
    if not isinstance(obj, Mapping):
        raise CgdistillError(f"{path} holds a {type(obj).__name__}, not a generator state dict.")
    if not obj:
        raise CgdistillError(f"{path} holds an empty state dict, not a generator.")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CgdistillError(
                f"{path} is not a generator state dict: entry {key!r} is a {type(value).__name__}, not a tensor."
            )
        state[str(key)] = value
    return state


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in KEY_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _split(key: str) -> tuple[str, str]:
    """``model.10.conv_block.1.weight`` -> (``model.10.conv_block.1``, ``weight``)."""
    module, _, name = key.rpartition(".")
    return module, name


def _module_map(blocks: int, dropout: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(official, ours) module-prefix pairs for the convs and for the norms of the layout."""
    second = 6 if dropout else 5
    convs = [("model.1", "stem.1"), ("model.4", "down.0"), ("model.7", "down.3")]
    norms = [("model.2", "stem.2"), ("model.5", "down.1"), ("model.8", "down.4")]
    for i in range(blocks):
        block = f"model.{10 + i}.conv_block"
        convs += [(f"{block}.1", f"blocks.{i}.conv.1"), (f"{block}.{second}", f"blocks.{i}.conv.5")]
        norms += [(f"{block}.2", f"blocks.{i}.conv.2"), (f"{block}.{second + 1}", f"blocks.{i}.conv.6")]
    n = blocks
    convs += [(f"model.{10 + n}", "up.0.0"), (f"model.{13 + n}", "up.1.0"), (f"model.{17 + n}", "head.1")]
    norms += [(f"model.{11 + n}", "up.0.1"), (f"model.{14 + n}", "up.1.1")]
    return convs, norms


def _detect(state: dict[str, torch.Tensor], path: Path) -> tuple[int, bool, str]:
    """Blocks, dropout and norm kind, read off the keys alone."""
    if "model.1.weight" not in state or state["model.1.weight"].ndim != 4:
        first = ", ".join(list(state)[:3])
        raise CgdistillError(
            f"{path} does not look like an official CycleGAN ResNet generator: it has no 4-d 'model.1.weight' "
            f"(its first keys are {first})."
        )
    indices = sorted({int(m.group(1)) for key in state if (m := _BLOCK_KEY.match(key))})
    if not indices:
        raise CgdistillError(
            f"{path} has no residual blocks (no 'model.K.conv_block' keys); it is not a CycleGAN ResNet generator "
            "(U-Net generators are not supported)."
        )
    blocks = len(indices)
    expected = list(range(10, 10 + blocks))
    if indices != expected:
        wrong = next(k for k, e in zip(indices, expected, strict=True) if k != e)
        raise CgdistillError(
            f"{path} does not fit the CycleGAN ResNet layout: residual block 'model.{wrong}.conv_block' is out of "
            f"place (blocks must run from model.10 to model.{9 + blocks})."
        )
    second = state.get("model.10.conv_block.6.weight")
    dropout = "model.10.conv_block.5.weight" not in state and second is not None and second.ndim == 4
    has_bias = "model.1.bias" in state
    has_norm = "model.2.weight" in state
    if has_bias:
        norm = "instance-affine" if has_norm else "instance"
    elif has_norm:
        norm = "batch"
    else:
        raise CgdistillError(
            f"{path} is a generator without normalisation layers (its convs have no bias and no norm weights), "
            "which cgdistill's generator does not support."
        )
    return blocks, dropout, norm


def load_official_state_dict(pth_path: Path | str) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """Read an official CycleGAN generator ``.pth`` and return our config and a state dict in our names.

    Every tensor is checked against the generator the config builds, so the result loads with
    ``strict=True``; the first mismatch is reported by its key in the file.
    """
    path = Path(pth_path)
    raw = _unwrap(_read_pth(path), path)
    state: dict[str, torch.Tensor] = {}
    original: dict[str, str] = {}
    for key, value in raw.items():
        clean = _strip_prefixes(key)
        state[clean], original[clean] = value, key

    blocks, dropout, norm = _detect(state, path)
    first_conv = state["model.1.weight"]
    ngf, in_channels = first_conv.shape[0], first_conv.shape[1]
    head = state.get(f"model.{17 + blocks}.weight")
    out_channels = head.shape[0] if head is not None and head.ndim == 4 else 3
    config = GeneratorConfig(
        blocks=blocks, ngf=ngf, norm=norm, upsample="deconv", in_channels=in_channels, out_channels=out_channels
    )

    convs, norms = _module_map(blocks, dropout)
    to_ours = dict(convs + norms)
    norm_modules = {official for official, _ in norms}
    reference = ResnetGenerator(config).state_dict()
    to_official = {}
    for official, ours in convs + norms:
        for name in ("weight", "bias", *RUNNING_STATS):
            to_official[f"{ours}.{name}"] = f"{official}.{name}"

    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        module, name = _split(key)
        if norm != "batch" and module in norm_modules and name in RUNNING_STATS:
            continue  # stale statistics of old InstanceNorm layers: instance norm never reads them
        ours = to_ours.get(module)
        target = f"{ours}.{name}" if ours is not None else None
        if target not in reference:
            raise CgdistillError(
                f"{path} does not fit a {blocks}-block ngf-{ngf} CycleGAN generator ({norm} norm): "
                f"unexpected key '{original[key]}'."
            )
        expected = reference[target]
        if value.shape != expected.shape:
            raise CgdistillError(
                f"{path} does not fit a {blocks}-block ngf-{ngf} CycleGAN generator ({norm} norm): "
                f"'{original[key]}' has shape {_describe_shape(value)} where {_describe_shape(expected)} is expected."
            )
        mapped[target] = value.to(expected.dtype)

    for target, expected in reference.items():
        if target in mapped:
            continue
        if target.endswith(".num_batches_tracked"):
            # Files saved before PyTorch 0.4.1 lack the counter; eval-mode batch norm never reads it.
            mapped[target] = torch.zeros_like(expected)
            continue
        raise CgdistillError(
            f"{path} does not fit a {blocks}-block ngf-{ngf} CycleGAN generator ({norm} norm): "
            f"key '{to_official.get(target, target)}' is missing."
        )
    return config, {key: mapped[key].contiguous() for key in reference}


def import_official(pth_path: Path | str, name: str, direction: str | None = None, dataset: str | None = None) -> Path:
    """Convert an official generator once into a teacher run ``name`` holding ``G_<direction>.safetensors``.

    Both the model file and ``config.json`` are written atomically, so re-importing over an existing
    run replaces it without ever leaving a half-written file. Returns the run folder.
    """
    pth_path = Path(pth_path)
    direction = check_direction(direction or "A2B")
    config, state = load_official_state_dict(pth_path)
    generator = ResnetGenerator(config)
    generator.load_state_dict(state, strict=True)
    generator.eval()

    run = paths.run_path(name)
    run.mkdir(parents=True, exist_ok=True)
    save_generator(
        generator,
        run / generator_file(direction),
        direction=direction,
        dataset=dataset,
        teacher=None,
        extra={"source": "official", "source_file": pth_path.name},
    )
    run_config = {
        "kind": "teacher",
        "source": "official-pretrained",
        "name": name,
        "direction": direction,
        "dataset": dataset,
        "source_file": pth_path.name,
        "generator": config.to_dict(),
    }
    atomic_write_text(run / CONFIG_FILE, json.dumps(run_config, indent=2, sort_keys=True) + "\n")
    return run
