"""Training settings: one typed field per CLI flag, resolved once and stored in the run's config.json.

These dataclasses are the one source of every ``train-teacher`` and ``distill`` flag: each field's
metadata (``flag(...)``, train/flags.py) gives its help, panel, bounds, choices and whether it may
change on ``--resume``, and cli/train.py builds the commands from them. To add a flag, add a field
here; the trainer reads it from the config (e.g. ``--blocks`` -> ``DistillConfig.blocks`` ->
``build_student`` in train/student.py). A setting without a flag says so with ``internal()``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TypeVar

from cgdistill.errors import CgdistillError
from cgdistill.options import (
    AMP_DTYPES,
    BLOCKS,
    COMPILE_MODES,
    DEVICE_HELP,
    DIRECTIONS,
    ENDS,
    FIDELITY_IMAGES,
    INITS,
    NORMS,
    PRESET_NAMES,
    UPSAMPLES,
)
from cgdistill.sizes import parse_size
from cgdistill.train.budget import StepBudget, parse_duration
from cgdistill.train.flags import PERF, RUN, TRAIN, check_choices, flag, internal

C = TypeVar("C", bound="TrainConfig")


@dataclass
class TrainConfig:
    """What the teacher trainer and the distiller share (the design's training flags)."""

    data: str | None = field(
        default=None,
        metadata=flag(
            "Dataset name under the home, or a folder with trainA/ trainB/ (default: the newest downloaded dataset).",
            panel=RUN,
        ),
    )
    name: str | None = field(default=None, metadata=flag("Run name (default: derived from the dataset).", panel=RUN))
    epochs: int = field(default=100, metadata=flag("Epochs at the initial learning rate.", panel=TRAIN, min=0))
    epochs_decay: int = field(default=100, metadata=flag("Epochs of linear decay to zero.", panel=TRAIN, min=0))
    max_steps: int | None = field(
        default=None, metadata=flag("Stop after this many steps in total.", panel=RUN, min=1, resumable=True)
    )
    image_size: int = field(
        default=256, metadata=flag("Random crop size (at least 24: the PatchGAN needs it).", panel=TRAIN, min=24)
    )
    load_size: int = field(
        default=286, metadata=flag("Images are resized to this before cropping.", panel=TRAIN, min=8)
    )
    batch_size: int = field(default=1, metadata=flag("Images per step (per GPU under torchrun).", panel=TRAIN, min=1))
    flip: bool = field(default=True, metadata=flag("Random horizontal flips of the training images.", panel=TRAIN))
    ndf: int = field(default=64, metadata=flag("Discriminator width.", panel=TRAIN, min=1))
    lr: float = field(default=2e-4, metadata=flag("Adam learning rate.", panel=TRAIN, min=0.0))
    beta1: float = field(
        default=0.5, metadata=flag("Adam's first-moment decay (0.5 in the published recipe).", panel=TRAIN,
                                   min=0.0, max=0.99999)
    )  # fmt: skip
    beta2: float = field(default=0.999, metadata=flag("Adam's second-moment decay.", panel=TRAIN, min=0.0, max=0.99999))
    lambda_cycle: float = field(default=10.0, metadata=flag("Weight of the cycle loss.", panel=TRAIN, min=0.0))
    lambda_identity: float = field(
        default=0.5, metadata=flag("Identity loss weight, as a fraction of --lambda-cycle.", panel=TRAIN, min=0.0)
    )
    pool_size: int = field(
        default=50, metadata=flag("Generated images kept for the discriminators.", panel=TRAIN, min=0)
    )
    device: str = field(default="auto", metadata=flag(DEVICE_HELP, panel=PERF, resumable=True))
    amp: bool | None = field(
        default=None,
        metadata=flag("Mixed precision (default: on for CUDA, and on CPUs with bf16 units).", panel=PERF,
                      resumable=True),
    )  # fmt: skip
    amp_dtype: str | None = field(
        default=None,
        metadata=flag(
            "bf16 or fp16 under --amp (default: bf16 where the hardware has it natively, fp16 on GPUs older "
            "than Ampere, with loss scaling). Naming one turns --amp on.",
            panel=PERF, choices=AMP_DTYPES, resumable=True,
        ),
    )  # fmt: skip
    channels_last: bool | None = field(
        default=None, metadata=flag("NHWC memory format (default: on for CUDA).", panel=PERF, resumable=True)
    )
    compile: bool = field(default=False, metadata=flag("torch.compile the networks.", panel=PERF, resumable=True))
    compile_mode: str | None = field(
        default=None,
        metadata=flag(
            "default, or reduce-overhead (CUDA graphs; CUDA only). Naming one turns --compile on.",
            panel=PERF, choices=COMPILE_MODES, resumable=True,
        ),
    )  # fmt: skip
    deterministic: bool = field(
        default=False,
        metadata=flag(
            "Deterministic kernels (cudnn autotuning off); slower on CUDA. On the CPU: one thread per usable "
            "core throughout (sums round differently with another thread count).",
            panel=PERF, resumable=True,
        ),
    )  # fmt: skip
    workers: int | None = field(
        default=None,
        metadata=flag("Data loading processes (default: 4 on CUDA, 0 on CPU).", panel=PERF, min=0, resumable=True),
    )
    threads: int | None = field(
        default=None,
        metadata=flag(
            "CPU threads (default: the cores free of other work, re-chosen every few seconds; OMP_NUM_THREADS "
            "also fixes it). A fixed count makes CPU runs repeat bit for bit.",
            panel=PERF, min=1, resumable=True,
        ),
    )  # fmt: skip
    seed: int = field(default=0, metadata=flag("Seed for initialisation, data order and augmentation.", panel=RUN))
    save_every: int = field(default=1000, metadata=flag("Checkpoint every N steps.", panel=RUN, min=1, resumable=True))
    save_every_minutes: float | None = field(
        default=None,
        metadata=flag(
            "Also checkpoint whenever N minutes have passed since the last one, whatever the step rate "
            "(for preemptible machines).",
            panel=RUN, min=0.01, resumable=True,
        ),
    )  # fmt: skip
    sample_every: int = field(
        default=500, metadata=flag("Write a sample grid every N steps.", panel=RUN, min=1, resumable=True)
    )
    log_every: int = field(
        default=10, metadata=flag("Append to metrics.jsonl every N steps.", panel=RUN, min=1, resumable=True)
    )
    tensorboard: bool = field(
        default=False,
        metadata=flag("Also log to TensorBoard (needs the tensorboard extra).", panel=RUN, resumable=True),
    )

    def check(self) -> None:
        """Refuse, in one sentence naming the flag, a value outside its choices or a crop the networks
        cannot take. The trainers call it first, so the library refuses what the command line does."""
        check_choices(self)
        if self.image_size % 4:
            raise CgdistillError(
                f"--image-size {self.image_size} is not a multiple of 4; use e.g. {self.image_size - self.image_size % 4}."
            )
        if self.load_size < self.image_size:
            raise CgdistillError(
                f"--load-size {self.load_size} is smaller than --image-size {self.image_size}; raise --load-size."
            )

    @property
    def evaluation_interval(self) -> int:
        """Steps between the recipe's measurements (``Recipe.evaluate``); 0: it has none. Only the
        distiller measures (``--eval-every``)."""
        return 0

    @property
    def fuse_passes_choice(self) -> bool | None:
        """``--fuse-passes`` as it applies (None: the device decides); False where the recipe's step has
        no passes through one network to batch (only the teacher's has) or batching them would not be
        exact (batch norm)."""
        return False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[C], values: dict) -> C:
        """The settings a run's config.json stores; keys this version does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class TeacherConfig(TrainConfig):
    """The published CycleGAN recipe: two ResNet-9 generators and two 70x70 PatchGANs."""

    blocks: int = field(default=9, metadata=flag("Residual blocks per generator.", panel=TRAIN, min=1))
    ngf: int = field(default=64, metadata=flag("Generator width.", panel=TRAIN, min=1))
    norm: str = field(
        default="instance", metadata=flag("instance, instance-affine or batch.", panel=TRAIN, choices=NORMS)
    )
    upsample: str = field(
        default="deconv", metadata=flag("deconv (published) or resize-conv.", panel=TRAIN, choices=UPSAMPLES)
    )
    # Only the teacher's step has passes to batch (a generator's translation and identity passes).
    fuse_passes: bool | None = field(
        default=None,
        metadata=flag("Batch passes through one network (default: on for CUDA).", panel=PERF, resumable=True),
    )

    @property
    def fuse_passes_choice(self) -> bool | None:
        # Batching passes through one network is exact only when every norm is per sample.
        return self.fuse_passes if self.norm.startswith("instance") else False


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

    teacher: str | None = field(
        default=None,
        metadata=flag("Teacher run name or generator .safetensors file (default: the newest teacher run).", panel=RUN),
    )
    direction: str | None = field(
        default=None,
        metadata=flag(
            "A2B or B2A: the teacher generator to distill; needed for a teacher run with both generators "
            "(default: the teacher's only one).",
            panel=RUN, choices=DIRECTIONS,
        ),
    )  # fmt: skip
    data: str | None = field(
        default=None, metadata=flag("Dataset name or folder (default: the teacher's dataset).", panel=RUN)
    )
    preset: str = field(
        default="default",
        metadata=flag(
            "Student shape and recipe: default (3 blocks, teacher's width, lr 5e-4, --echo 3, --lambda-feature 20), "
            "fast (3 blocks, 1/2 width, lr 1e-3, --echo 2) or fastest (3 blocks, 1/4 width, --ends half, lr 1e-3, "
            "--echo 4, whole images: --load-size equal to --image-size); --blocks, --ngf, --block, --ends, --lr, "
            "--echo, --lambda-feature and --load-size override it.",
            panel=TRAIN, choices=PRESET_NAMES,
        ),
    )  # fmt: skip
    blocks: int = field(default=3, metadata=flag("Residual blocks of the student.", panel=TRAIN, min=1))
    ngf: int | None = field(default=None, metadata=flag("Student width (default: the teacher's).", panel=TRAIN, min=1))
    block: str = field(
        default="standard",
        metadata=flag(
            "Residual block: standard (two 3x3 convs) or separable (depthwise + 1x1).", panel=TRAIN, choices=BLOCKS
        ),
    )
    ends: str = field(
        default="full",
        metadata=flag(
            "Stem and output layers: full (7x7 convs at full resolution, as published) or half (3x3 convs on 2x2 "
            "pixel blocks: space-to-depth in, pixel shuffle out; no layer at full resolution).",
            panel=TRAIN, choices=ENDS,
        ),
    )  # fmt: skip
    init: str = field(
        default="copy",
        metadata=flag(
            "copy (the teacher's outer layers and evenly spaced blocks), copy-outer (outer layers only) or random.",
            panel=TRAIN, choices=INITS,
        ),
    )  # fmt: skip
    freeze_encoder: bool = field(
        default=True,
        metadata=flag(
            "Keep the copied stem and downsampling equal to the teacher's (frozen), so one encoder pass serves both "
            "networks: a same-width student's step is ~10% cheaper and learns as well per step. No effect on a "
            "narrower student or with --init random.",
            panel=TRAIN,
        ),
    )  # fmt: skip
    objective: str = field(
        default="fidelity",
        metadata=flag(
            "fidelity (imitate the teacher: output and feature losses) or domain (also GAN, cycle and "
            "identity losses, as the seed method).",
            panel=TRAIN, choices=OBJECTIVES,
        ),
    )  # fmt: skip
    lambda_output: float = field(
        default=10.0, metadata=flag("Weight of the L1 to the teacher's output.", panel=TRAIN, min=0.0)
    )
    lambda_feature: float = field(
        default=1.0,
        metadata=flag("Weight of the L2 between hidden states (the default preset: 20).", panel=TRAIN, min=0.0),
    )
    # None: as the objective says (objective_weights, filled in by the plan).
    lambda_gan: float | None = field(
        default=None,
        metadata=flag("Weight of the GAN loss (default: 0 for fidelity, 1 for domain).", panel=TRAIN, min=0.0),
    )
    lambda_cycle: float | None = field(
        default=None,
        metadata=flag("Weight of the cycle loss (default: 0 for fidelity, 10 for domain).", panel=TRAIN, min=0.0),
    )
    lambda_identity: float | None = field(
        default=None,
        metadata=flag(
            "Identity loss weight as a fraction of --lambda-cycle (default: 0 for fidelity, 0.5 for domain).",
            panel=TRAIN, min=0.0,
        ),
    )  # fmt: skip
    ema_decay: float = field(
        default=0.999,
        metadata=flag(
            "Save and evaluate an exponential moving average of the student's weights with this decay; "
            "0 saves the raw weights.",
            panel=TRAIN, min=0.0, max=0.99999,
        ),
    )  # fmt: skip
    echo: int = field(
        default=1,
        metadata=flag(
            "Student updates per teacher batch (data echoing): the teacher's forward pass is most of a narrow "
            "student's step, so reusing its outputs buys more updates per second.",
            panel=TRAIN, min=1, max=16,
        ),
    )  # fmt: skip
    teacher_cache: str = field(
        default="auto",
        metadata=flag(
            "Keep the frozen teacher's outputs for inputs that come back each epoch, so that later epochs skip "
            "its pass: auto (on when each crop is the whole image, --image-size equal to --load-size; up to a "
            "quarter of the free memory), off, or a size such as 4G. Saves time only: the steps are the same.",
            panel=PERF, resumable=True,
        ),
    )  # fmt: skip
    # Crops per step: distilling is cheap per image, and 4 measured clearly better than 1. Crops of 128
    # px (from images resized to 143) cost a quarter of 256-px crops per step: in a time budget that is
    # four times the steps, and the student is judged on whole images at 256 px all the same.
    batch_size: int = 4
    image_size: int = 128
    load_size: int = 143
    epochs: int = 25
    epochs_decay: int = 25
    eval_every: int = field(
        default=100,
        metadata=flag(
            f"Measure student-to-teacher PSNR/SSIM on {FIDELITY_IMAGES} held-out images every N steps "
            "(compare measures all of them).",
            panel=RUN, min=1, resumable=True,
        ),
    )  # fmt: skip
    time_budget: str | None = field(
        default=None,
        metadata=flag(
            "Wall time for the whole run, e.g. 90s, 15m or 1h: after a few timed steps the run fixes the step "
            "count that ends within it (stored with the run, so --resume finishes the same run); --max-steps caps it.",
            panel=RUN,
        ),
    )  # fmt: skip
    # The step count --time-budget fixed; once set, the run is that long whatever the machine's speed.
    budget_steps: int | None = field(default=None, metadata=internal())
    # The teacher generator's own step when the student started: a resume against a teacher that has
    # trained on since says so (the student would otherwise chase a moved target in silence).
    teacher_step: int | None = field(default=None, metadata=internal())

    @classmethod
    def from_dict(cls: type[C], values: dict) -> C:
        # Runs made before the objective, the weight average and the frozen encoder existed keep training as they did.
        legacy = {"objective": "domain", "ema_decay": 0.0, "freeze_encoder": False}
        return super().from_dict({**legacy, **values})

    def check(self) -> None:
        super().check()
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        self.teacher_cache_setting()

    def teacher_cache_setting(self) -> str | int:
        """``--teacher-cache`` read: ``auto``, ``off`` or a size in bytes; any other value is refused."""
        value = self.teacher_cache.strip().lower()
        return value if value in ("auto", "off") else parse_size(self.teacher_cache, "--teacher-cache")

    @property
    def evaluation_interval(self) -> int:
        return self.eval_every

    def objective_weights(self) -> dict[str, float]:
        """The loss weights the user left unset, from ``objective``'s table (train/plan.py fills them in)."""
        return {key: value for key, value in OBJECTIVES[self.objective].items() if getattr(self, key) is None}

    def step_budget(self, started: float) -> StepBudget | None:
        """The ``--time-budget`` still to turn into a step count, counted from ``started``; None without
        one, or once the run's config.json stores the count it fixed (``budget_steps``)."""
        if self.time_budget is None or self.budget_steps is not None:
            return None
        return StepBudget.parse(
            self.time_budget,
            started=started,
            eval_every=self.eval_every,
            epochs=self.epochs,
            epochs_decay=self.epochs_decay,
        )
