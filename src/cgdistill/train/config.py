"""Training settings: one typed field per CLI flag, resolved once and stored in the run's config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    """What the teacher trainer and the distiller share (the design's training flags)."""

    data: str | None = None  # None: the newest downloaded dataset
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
    amp: bool | None = None  # None: on for CUDA, and on CPUs with bf16 units
    amp_dtype: str | None = None  # "bf16" | "fp16"; None: bf16 where native (GPU >= Ampere, CPU), else fp16
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False
    compile_mode: str | None = None  # "default" | "reduce-overhead" (CUDA graphs, CUDA only); naming one compiles
    fuse_passes: bool | None = None  # None: batch same-network passes on CUDA (instance norm only)
    deterministic: bool = False  # deterministic kernels (CUDA: slower; see docs/training.md)
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


# What each distillation objective weighs, where the user gave no --lambda-* flag. ``fidelity``
# makes the student imitate its teacher and nothing else; ``domain`` is the seed method, which also
# keeps the CycleGAN losses and so pulls the student towards the target domain on its own.
OBJECTIVES: dict[str, dict[str, float]] = {
    "fidelity": {"lambda_gan": 0.0, "lambda_cycle": 0.0, "lambda_identity": 0.0},
    "domain": {"lambda_gan": 1.0, "lambda_cycle": 10.0, "lambda_identity": 0.5},
}


@dataclass
class DistillConfig(TrainConfig):
    """A student with fewer blocks learns one teacher generator (see docs/distillation.md for the defaults)."""

    data: str | None = None  # None: the teacher's dataset
    teacher: str | None = None
    direction: str | None = None  # None: the teacher's only generator (runs.py: one with both needs it)
    preset: str = "default"  # fills blocks/ngf/block where not given (train/presets.py)
    blocks: int = 3
    ngf: int | None = None  # None: the teacher's width
    block: str = "standard"  # residual block kind: standard or separable
    init: str = "copy"
    objective: str = "fidelity"
    lambda_output: float = 10.0
    lambda_feature: float = 1.0
    lambda_gan: float | None = None  # None: as the objective says
    lambda_cycle: float | None = None
    lambda_identity: float | None = None
    ema_decay: float = 0.999  # 0: save the raw weights
    batch_size: int = 4  # crops per step: distilling is cheap per image, and 4 measured clearly better than 1
    epochs: int = 25
    epochs_decay: int = 25
    eval_every: int = 100

    @classmethod
    def from_dict(cls, values: dict):
        # Runs made before the objective and the weight average existed keep training as they did.
        legacy = {"objective": "domain", "ema_decay": 0.0}
        return super().from_dict({**legacy, **values})

    def resolve_objective(self) -> None:
        """Fill the loss weights the user left unset from ``objective``'s table."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for key, value in OBJECTIVES[self.objective].items():
            if getattr(self, key) is None:
                setattr(self, key, value)


# Flags that may change when a run is resumed; everything else comes from the stored config.
RESUMABLE_FIELDS = (
    "max_steps",
    "device",
    "amp",
    "amp_dtype",
    "channels_last",
    "compile",
    "compile_mode",
    "fuse_passes",
    "deterministic",
    "workers",
    "save_every",
    "sample_every",
    "log_every",
    "eval_every",
    "tensorboard",
)
