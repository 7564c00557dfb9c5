"""`cgdistill train-teacher` and `cgdistill distill`: parse flags into a config, run, present."""

from __future__ import annotations

import os
import shlex
from typing import Annotated

import typer

from cgdistill.cli.app import app, note, show, styled
from cgdistill.cli.progress import RichObserver
from cgdistill.device import DEVICE_HELP
from cgdistill.train.loop import TrainingInterrupted

TRAIN = "Training"
PERF = "Device and speed"
RUN = "Run"

Data = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Dataset name under the home, or a folder with trainA/ trainB/ (default: the newest downloaded dataset).",
        show_default=False,
        rich_help_panel=RUN,
    ),
]
Name = Annotated[
    str | None, typer.Option("--name", help="Run name (default: derived from the dataset).", rich_help_panel=RUN)
]
Epochs = Annotated[
    int, typer.Option("--epochs", min=0, help="Epochs at the initial learning rate.", rich_help_panel=TRAIN)
]
EpochsDecay = Annotated[
    int, typer.Option("--epochs-decay", min=0, help="Epochs of linear decay to zero.", rich_help_panel=TRAIN)
]
MaxSteps = Annotated[
    int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps in total.", rich_help_panel=RUN)
]
ImageSize = Annotated[
    int,
    typer.Option(
        "--image-size", min=24, help="Random crop size (at least 24: the PatchGAN needs it).", rich_help_panel=TRAIN
    ),
]
LoadSize = Annotated[
    int, typer.Option("--load-size", min=8, help="Images are resized to this before cropping.", rich_help_panel=TRAIN)
]
BatchSize = Annotated[
    int, typer.Option("--batch-size", min=1, help="Images per step (per GPU under torchrun).", rich_help_panel=TRAIN)
]
Ndf = Annotated[int, typer.Option("--ndf", min=1, help="Discriminator width.", rich_help_panel=TRAIN)]
Lr = Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.", rich_help_panel=TRAIN)]
LambdaCycle = Annotated[
    float, typer.Option("--lambda-cycle", min=0.0, help="Weight of the cycle loss.", rich_help_panel=TRAIN)
]
LambdaIdentity = Annotated[
    float,
    typer.Option(
        "--lambda-identity",
        min=0.0,
        help="Identity loss weight, as a fraction of --lambda-cycle.",
        rich_help_panel=TRAIN,
    ),
]
PoolSize = Annotated[
    int, typer.Option("--pool-size", min=0, help="Generated images kept for the discriminators.", rich_help_panel=TRAIN)
]
Device = Annotated[str, typer.Option("--device", help=DEVICE_HELP, rich_help_panel=PERF)]
Amp = Annotated[
    bool | None,
    typer.Option(
        "--amp/--no-amp", help="Mixed precision (default: on for CUDA).", show_default=False, rich_help_panel=PERF
    ),
]
AmpDtype = Annotated[
    str | None,
    typer.Option(
        "--amp-dtype",
        help="bf16 or fp16 under --amp (default: bf16 where the hardware has it natively, fp16 on GPUs "
        "older than Ampere, with loss scaling). Naming one turns --amp on.",
        show_default=False,
        rich_help_panel=PERF,
    ),
]
ChannelsLast = Annotated[
    bool | None,
    typer.Option(
        "--channels-last/--no-channels-last",
        help="NHWC memory format (default: on for CUDA).",
        show_default=False,
        rich_help_panel=PERF,
    ),
]
Compile = Annotated[
    bool, typer.Option("--compile/--no-compile", help="torch.compile the networks.", rich_help_panel=PERF)
]
CompileMode = Annotated[
    str | None,
    typer.Option(
        "--compile-mode",
        help="default, or reduce-overhead (CUDA graphs; CUDA only). Naming one turns --compile on.",
        show_default=False,
        rich_help_panel=PERF,
    ),
]
FusePasses = Annotated[
    bool | None,
    typer.Option(
        "--fuse-passes/--no-fuse-passes",
        help="Batch passes through one network (default: on for CUDA).",
        show_default=False,
        rich_help_panel=PERF,
    ),
]
Deterministic = Annotated[
    bool,
    typer.Option(
        "--deterministic",
        help="Deterministic kernels (cudnn autotuning off); slower on CUDA. CPU runs are deterministic anyway.",
        rich_help_panel=PERF,
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Data loading processes (default: 4 on CUDA, 0 on CPU).",
        show_default=False,
        rich_help_panel=PERF,
    ),
]
Seed = Annotated[
    int, typer.Option("--seed", help="Seed for initialisation, data order and augmentation.", rich_help_panel=RUN)
]
Resume = Annotated[
    bool,
    typer.Option("--resume", help="Continue the run named by --name from its last checkpoint.", rich_help_panel=RUN),
]
SaveEvery = Annotated[int, typer.Option("--save-every", min=1, help="Checkpoint every N steps.", rich_help_panel=RUN)]
SampleEvery = Annotated[
    int, typer.Option("--sample-every", min=1, help="Write a sample grid every N steps.", rich_help_panel=RUN)
]
LogEvery = Annotated[
    int, typer.Option("--log-every", min=1, help="Append to metrics.jsonl every N steps.", rich_help_panel=RUN)
]
Tensorboard = Annotated[
    bool,
    typer.Option("--tensorboard", help="Also log to TensorBoard (needs the tensorboard extra).", rich_help_panel=RUN),
]


