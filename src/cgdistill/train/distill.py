"""Distillation: a student generator with fewer residual blocks learns one teacher generator.

Losses on the student S for direction A2B (B2A mirrors it), teacher T frozen:

    output   = |S(a) - T(a)|_1                                   * lambda_output
    feature  = mean_i |adapter_i(S_i(a)) - T_map(i)(a)|_2^2      * lambda_feature
    gan      = LSGAN(D(S(a)), real)                              * lambda_gan
    cycle    = |T_B2A(S(a)) - a|_1                               * lambda_cycle   (teacher run only)
    identity = |S(b) - b|_1                                      * lambda_identity * lambda_cycle

Student block i of n is matched to teacher block round((i+1)*N/n) (3 of 9 -> 3, 6, 9; `imitated_blocks`);
`--init copy` starts it from other blocks (3 of 9 -> 1, 5, 9 at the same width; `copied_blocks` says why).
D judges the target domain B: it starts from the teacher's discriminator of B (the reference's D_A)
when the teacher has one, and keeps training against S.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from cgdistill.data.images import list_images
from cgdistill.errors import CgdistillError
from cgdistill.losses import cycle_loss, discriminator_loss, feature_loss, gan_loss, identity_loss, output_loss
from cgdistill.metrics import fidelity
from cgdistill.nets import (
    SHARED_PREFIXES,
    DiscriminatorConfig,
    PatchDiscriminator,
    ResnetGenerator,
    evaluating,
    init_weights,
    unwrap,
)
from cgdistill.options import FIDELITY_IMAGES
from cgdistill.runs import (
    STUDENT_FILE,
    discriminator_judging,
    generator_file,
    require_weights,
    resolve_generator,
    reverse,
    target_domain,
)
from cgdistill.testset import Images, load_images, run_model, source_test_files
from cgdistill.train.budget import StepBudget, parse_duration
from cgdistill.train.budget import now as budget_clock
from cgdistill.train.config import DistillConfig
from cgdistill.train.ema import WeightAverage
from cgdistill.train.loop import Observer, Recipe, fit
from cgdistill.train.plan import plan_distill
from cgdistill.train.pool import ImagePool
from cgdistill.train.runtime import Runtime, join_process_group, teardown_runtime
from cgdistill.train.session import (
    dataset_label,
    open_session,
    refuse_changed_run,
    refuse_existing_run,
    write_config,
    writing_run,
)
from cgdistill.train.student_init import narrow_init
from cgdistill.weights import load_discriminator, load_generator, save_generator


def imitated_blocks(student_blocks: int, teacher_blocks: int) -> list[int]:
    """0-based teacher block whose output each student block's output is matched to by the feature loss.

    Student block i of n stands for the i-th of n equal groups of teacher blocks, so it imitates the
    output where that group ends: teacher block round((i+1)*N/n), counted from 1 (3 of 9: 3, 6, 9,
    returned 0-based as [2, 5, 8]); the last student block always imitates the last teacher block.
    """
    return [int(math.floor((i + 1) * teacher_blocks / student_blocks + 0.5)) - 1 for i in range(student_blocks)]


def copied_blocks(student_blocks: int, teacher_blocks: int, *, same_width: bool) -> list[int]:
    """0-based teacher blocks whose weights the student's blocks start from (``--init copy``).

    A different question from ``imitated_blocks``: which copy starts closest to the teacher. At the
    teacher's width, evenly spaced blocks with the first and the last (3 of 9: blocks 1, 5, 9, returned
    0-based as [0, 4, 8]): the trunk then still computes nearly what the whole one does (on the
    vintagify teacher, 20 photos at 256 px: 19.0 dB PSNR to it before any training, against 15.4 dB for
    blocks 3, 6, 9; docs/distillation.md). A narrower student's channel-selected copy starts 8-10 dB
    from the teacher whichever blocks it takes (ngf 32: 10.5 dB from blocks 3, 6, 9, 9.1 from 1, 5, 9;
    ngf 16: 8.0 and 8.1), so it copies the blocks it imitates.
    """
    if not same_width:
        return imitated_blocks(student_blocks, teacher_blocks)
    if student_blocks == 1:
        return [teacher_blocks // 2]
    return [round(i * (teacher_blocks - 1) / (student_blocks - 1)) for i in range(student_blocks)]


@dataclass
class Teacher:
    """The frozen parts a student learns from, and where they came from."""

    generator: ResnetGenerator
    direction: str
    source: str  # run name or file path; the student's metadata records it under "teacher"
    reverse: ResnetGenerator | None = None
    discriminator: PatchDiscriminator | None = None
    dataset: str | None = None
    step: int = 0  # the teacher generator's recorded training step

    @property
    def ngf(self) -> int:
        return self.generator.config.ngf


def load_teacher(spec: str | None, direction: str | None) -> Teacher:
    """``--teacher RUN|FILE`` (default: the newest teacher run) for ``--direction``, by the rule every
    command shares (``runs`` module docstring); a teacher run also gives its reverse generator and the
    target domain's discriminator."""
    resolved = resolve_generator(spec, direction, role="teacher")
    require_weights(resolved, "distill needs the teacher's .safetensors model (it trains against its PyTorch module)")
    generator, info = load_generator(resolved.path)
    chosen, run = resolved.direction, resolved.run
    if run is None:
        return Teacher(generator, chosen, resolved.source, dataset=info.dataset, step=info.step)
    reverse_path = run / generator_file(reverse(chosen))
    reverse_generator = load_generator(reverse_path)[0] if reverse_path.is_file() else None
    disc_path = discriminator_judging(run, target_domain(chosen))
    discriminator = load_discriminator(disc_path)[0] if disc_path is not None else None
    return Teacher(generator, chosen, resolved.source, reverse_generator, discriminator, info.dataset, info.step)


