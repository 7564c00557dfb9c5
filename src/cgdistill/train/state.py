"""Training state for exact resume, without pickle: tensors in safetensors, the rest in JSON.

Each checkpoint is a folder ``state/step_XXXXXXX/`` written under a temporary name and renamed
into place; ``state/latest.json`` (written atomically after the rename) names the complete one.
A kill at any moment therefore leaves the previous checkpoint loadable.

Format version 2 (issue 14) gave the teacher's discriminators the reference implementation's names
(``D_A`` judges domain B). Version 1 named them by the domain they judge; loading one swaps them back
into place. Nothing else moved: the D optimizer keeps the judge of domain A first, and the image
pools are keyed by the domain of the fakes they hold, in both versions.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cgdistill import __version__
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_write_text, fsync_dir, storage_errors
from cgdistill.nets import unwrap
from cgdistill.train.pool import ImagePool

STATE_DIR = "state"
LATEST = "latest.json"
FORMAT = "cgdistill-train-state"
FORMAT_VERSION = 2


@dataclass
class Position:
    """Where training stands: optimizer steps done, and the epoch and sample offset to continue from."""

    step: int = 0
    epoch: int = 0
    offset: int = 0  # samples of ``epoch`` already consumed (per rank)


def _optimizer_tensors(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {}
    scalars: dict[str, dict] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{name}.{index}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _load_optimizer(name: str, optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    per_param: dict[int, dict] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field_name = key[len(prefix) :].split(".", 1)
            per_param.setdefault(int(index), {})[field_name] = value
    for index, values in meta.get("scalars", {}).items():
        per_param.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def _rng_tensors() -> dict[str, torch.Tensor]:
    """The CPU generator's state and that of the GPU this process trains on (not every visible
    GPU's: reading another's would create a CUDA context on it, and a resume may have fewer)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    return tensors


def _restore_cuda_rng(tensors: dict[str, torch.Tensor]) -> None:
    """Put the saved GPU generator state on this process's GPU, if there is one.

    A checkpoint from a CPU-only machine has none (the GPU keeps its seed); one written before this
    format holds every visible GPU's (``rng.cuda.N``): the current GPU takes its own when it exists.
    """
    if not torch.cuda.is_available():
        return
    state = tensors.get("rng.cuda")
    if state is None:
        state = tensors.get(f"rng.cuda.{torch.cuda.current_device()}")
    if state is not None:
        torch.cuda.set_rng_state(state)


def save_state(
    run_dir: Path,
    position: Position,
    *,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    pools: dict[str, ImagePool],
    scalers: dict[str, torch.amp.GradScaler],
    extra: dict | None = None,
) -> Path:
    """Write a complete checkpoint of the training state and make it the latest."""
    root = run_dir / STATE_DIR
    final = root / f"step_{position.step:07d}"
    tmp = root / f".tmp_step_{position.step:07d}_{os.getpid()}"
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in unwrap(module).state_dict().items():
            tensors[f"model.{name}.{key}"] = value.detach().to("cpu").contiguous()
    optim_meta = {}
    for name, optimizer in optimizers.items():
        optim_tensors, optim_meta[name] = _optimizer_tensors(name, optimizer)
        tensors.update(optim_tensors)
    for name, pool in pools.items():
        tensors.update(pool.state_tensors(f"pool.{name}"))
    tensors.update(_rng_tensors())
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "position": {"step": position.step, "epoch": position.epoch, "offset": position.offset},
        "optimizers": optim_meta,
        "scalers": {name: scaler.state_dict() for name, scaler in scalers.items()},
        "python_random": _jsonable(random.getstate()),
        "extra": extra or {},
    }
    needed = sum(t.numel() * t.element_size() for t in tensors.values())
    with storage_errors(root, needed):
        try:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            save_file(tensors, str(tmp / "tensors.safetensors"))
            (tmp / "trainer.json").write_text(json.dumps(meta, indent=1))
            for path in tmp.iterdir():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a half-written checkpoint takes space and is no use
            raise
        fsync_dir(root)
        atomic_write_text(root / LATEST, json.dumps({"checkpoint": final.name, "step": position.step}))
    for old in root.iterdir():
        if old.is_dir() and old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _tupled(value):
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def discriminators_by_reference_name(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A version 1 state's tensors under version 2's module names: the teacher's ``D_A`` (which
    judged domain A then) becomes ``D_B``, and ``D_B`` becomes ``D_A``. States without them (a
    student's) come back unchanged."""
    swap = {"model.D_A.": "model.D_B.", "model.D_B.": "model.D_A."}
    renamed = {}
    for key, value in tensors.items():
        prefix = next((p for p in swap if key.startswith(p)), None)
        renamed[swap[prefix] + key[len(prefix) :] if prefix else key] = value
    return renamed


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / STATE_DIR / LATEST
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError):
        return None
    folder = run_dir / STATE_DIR / name
    return folder if (folder / "trainer.json").is_file() else None


def load_state(
    run_dir: Path,
    *,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    pools: dict[str, ImagePool],
    scalers: dict[str, torch.amp.GradScaler],
    device: torch.device,
) -> tuple[Position, dict]:
    """Restore everything ``save_state`` wrote; returns the position and the recipe's extra dict."""
    folder = latest_checkpoint(run_dir)
    if folder is None:
        raise CgdistillError(
            f"Run {run_dir.name} has no complete training checkpoint in {run_dir / STATE_DIR}; "
            "start it again without --resume under another --name."
        )
    try:
        tensors = load_file(str(folder / "tensors.safetensors"))
        meta = json.loads((folder / "trainer.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("trainer.json is not a JSON object")
    except Exception as exc:  # noqa: BLE001 - any damage is the same sentence for the user
        raise CgdistillError(f"Training checkpoint {folder} is unreadable ({exc}).") from None
    version = meta.get("format_version", 1)
    if not isinstance(version, int):
        raise CgdistillError(f"Training checkpoint {folder} is unreadable (format_version {version!r}).")
    if version > FORMAT_VERSION:
        raise CgdistillError(
            f"Training checkpoint {folder} has format version {version}, newer than this cgdistill "
            f"({__version__}) reads; upgrade cgdistill to resume it."
        )
    if version < 2:
        tensors = discriminators_by_reference_name(tensors)
    for name, module in modules.items():
        prefix = f"model.{name}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        unwrap(module).load_state_dict(state)
    for name, optimizer in optimizers.items():
        _load_optimizer(name, optimizer, tensors, meta["optimizers"][name])
    for name, pool in pools.items():
        pool.load_state_tensors(tensors, f"pool.{name}", device)
    for name, scaler in scalers.items():
        if name in meta.get("scalers", {}):
            scaler.load_state_dict(meta["scalers"][name])
    torch.set_rng_state(tensors["rng.torch"])
    _restore_cuda_rng(tensors)
    random.setstate(_tupled(meta["python_random"]))
    position = Position(**meta["position"])
    return position, meta.get("extra", {})