def check_sizes(image_size: int, load_size: int) -> None:
    """Crops must survive two stride-2 stages and come back to the same size."""
    from cgdistill.errors import CgdistillError

    if image_size % 4:
        raise CgdistillError(
            f"--image-size {image_size} is not a multiple of 4; use e.g. {image_size - image_size % 4}."
        )
    if load_size < image_size:
        raise CgdistillError(f"--load-size {load_size} is smaller than --image-size {image_size}; raise --load-size.")


def given_flags(ctx: typer.Context) -> set[str]:
    """Names of the parameters the user set on the command line (resume keeps the rest)."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given.add(name)
    return given


def resume_command(ctx: typer.Context, command: str, run_name: str) -> str:
    """The command that continues this run: the run remembers its settings and its length, so only
    the launcher, a --home given on the command line, and the run's name are needed."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    words = [f"torchrun --nproc_per_node {world_size} -m cgdistill" if world_size > 1 else "cgdistill"]
    root = ctx.find_root()
    source = root.get_parameter_source("home")
    if source is not None and source.name == "COMMANDLINE" and root.params.get("home") is not None:
        words.append(f"--home {shlex.quote(str(root.params['home']))}")
    words.append(f"{command} --name {shlex.quote(run_name)} --resume")
    return " ".join(words)


def run_training(ctx: typer.Context, job, config, *, resume: bool, command: str) -> None:
    """Run a training function with the live display, turning Ctrl-C into a resume hint."""
    observer = RichObserver()
    try:
        run_dir = job(config, resume=resume, observer=observer, given=given_flags(ctx))
    except TrainingInterrupted as stop:
        note(
            styled(
                "Stopped at step {}; the checkpoint is saved. Resume with: [bold]{}[/]",
                stop.step,
                resume_command(ctx, command, stop.run_dir.name),
            )
        )
        raise typer.Exit(130) from None
    show(styled("Run [bold]{}[/] is in {}", run_dir.name, run_dir))


