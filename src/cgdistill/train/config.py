"""Training settings: one typed field per CLI flag, resolved once and stored in the run's config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    """What the teacher trainer and the distiller share (the design's training flags)."""

    data: str = "monet2photo"
    name: str | None = None
    epochs: int = 100
    epochs_decay: int = 100
    max_steps: int | None = None
    image_size: int = 256
    load_size: int = 286
    batch_size: int = 1
    flip: bool = True
    ndf: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    device: str = "auto"
    amp: bool | None = None  # None: on for CUDA (bf16, else fp16) and off on the CPU
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False
    fuse_passes: bool | None = None  # None: batch same-network passes on CUDA (instance norm only)
    workers: int | None = None  # None: 4 on CUDA, 0 on the CPU (decoding is cheap next to a CPU step)
    seed: int = 0
    save_every: int = 1000
    sample_every: int = 500
    log_every: int = 10
    tensorboard: bool = False

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.epochs_decay

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class TeacherConfig(TrainConfig):
    """The published CycleGAN recipe: two ResNet-9 generators and two 70x70 PatchGANs."""

    blocks: int = 9
    ngf: int = 64
    norm: str = "instance"
    upsample: str = "deconv"


@dataclass
class DistillConfig(TrainConfig):
    """A student with fewer blocks learns one teacher generator; defaults are the seed method's."""

    data: str | None = None  # None: the teacher's dataset
    teacher: str | None = None
    direction: str | None = None  # None: the teacher's only generator, else B2A
    preset: str = "default"  # fills blocks/ngf/block where not given (train/presets.py)
    blocks: int = 3
    ngf: int | None = None  # None: the teacher's width
    block: str = "standard"  # residual block kind: standard or separable
    init: str = "copy"
    lambda_output: float = 10.0
    lambda_feature: float = 1.0
    lambda_gan: float = 1.0
    epochs: int = 25
    epochs_decay: int = 25
    eval_every: int = 100


# Flags that may change when a run is resumed; everything else comes from the stored config.
RESUMABLE_FIELDS = (
    "max_steps",
    "device",
    "amp",
    "channels_last",
    "compile",
    "fuse_passes",
    "workers",
    "save_every",
    "sample_every",
    "log_every",
    "eval_every",
    "tensorboard",
)
