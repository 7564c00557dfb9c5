"""Model files: safetensors with self-describing metadata, written atomically.

These are the files a run leaves for use (``G_A2B``, ``G.safetensors``, the discriminators), the ones
``translate``, ``export``, ``compare`` and ``distill`` read; what ``--resume`` needs (optimizer
moments, pools, RNG) is the training checkpoint of train/state.py. A generator file holds everything
``translate`` needs: the weights and, in the metadata, the architecture (``arch``, ``blocks``,
``ngf``, ``norm``, ``upsample``, ``block``) and the context it was trained in (``direction``,
``dataset``, ``image_size``, ``step``, ``teacher``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from cgdistill import __version__
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_write_bytes, not_a_file_reason
from cgdistill.metadata import DIRECTIONS as DIRECTIONS  # re-exported: where callers have always found it
from cgdistill.metadata import FORMAT, FORMAT_VERSION, parse_metadata
from cgdistill.nets import DiscriminatorConfig, GeneratorConfig, PatchDiscriminator, ResnetGenerator, unwrap


@dataclass
class ModelInfo:
    """The metadata of a model file, typed."""

    kind: str  # "generator" or "discriminator"
    arch: str  # "resnet" or "patchgan"
    config: dict
    direction: str | None = None
    dataset: str | None = None
    image_size: int | None = None
    step: int = 0
    teacher: str | None = None
    judges: str | None = None  # discriminators: the domain ("A" or "B") whose images it judges
    extra: dict = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        meta = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "cgdistill_version": __version__,
            "kind": self.kind,
            "arch": self.arch,
            "step": str(self.step),
        }
        for key, value in self.config.items():
            meta[key] = str(value)
        for key in ("direction", "dataset", "teacher", "judges"):
            value = getattr(self, key)
            if value is not None:
                meta[key] = str(value)
        if self.image_size is not None:
            meta["image_size"] = str(self.image_size)
        if self.extra:
            meta["extra"] = json.dumps(self.extra, sort_keys=True)
        return meta


def info_from_metadata(meta: dict[str, str], path: Path | str) -> ModelInfo:
    """The typed metadata of one of our files; refuses headers that cgdistill did not write."""
    common, config = parse_metadata(meta, Path(path))
    return ModelInfo(
        kind=common["kind"],
        arch=common["arch"],
        config=config,
        direction=common.get("direction"),
        dataset=common.get("dataset"),
        image_size=common.get("image_size"),
        step=common.get("step", 0),
        teacher=common.get("teacher"),
        judges=common.get("judges"),
        extra=common.get("extra", {}),
    )


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    # Unwrap DDP / torch.compile so the keys are the plain module's.
    return {k: v.detach().to("cpu").contiguous() for k, v in unwrap(module).state_dict().items()}


def save_model(module: nn.Module, path: Path | str, info: ModelInfo) -> Path:
    """Write ``module``'s weights and ``info`` to ``path`` atomically; returns the path."""
    path = Path(path)
    metadata = info.to_metadata()
    parse_metadata(metadata, path)  # never write a file that reading would refuse
    atomic_write_bytes(path, safetensors_bytes(_cpu_state(module), metadata=metadata))
    return path


def save_generator(
    generator: ResnetGenerator,
    path: Path | str,
    *,
    direction: str | None = None,
    dataset: str | None = None,
    image_size: int | None = None,
    step: int = 0,
    teacher: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Save a generator with the metadata that lets it be rebuilt from the file alone."""
    info = ModelInfo(
        kind="generator",
        arch="resnet",
        config=unwrap(generator).config.to_dict(),
        direction=direction,
        dataset=dataset,
        image_size=image_size,
        step=step,
        teacher=teacher,
        extra=extra or {},
    )
    return save_model(generator, path, info)


def save_discriminator(
    discriminator: PatchDiscriminator,
    path: Path | str,
    *,
    judges: str | None = None,
    dataset: str | None = None,
    step: int = 0,
) -> Path:
    """Save a discriminator with the domain whose images it judges (``judges``), which its file name
    alone does not say: runs before issue 14 named them by that domain, the reference's names do not."""
    config = unwrap(discriminator).config.to_dict()
    info = ModelInfo(kind="discriminator", arch="patchgan", config=config, dataset=dataset, step=step, judges=judges)
    return save_model(discriminator, path, info)


def read_safetensors(path: Path | str, with_tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (when asked) and the metadata header of any safetensors file, ours or not.

    Every way a file can be wrong becomes one sentence naming it.
    """
    path = Path(path)
    if not os.path.isfile(path):
        raise CgdistillError(f"Model file {path} {not_a_file_reason(path)}.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()} if with_tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CgdistillError(
            f"{path} is not a readable safetensors model file ({exc}); it may be truncated or of another format."
        ) from None
    return tensors, meta


def read_file(path: Path | str, with_tensors: bool = True) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    """Tensors (when asked) and metadata of a model file."""
    tensors, meta = read_safetensors(path, with_tensors)
    return tensors, info_from_metadata(meta, path)


def read_info(path: Path | str) -> ModelInfo:
    """Only the metadata (cheap: the tensors are not read)."""
    return read_file(path, with_tensors=False)[1]


def _build(factory, tensors: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """Build the network the metadata describes and load the file's weights into it.

    The network is first laid out on the meta device (no memory) and its shapes compared with the
    file's tensors, so metadata that describes a huge network cannot make us allocate it.
    """
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in factory().state_dict().items()}
    found = {key: tuple(value.shape) for key, value in tensors.items()}
    if expected != found:
        missing = sorted(expected.keys() - found.keys())
        unexpected = sorted(found.keys() - expected.keys())
        wrong = sorted(key for key in expected.keys() & found.keys() if expected[key] != found[key])
        if wrong:
            detail = f"'{wrong[0]}' has shape {found[wrong[0]]} where {expected[wrong[0]]} is expected"
        elif missing:
            detail = f"'{missing[0]}' is missing"
        else:
            detail = f"'{unexpected[0]}' is unexpected"
        raise CgdistillError(f"Weights in {path} do not fit the architecture its metadata describes: {detail}.")
    module = factory()
    module.load_state_dict(tensors, strict=True)
    return module


def load_generator(path: Path | str) -> tuple[ResnetGenerator, ModelInfo]:
    """Rebuild a generator from its file alone; returns it in eval mode with its metadata."""
    tensors, info = read_file(path)
    if info.kind != "generator":
        raise CgdistillError(f"{path} holds a {info.kind}, not a generator.")
    generator = _build(lambda: ResnetGenerator(GeneratorConfig(**info.config)), tensors, Path(path))
    return generator.eval(), info


def load_discriminator(path: Path | str) -> tuple[PatchDiscriminator, ModelInfo]:
    """Rebuild a discriminator from its file alone (the distiller starts from the teacher's); eval mode."""
    tensors, info = read_file(path)
    if info.kind != "discriminator":
        raise CgdistillError(f"{path} holds a {info.kind}, not a discriminator.")
    discriminator = _build(lambda: PatchDiscriminator(DiscriminatorConfig(**info.config)), tensors, Path(path))
    return discriminator.eval(), info