@app.command("train-teacher")
def train_teacher_command(
    ctx: typer.Context,
    data: Data = None,
    name: Name = None,
    epochs: Epochs = 100,
    epochs_decay: EpochsDecay = 100,
    max_steps: MaxSteps = None,
    image_size: ImageSize = 256,
    load_size: LoadSize = 286,
    batch_size: BatchSize = 1,
    blocks: Annotated[
        int, typer.Option("--blocks", min=1, help="Residual blocks per generator.", rich_help_panel=TRAIN)
    ] = 9,
    ngf: Annotated[int, typer.Option("--ngf", min=1, help="Generator width.", rich_help_panel=TRAIN)] = 64,
    ndf: Ndf = 64,
    norm: Annotated[
        str, typer.Option("--norm", help="instance, instance-affine or batch.", rich_help_panel=TRAIN)
    ] = "instance",
    upsample: Annotated[
        str, typer.Option("--upsample", help="deconv (published) or resize-conv.", rich_help_panel=TRAIN)
    ] = "deconv",
    lr: Lr = 2e-4,
    lambda_cycle: LambdaCycle = 10.0,
    lambda_identity: LambdaIdentity = 0.5,
    pool_size: PoolSize = 50,
    device: Device = "auto",
    amp: Amp = None,
    amp_dtype: AmpDtype = None,
    channels_last: ChannelsLast = None,
    compile: Compile = False,
    compile_mode: CompileMode = None,
    fuse_passes: FusePasses = None,
    deterministic: Deterministic = False,
    workers: Workers = None,
    seed: Seed = 0,
    resume: Resume = False,
    save_every: SaveEvery = 1000,
    sample_every: SampleEvery = 500,
    log_every: LogEvery = 10,
    tensorboard: Tensorboard = False,
) -> None:
    """Train a CycleGAN teacher with the published recipe (ResNet-9, PatchGAN, LSGAN, cycle, identity)."""
    from cgdistill.errors import CgdistillError
    from cgdistill.nets import NORMS, UPSAMPLES
    from cgdistill.train.config import TeacherConfig
    from cgdistill.train.runtime import parse_amp_dtype
    from cgdistill.train.teacher import train_teacher

    if norm not in NORMS:
        raise CgdistillError(f"--norm {norm!r} is not valid; use one of {', '.join(NORMS)}.")
    if upsample not in UPSAMPLES:
        raise CgdistillError(f"--upsample {upsample!r} is not valid; use one of {', '.join(UPSAMPLES)}.")
    check_sizes(image_size, load_size)
    parse_amp_dtype(amp_dtype)
    config = TeacherConfig(
        data=data, name=name, epochs=epochs, epochs_decay=epochs_decay, max_steps=max_steps,
        image_size=image_size, load_size=load_size, batch_size=batch_size, blocks=blocks, ngf=ngf, ndf=ndf,
        norm=norm, upsample=upsample, lr=lr, lambda_cycle=lambda_cycle, lambda_identity=lambda_identity,
        pool_size=pool_size, device=device, amp=amp, amp_dtype=amp_dtype, channels_last=channels_last,
        compile=compile, compile_mode=compile_mode, fuse_passes=fuse_passes, deterministic=deterministic,
        workers=workers, seed=seed, save_every=save_every, sample_every=sample_every, log_every=log_every,
        tensorboard=tensorboard,
    )  # fmt: skip
    run_training(ctx, train_teacher, config, resume=resume, command="train-teacher")