class Adapters(nn.Module):
    """1x1 convs that lift student features to the teacher's width (identity where widths match)."""

    def __init__(self, student_channels: int, teacher_channels: int, count: int) -> None:
        super().__init__()
        self.needed = student_channels != teacher_channels
        self.convs = nn.ModuleList(
            nn.Conv2d(student_channels, teacher_channels, 1) if self.needed else nn.Identity() for _ in range(count)
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.convs, features, strict=True)]


class Student(nn.Module):
    """The student generator and its feature adapters, one module so DDP syncs both."""

    def __init__(self, generator: ResnetGenerator, adapters: Adapters, shares_encoder: bool = False) -> None:
        super().__init__()
        self.generator, self.adapters = generator, adapters
        # The stem and downsampling are the teacher's, frozen (--freeze-encoder): a step passes the
        # teacher's encoder output in (``encoded``) instead of computing the same tensor twice.
        self.shares_encoder = shares_encoder

    def forward(self, x: torch.Tensor, return_features: bool = False, encoded: bool = False):
        if not return_features:
            return self.generator(x, encoded=encoded)
        out, features = self.generator(x, return_features=True, encoded=encoded)
        return out, self.adapters(features)


def _copy_blocks(generator: ResnetGenerator, teacher: ResnetGenerator, chosen: list[int]) -> None:
    for student_block, teacher_block in zip(generator.blocks, (teacher.blocks[j] for j in chosen), strict=True):
        student_block.load_state_dict(teacher_block.state_dict())


