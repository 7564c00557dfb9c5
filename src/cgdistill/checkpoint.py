"""Model files: safetensors with self-describing metadata, written atomically.

A generator file holds everything ``translate`` needs: the weights and, in the metadata, the
architecture (``arch``, ``blocks``, ``ngf``, ``norm``, ``upsample``, ``block``) and the context it was trained
in (``direction``, ``dataset``, ``image_size``, ``step``, ``teacher``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from cgdistill import __version__
from cgdistill.errors import CgdistillError
from cgdistill.fsutil import atomic_write_bytes
from cgdistill.nets import DiscriminatorConfig, GeneratorConfig, PatchDiscriminator, ResnetGenerator, unwrap

FORMAT = "cgdistill"
FORMAT_VERSION = 1
DIRECTIONS = ("A2B", "B2A")


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
        for key in ("direction", "dataset", "teacher"):
            value = getattr(self, key)
            if value is not None:
                meta[key] = str(value)
        if self.image_size is not None:
            meta["image_size"] = str(self.image_size)
        if self.extra:
            meta["extra"] = json.dumps(self.extra, sort_keys=True)
        return meta


_GEN_KEYS = ("blocks", "ngf", "norm", "upsample", "in_channels", "out_channels", "block")
# Keys added after format version 1 was first written: files without them mean the default.
_OPTIONAL_KEYS = ("in_channels", "out_channels", "upsample", "block")
_TEXT_KEYS = ("norm", "upsample", "block")
_DISC_KEYS = ("ndf", "n_layers", "norm", "in_channels")


def _typed_config(meta: dict[str, str], keys: tuple[str, ...], path: Path) -> dict:
    config = {}
    for key in keys:
        if key not in meta:
            if key in _OPTIONAL_KEYS:
                continue
            raise CgdistillError(f"Model file {path} lacks the '{key}' metadata; it is damaged or from another tool.")
        value = meta[key]
        config[key] = value if key in _TEXT_KEYS else int(value)
    return config


def _info_from_metadata(meta: dict[str, str], path: Path) -> ModelInfo:
    if meta.get("format") != FORMAT:
        raise CgdistillError(
            f"{path} is a safetensors file but was not written by cgdistill (no format=cgdistill metadata); "
            "import official CycleGAN weights with `cgdistill download --pretrained NAME --from-file FILE.pth`."
        )
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CgdistillError(
            f"{path} uses model format version {version}, newer than this cgdistill ({__version__}) reads; upgrade cgdistill."
        )
    kind = meta.get("kind")
    if kind == "generator":
        config = _typed_config(meta, _GEN_KEYS, path)
    elif kind == "discriminator":
        config = _typed_config(meta, _DISC_KEYS, path)
    else:
        raise CgdistillError(f"Model file {path} has unknown kind {kind!r}; expected generator or discriminator.")
    return ModelInfo(
        kind=kind,
        arch=meta.get("arch", "resnet" if kind == "generator" else "patchgan"),
        config=config,
        direction=meta.get("direction"),
        dataset=meta.get("dataset"),
        image_size=int(meta["image_size"]) if "image_size" in meta else None,
        step=int(meta.get("step", "0")),
        teacher=meta.get("teacher"),
        extra=json.loads(meta["extra"]) if "extra" in meta else {},
    )


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    # Unwrap DDP / torch.compile so the keys are the plain module's.
    return {k: v.detach().to("cpu").contiguous() for k, v in unwrap(module).state_dict().items()}


def save_model(module: nn.Module, path: Path | str, info: ModelInfo) -> Path:
    """Write ``module``'s weights and ``info`` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, safetensors_bytes(_cpu_state(module), metadata=info.to_metadata()))
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
    discriminator: PatchDiscriminator, path: Path | str, *, dataset: str | None = None, step: int = 0
) -> Path:
    config = unwrap(discriminator).config.to_dict()
    info = ModelInfo(kind="discriminator", arch="patchgan", config=config, dataset=dataset, step=step)
    return save_model(discriminator, path, info)


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    """Metadata (and the tensors when asked), turning every way a file can be wrong into one sentence."""
    if not path.is_file():
        raise CgdistillError(f"Model file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()} if with_tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CgdistillError(
            f"{path} is not a readable safetensors model file ({exc}); it may be truncated or of another format."
        ) from None
    return tensors, _info_from_metadata(meta, path)


def read_file(path: Path | str) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    """Tensors and metadata of a model file."""
    return _read(Path(path), with_tensors=True)


def read_info(path: Path | str) -> ModelInfo:
    """Only the metadata (cheap: the tensors are not read)."""
    return _read(Path(path), with_tensors=False)[1]


def _load_into(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CgdistillError(
            f"Weights in {path} do not fit the architecture its metadata describes: {detail}"
        ) from None


def load_generator(path: Path | str) -> tuple[ResnetGenerator, ModelInfo]:
    """Rebuild a generator from its file alone; returns it in eval mode with its metadata."""
    tensors, info = read_file(path)
    if info.kind != "generator":
        raise CgdistillError(f"{path} holds a {info.kind}, not a generator.")
    generator = ResnetGenerator(GeneratorConfig(**info.config))
    _load_into(generator, tensors, Path(path))
    return generator.eval(), info


def load_discriminator(path: Path | str) -> tuple[PatchDiscriminator, ModelInfo]:
    tensors, info = read_file(path)
    if info.kind != "discriminator":
        raise CgdistillError(f"{path} holds a {info.kind}, not a discriminator.")
    discriminator = PatchDiscriminator(DiscriminatorConfig(**info.config))
    _load_into(discriminator, tensors, Path(path))
    return discriminator.eval(), info