@app.command("distill")
def distill_command(
    ctx: typer.Context,
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Teacher run name or generator .safetensors file (default: the newest teacher run).",
            rich_help_panel=RUN,
        ),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="Student shape: default (3 blocks, teacher's width), fast (3 blocks, 1/4 width) or fastest "
            "(3 separable blocks, 1/4 width); --blocks, --ngf and --block override it.",
            rich_help_panel=TRAIN,
        ),
    ] = "default",
    blocks: Annotated[
        int, typer.Option("--blocks", min=1, help="Residual blocks of the student.", rich_help_panel=TRAIN)
    ] = 3,
    block: Annotated[
        str,
        typer.Option(
            "--block",
            help="Residual block: standard (two 3x3 convs) or separable (depthwise + 1x1).",
            rich_help_panel=TRAIN,
        ),
    ] = "standard",
    ngf: Annotated[
        int | None,
        typer.Option(
            "--ngf", min=1, help="Student width (default: the teacher's).", show_default=False, rich_help_panel=TRAIN
        ),
    ] = None,
    direction: Annotated[
        str | None,
        typer.Option(
            "--direction",
            help="B2A or A2B: which teacher generator to distill (default: the teacher's only one; a teacher "
            "run with both needs it).",
            show_default=False,
            rich_help_panel=RUN,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Dataset name or folder (default: the teacher's dataset).",
            show_default=False,
            rich_help_panel=RUN,
        ),
    ] = None,
    name: Name = None,
    lambda_output: Annotated[
        float,
        typer.Option(
            "--lambda-output", min=0.0, help="Weight of the L1 to the teacher's output.", rich_help_panel=TRAIN
        ),
    ] = 10.0,
    lambda_feature: Annotated[
        float,
        typer.Option(
            "--lambda-feature", min=0.0, help="Weight of the L2 between hidden states.", rich_help_panel=TRAIN
        ),
    ] = 1.0,
    objective: Annotated[
        str,
        typer.Option(
            "--objective",
            help="fidelity (imitate the teacher: output and feature losses) or domain (also GAN, cycle and "
            "identity losses, as the seed method).",
            rich_help_panel=TRAIN,
        ),
    ] = "fidelity",
    lambda_gan: Annotated[
        float | None,
        typer.Option(
            "--lambda-gan",
            min=0.0,
            help="Weight of the GAN loss (default: 0 for fidelity, 1 for domain).",
            show_default=False,
            rich_help_panel=TRAIN,
        ),
    ] = None,
    lambda_cycle: Annotated[
        float | None,
        typer.Option(
            "--lambda-cycle",
            min=0.0,
            help="Weight of the cycle loss (default: 0 for fidelity, 10 for domain).",
            show_default=False,
            rich_help_panel=TRAIN,
        ),
    ] = None,
    lambda_identity: Annotated[
        float | None,
        typer.Option(
            "--lambda-identity",
            min=0.0,
            help="Identity loss weight as a fraction of --lambda-cycle (default: 0 for fidelity, 0.5 for domain).",
            show_default=False,
            rich_help_panel=TRAIN,
        ),
    ] = None,
    ema_decay: Annotated[
        float,
        typer.Option(
            "--ema-decay",
            min=0.0,
            max=0.99999,
            help="Save and evaluate an exponential moving average of the student's weights with this decay; "
            "0 saves the raw weights.",
            rich_help_panel=TRAIN,
        ),
    ] = 0.999,
    init: Annotated[
        str,
        typer.Option(
            "--init",
            help="copy (the teacher's outer layers and evenly spaced blocks), copy-outer (outer layers only) "
            "or random.",
            rich_help_panel=TRAIN,
        ),
    ] = "copy",
    epochs: Epochs = 25,
    epochs_decay: EpochsDecay = 25,
    max_steps: MaxSteps = None,
    image_size: ImageSize = 256,
    load_size: LoadSize = 286,
    batch_size: BatchSize = 4,
    ndf: Ndf = 64,
    lr: Lr = 2e-4,
    pool_size: PoolSize = 50,
    device: Device = "auto",
    amp: Amp = None,
    amp_dtype: AmpDtype = None,
    channels_last: ChannelsLast = None,
    compile: Compile = False,
    compile_mode: CompileMode = None,
    deterministic: Deterministic = False,
    workers: Workers = None,
    seed: Seed = 0,
    resume: Resume = False,
    save_every: SaveEvery = 1000,
    sample_every: SampleEvery = 500,
    log_every: LogEvery = 10,
    eval_every: Annotated[
        int,
        typer.Option("--eval-every", min=1, help="Measure student-to-teacher PSNR every N steps.", rich_help_panel=RUN),
    ] = 100,
    tensorboard: Tensorboard = False,
) -> None:
    """Distill a teacher generator into a student with fewer residual blocks (and optionally fewer channels)."""
    from cgdistill.errors import CgdistillError
    from cgdistill.nets import BLOCKS
    from cgdistill.runs import check_direction
    from cgdistill.train.config import OBJECTIVES, DistillConfig
    from cgdistill.train.distill import INITS, distill
    from cgdistill.train.presets import PRESETS
    from cgdistill.train.runtime import parse_amp_dtype

    if init not in INITS:
        raise CgdistillError(f"--init {init!r} is not valid; use {', '.join(INITS)}.")
    if objective not in OBJECTIVES:
        raise CgdistillError(f"--objective {objective!r} is not valid; use {' or '.join(OBJECTIVES)}.")
    if block not in BLOCKS:
        raise CgdistillError(f"--block {block!r} is not valid; use one of {', '.join(BLOCKS)}.")
    if preset not in PRESETS:
        raise CgdistillError(f"--preset {preset!r} is not valid; use one of {', '.join(PRESETS)}.")
    if direction is not None:
        check_direction(direction)
    check_sizes(image_size, load_size)
    parse_amp_dtype(amp_dtype)
    config = DistillConfig(
        teacher=teacher, preset=preset, blocks=blocks, ngf=ngf, block=block, direction=direction, data=data, name=name,
        lambda_output=lambda_output, lambda_feature=lambda_feature, lambda_gan=lambda_gan,
        lambda_cycle=lambda_cycle, lambda_identity=lambda_identity, init=init, objective=objective,
        ema_decay=ema_decay, epochs=epochs,
        epochs_decay=epochs_decay, max_steps=max_steps, image_size=image_size, load_size=load_size,
        batch_size=batch_size, ndf=ndf, lr=lr, pool_size=pool_size, device=device, amp=amp,
        amp_dtype=amp_dtype, channels_last=channels_last, compile=compile, compile_mode=compile_mode,
        deterministic=deterministic, workers=workers, seed=seed, save_every=save_every,
        sample_every=sample_every, log_every=log_every, eval_every=eval_every, tensorboard=tensorboard,
    )  # fmt: skip
    run_training(ctx, distill, config, resume=resume, command="distill")