def build_student(config: DistillConfig, teacher: ResnetGenerator, seed: torch.Generator) -> tuple[Student, list[str]]:
    """The student and notes for the user on how it was initialised.

    Its shape is ``config.blocks``, ``config.ngf`` and ``config.block``: the ``--blocks``, ``--ngf``
    and ``--block`` flags, which are those fields of ``DistillConfig`` (train/config.py).
    """
    t_cfg = teacher.config
    ngf = config.ngf or t_cfg.ngf
    # Everything but depth, width and block kind comes from the teacher (norm, upsampling, padding,
    # channels), so copied layers compute what they computed in the teacher.
    s_cfg = replace(t_cfg, blocks=config.blocks, ngf=ngf, block=config.block)
    generator = ResnetGenerator(s_cfg)
    init_weights(generator, generator=seed)
    # Adapters serve the feature loss only: without it, their weights would get no gradient (which
    # also breaks DDP's gradient reduction), so the student's features pass through unchanged.
    target_width = t_cfg.ngf * 4 if config.lambda_feature > 0 else ngf * 4
    adapters = Adapters(ngf * 4, target_width, config.blocks)
    init_weights(adapters, generator=seed)
    notes = []
    if config.init in ("copy", "copy-outer"):
        if ngf == t_cfg.ngf:
            teacher_state = teacher.state_dict()
            shared = {k: v.clone() for k, v in teacher_state.items() if k.startswith(SHARED_PREFIXES)}
            generator.load_state_dict(shared, strict=False)
            notes.append(
                f"Copied the teacher's stem, downsampling, upsampling and output layers ({len(shared)} tensors)."
            )
            if config.freeze_encoder:
                generator.stem.requires_grad_(False)
                generator.down.requires_grad_(False)
                notes.append(
                    "The stem and downsampling stay the teacher's (--freeze-encoder): one encoder pass serves both."
                )
            if config.init == "copy" and s_cfg.block == t_cfg.block:
                chosen = copied_blocks(config.blocks, t_cfg.blocks, same_width=True)
                _copy_blocks(generator, teacher, chosen)
                notes.append(
                    f"The student's residual blocks start as copies of teacher blocks {[j + 1 for j in chosen]}."
                )
            elif config.init == "copy":
                notes.append(
                    f"The student's {s_cfg.block} residual blocks start fresh: the teacher's are {t_cfg.block}, "
                    "and one kind has no exact copy in the other."
                )
        elif ngf < t_cfg.ngf:
            notes.append(
                narrow_init(
                    generator,
                    adapters.convs,
                    teacher,
                    copied_blocks(config.blocks, t_cfg.blocks, same_width=False),
                    copy_blocks=config.init == "copy",
                )
            )
        else:
            notes.append(
                f"The student is {ngf} channels wide and the teacher {t_cfg.ngf}: copying layers is not possible, "
                "so every layer starts fresh."
            )
    if adapters.needed:
        notes.append(f"Feature adapters: {config.blocks} learned 1x1 convs from {ngf * 4} to {t_cfg.ngf * 4} channels.")
    shares_encoder = not any(p.requires_grad for p in (*generator.stem.parameters(), *generator.down.parameters()))
    return Student(generator, adapters, shares_encoder), notes


def check_wiring(
    student: Student, optimizer: torch.optim.Optimizer, teacher: ResnetGenerator, device, features: bool = True
) -> None:
    """Fail loudly if a student or adapter parameter is not being trained, or (when the feature loss
    is on) a feature pair mismatches."""
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    shared = ("generator.stem.", "generator.down.") if unwrap(student).shares_encoder else ()
    trained = [(name, p) for name, p in unwrap(student).named_parameters() if not name.startswith(shared)]
    missing = [name for name, p in trained if id(p) not in in_optimizer]
    if missing:
        raise RuntimeError(f"student parameters missing from the optimizer: {missing[:3]}")
    frozen = [name for name, p in trained if not p.requires_grad]
    if frozen:
        raise RuntimeError(f"student parameters frozen by mistake: {frozen[:3]}")
    probe = torch.zeros(1, 3, 16, 16, device=device)
    # Eval mode: a probe must not move batch norm's running statistics.
    with torch.no_grad(), evaluating(unwrap(student), teacher):
        _, s_feats = unwrap(student)(probe, return_features=True)
        _, t_feats = teacher(probe, return_features=True)
    mapping = imitated_blocks(len(s_feats), len(t_feats)) if features else []
    for i, j in enumerate(mapping):
        if s_feats[i].shape != t_feats[j].shape:
            raise RuntimeError(
                f"student block {i + 1} ({tuple(s_feats[i].shape)}) does not match teacher block {j + 1} "
                f"({tuple(t_feats[j].shape)})"
            )


class DistillRecipe(Recipe):
    """The distiller's part of the loop: the student (with its adapters and weight average), the frozen
    teacher, the target-domain discriminator when the GAN loss is on, and one distillation step."""

    def __init__(
        self,
        config: DistillConfig,
        runtime: Runtime,
        teacher: Teacher,
        held_out: Images,
        dataset_name: str,
        has_target: bool = True,
    ) -> None:
        self.config, self.runtime, self.dataset_name = config, runtime, dataset_name
        self.teacher_source = teacher.source  # the student's metadata records it under "teacher"
        # Without target-domain images the discriminator learns "real" from the teacher's outputs.
        self.has_target = has_target
        self.direction = teacher.direction
        self.source, self.target = self.direction[0], self.direction[-1]
        seed = torch.Generator().manual_seed(config.seed)

        def frozen(net: nn.Module | None) -> nn.Module | None:
            if net is None:
                return None
            return runtime.prepare(net, trainable=False).eval().requires_grad_(False)

        self.teacher_generator = frozen(teacher.generator)
        self.teacher_reverse = frozen(teacher.reverse)
        self.mapping = imitated_blocks(config.blocks, teacher.generator.config.blocks)
        self.active = self._active_losses()
        student, self.notes = build_student(config, teacher.generator, seed)
        self.student = runtime.prepare(student)
        self.modules: dict[str, nn.Module] = {"student": self.student}
        betas = (config.beta1, config.beta2)
        trained = [p for p in self.student.parameters() if p.requires_grad]  # all but a shared encoder
        self.optimizers = {"G": torch.optim.Adam(trained, lr=config.lr, betas=betas)}
        self.pools: dict[str, ImagePool] = {}
        self.D: nn.Module | None = None
        if "gan" in self.active:
            self._add_discriminator(teacher, seed, betas)
        # The average lives beside the student (not inside it), so DDP and the optimizer never see it.
        self.average = WeightAverage(unwrap(self.student).generator, config.ema_decay) if config.ema_decay else None
        if self.average is not None:
            self.modules["student_average"] = self.average
        # Fidelity is measured as compare measures it: uint8 images in, uint8 images out, full precision;
        # with the uncompiled teacher, as these calls are one-offs (see Runtime.eager).
        self.held_out = held_out
        self.held_out_teacher = run_model(unwrap(self.teacher_generator), held_out, runtime.device)
        check_wiring(
            self.student, self.optimizers["G"], unwrap(self.teacher_generator), runtime.device, "feature" in self.active
        )

    def _add_discriminator(self, teacher: Teacher, seed: torch.Generator, betas: tuple[float, float]) -> None:
        cfg = self.config
        if teacher.discriminator is not None:
            discriminator = copy.deepcopy(teacher.discriminator).train()
            self.notes.append(f"The discriminator of domain {self.target} starts from the teacher's.")
        else:
            discriminator = PatchDiscriminator(DiscriminatorConfig(ndf=cfg.ndf, norm=teacher.generator.config.norm))
            init_weights(discriminator, generator=seed)
            self.notes.append(f"The teacher has no discriminator of domain {self.target}: starting a fresh one.")
        self.D = self.runtime.prepare(discriminator.requires_grad_(True))
        self.modules["D"] = self.D
        self.optimizers["D"] = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=betas)
        self.pools[self.target] = ImagePool(cfg.pool_size, cfg.seed * 1000 + self.runtime.rank + 7)

    @property
    def generator(self) -> ResnetGenerator:
        """The student generator users get: the weight average when there is one, else the raw weights."""
        return self.average.average if self.average is not None else unwrap(self.student).generator

    def _active_losses(self) -> list[str]:
        cfg = self.config
        active = []
        if cfg.lambda_output > 0:
            active.append("output")
        if cfg.lambda_feature > 0:
            active.append("feature")
        if cfg.lambda_gan > 0:
            active.append("gan")
        if cfg.lambda_cycle > 0 and self.teacher_reverse is not None:
            active.append("cycle")
        if cfg.lambda_identity > 0 and cfg.lambda_cycle > 0 and self.has_target:
            active.append("identity")
        return active

    def describe_losses(self) -> str:
        skipped = []
        if self.teacher_reverse is None and self.config.lambda_cycle > 0:
            skipped.append("cycle (the teacher has no reverse generator)")
        if not self.has_target and self.config.lambda_identity > 0:
            skipped.append(f"identity (the data has no train{self.target}/ images)")
        text = "Active losses: " + ", ".join(self.active)
        text += (f"; skipped: {', '.join(skipped)}" if skipped else "") + "."
        if not self.has_target and "gan" in self.active:
            text += " The discriminator takes the teacher's outputs as its real samples."
        return text

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg, rt = self.config, self.runtime
        x = batch[self.source]
        with torch.no_grad(), rt.autocast():
            x_in = self._encoded(x)  # with a shared encoder, one pass serves the teacher and the student
            t_out, t_feats = self.teacher_generator(x_in, return_features=True, encoded=self.shares_encoder)
        y = batch[self.target] if self.has_target else t_out.detach()
        t_feats = [t_feats[j] for j in self.mapping]
        if self.D is not None:
            self.D.requires_grad_(False)
        # --echo: the teacher's pass is most of a narrow student's step, so its outputs serve several updates.
        for _ in range(cfg.echo):
            losses, s_out = self._student_update(x, x_in, y, t_out, t_feats)
        if self.D is not None:
            self.D.requires_grad_(True)
            pooled = self.pools[self.target].query(s_out.detach())
            with rt.autocast():
                losses["D"] = discriminator_loss(self.D(y), self.D(pooled))
            rt.step("D", losses["D"], self.optimizers["D"])
        return {name: value.detach() for name, value in losses.items()}

    @property
    def shares_encoder(self) -> bool:
        """Whether the student's frozen stem and downsampling are the teacher's (build_student decides)."""
        return unwrap(self.student).shares_encoder

    def _encoded(self, images: torch.Tensor) -> torch.Tensor:
        """What the student starts from: ``images``, or the shared (frozen) encoder's output of them."""
        if not self.shares_encoder:
            return images
        with torch.no_grad(), self.runtime.autocast():
            return unwrap(self.teacher_generator).encode(images)

    def _student_update(
        self,
        x: torch.Tensor,
        x_in: torch.Tensor,
        y: torch.Tensor,
        t_out: torch.Tensor,
        t_feats: list[torch.Tensor],
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One optimizer step of the student (and its weight average) against the teacher's outputs;
        ``x_in`` is what the student starts from: ``x``, or the shared encoder's output of it."""
        cfg, rt = self.config, self.runtime
        losses: dict[str, torch.Tensor] = {}
        with rt.autocast():
            s_out, s_feats = self.student(x_in, return_features=True, encoded=self.shares_encoder)
            if "output" in self.active:
                losses["output"] = output_loss(s_out, t_out) * cfg.lambda_output
            if "feature" in self.active:
                losses["feature"] = feature_loss(s_feats, t_feats) * cfg.lambda_feature
            if "gan" in self.active:
                losses["gan"] = gan_loss(unwrap(self.D)(s_out), True) * cfg.lambda_gan
            if "cycle" in self.active:
                losses["cycle"] = cycle_loss(self.teacher_reverse(s_out), x) * cfg.lambda_cycle
            if "identity" in self.active:
                y_in = self._encoded(y)
                losses["identity"] = (
                    identity_loss(self.student(y_in, encoded=self.shares_encoder), y)
                    * cfg.lambda_identity
                    * cfg.lambda_cycle
                )
        rt.step("G", sum(losses.values()), self.optimizers["G"])
        if self.average is not None:
            self.average.update(unwrap(self.student).generator)
        return losses, s_out

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Student-to-teacher PSNR and SSIM on fixed held-out images: the numbers that show convergence."""
        # Eval mode as compare runs it (the loop calls this in eval mode too; alone it must hold as well).
        with evaluating(self.generator):
            out = run_model(self.generator, self.held_out, self.runtime.device)
        measured = fidelity(out, self.held_out_teacher)
        return {"psnr_to_teacher": round(measured.psnr, 3), "ssim_to_teacher": round(measured.ssim, 4)}

    @torch.no_grad()
    def sample_rows(self, batch: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        """Per sample: input | teacher | student."""
        x = batch[self.source]
        with self.runtime.autocast():
            t_out, s_out = self.teacher_generator(x), self.generator(x)
        return [[x[i], t_out[i], s_out[i]] for i in range(x.shape[0])]

    def export(self, run_dir: Path, step: int) -> None:
        save_generator(
            self.generator,
            run_dir / STUDENT_FILE,
            direction=self.direction,
            dataset=self.dataset_name,
            image_size=self.config.image_size,
            step=step,
            teacher=self.teacher_source,
            extra={
                "init": self.config.init,
                "losses": self.active,
                "objective": self.config.objective,
                "ema_decay": self.config.ema_decay,
                "preset": self.config.preset,
            },
        )


def held_out_images(data_dir: Path, direction: str, count: int = FIDELITY_IMAGES) -> Images:
    """The first ``count`` source-domain test images (training images when there is no test split), uint8
    HxWx3 at their own size and aspect ratio, prepared exactly as ``compare`` prepares its test set."""
    try:
        files = source_test_files(data_dir, direction, limit=count)
    except CgdistillError:
        files = list_images(data_dir / f"train{direction[0]}")[:count]
    return load_images(files)


def sample_images(images: Images, count: int = 3) -> torch.Tensor:
    """The first ``count`` images as one uint8 NHWC batch for the run's sample sheets: each centre-cropped
    to the largest size they share, sides down to a multiple of 4 so the bare generator takes them."""
    chosen = images[:count]
    height = min(image.shape[0] for image in chosen) // 4 * 4
    width = min(image.shape[1] for image in chosen) // 4 * 4
    crops = []
    for image in chosen:
        top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
        crops.append(image[top : top + height, left : left + width])
    return torch.stack(crops)


def distill(
    config: DistillConfig, *, resume: bool = False, observer: Observer | None = None, given: set[str] | None = None
) -> Path:
    """Distill a teacher generator into a student run; returns the run folder."""
    started = budget_clock()  # --time-budget counts the whole command, loading included
    observer = observer or Observer()
    plan = plan_distill(config, load_teacher, resume=resume, given=given)
    config, teacher = plan.config, plan.teacher
    rank, _, _ = join_process_group(config.device)
    with writing_run(plan.run_dir, rank, observer):
        if not resume:
            refuse_existing_run(plan.run_dir, rank)
        refuse_changed_run(plan, rank)
        if config.teacher_step not in (None, teacher.step):
            observer.message(
                f"Teacher {teacher.source} is at step {teacher.step} now; this student started against its step "
                f"{config.teacher_step} and continues against the teacher as it is now."
            )
        session = open_session(
            plan,
            "student",
            observer=observer,
            norm=teacher.generator.config.norm,
            domains=plan.domains,
            primary=teacher.direction[0],
        )
        try:
            runtime = session.runtime
            recipe = DistillRecipe(
                config,
                runtime,
                teacher,
                held_out_images(session.data_dir, teacher.direction),
                dataset_label(session.data_dir, config.data),
                has_target=len(plan.domains) == 2,
            )
            if runtime.is_main:
                s_cfg = unwrap(recipe.student).generator.config
                observer.message(
                    f"Distilling {teacher.source} ({teacher.direction}, {teacher.generator.config.blocks} blocks, "
                    f"ngf {teacher.generator.config.ngf}) into {config.name} ({s_cfg.blocks} {s_cfg.block} blocks, "
                    f"ngf {s_cfg.ngf}; preset {config.preset}) on {session.data_dir} on {runtime.describe()}."
                )
                for note in recipe.notes:
                    observer.message(note)
                observer.message(recipe.describe_losses())
                observer.message(f"Student blocks imitate teacher blocks {[j + 1 for j in recipe.mapping]}.")
            budget = None
            if config.time_budget is not None and config.budget_steps is None:
                budget = StepBudget(parse_duration(config.time_budget), started=started)

            def fix_steps(total: int) -> None:
                # Stored with the run: --resume trains to this count however fast the machine is then.
                config.budget_steps = total
                config.max_steps = total
                if runtime.is_main:
                    write_config(session.run_dir, "student", config, session.data_dir)
                    observer.message(
                        f"Time budget {config.time_budget}: {budget.step_s:.2f} s per step over the first steps "
                        f"and {budget.evaluation_s:.1f} s per evaluation, so this run trains {total} steps "
                        f"(stored in config.json; --resume keeps it)."
                    )

            fit(
                recipe,
                config,
                runtime,
                session.dataset,
                session.run_dir,
                resume=resume,
                observer=observer,
                sample_batch={
                    teacher.direction[0]: runtime.to_device(
                        sample_images(recipe.held_out).permute(0, 3, 1, 2).float() / 127.5 - 1
                    )
                },
                budget=budget,
                on_budget=fix_steps,
            )
        finally:
            teardown_runtime(session.runtime)
    return session.run_dir
