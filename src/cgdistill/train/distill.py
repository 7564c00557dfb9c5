"""Distillation: a student generator with fewer residual blocks learns one teacher generator.

Losses on the student S for direction A2B (B2A mirrors it), teacher T frozen:

    output   = |S(a) - T(a)|_1                                   * lambda_output
    feature  = mean_i |adapter_i(S_i(a)) - T_map(i)(a)|_2^2      * lambda_feature
    gan      = LSGAN(D(S(a)), real)                              * lambda_gan
    cycle    = |T_B2A(S(a)) - a|_1                               * lambda_cycle   (teacher run only)
    identity = |S(b) - b|_1                                      * lambda_identity * lambda_cycle

Student block i of n is matched to teacher block round((i+1)*N/n) (3 of 9 -> 3, 6, 9; `imitated_blocks`);
`--init copy` starts it from other blocks (3 of 9 -> 1, 5, 9 at the same width; `copied_blocks` says why):
both in train/student.py, with the student's construction; the teacher is loaded by train/teacher_loading.py.
D judges the target domain B: it starts from the teacher's discriminator of B (the reference's D_A)
when the teacher has one, and keeps training against S.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from cgdistill.data.images import list_images
from cgdistill.errors import CgdistillError
from cgdistill.losses import cycle_loss, discriminator_loss, feature_loss, gan_loss, identity_loss, output_loss
from cgdistill.metrics import fidelity
from cgdistill.nets import DiscriminatorConfig, PatchDiscriminator, ResnetGenerator, evaluating, init_weights, unwrap
from cgdistill.options import FIDELITY_IMAGES
from cgdistill.runs import STUDENT_FILE
from cgdistill.testset import Images, load_images, run_model, source_test_files
from cgdistill.train.budget import now as budget_clock
from cgdistill.train.command import Prepared, run_planned
from cgdistill.train.config import DistillConfig
from cgdistill.train.ema import WeightAverage
from cgdistill.train.loop import Observer, Recipe
from cgdistill.train.plan import DistillPlan, plan_distill
from cgdistill.train.pool import ImagePool
from cgdistill.train.runtime import Runtime
from cgdistill.train.session import Session, dataset_label
from cgdistill.train.student import build_student, check_wiring, imitated_blocks
from cgdistill.train.teacher_cache import TeacherCache, TeacherTargets, cache_limit
from cgdistill.train.teacher_loading import Teacher, load_teacher
from cgdistill.weights import save_generator


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
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.config, self.runtime, self.dataset_name = config, runtime, dataset_name
        self.say = say or (lambda text: None)
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
        # Whole images as crops come back each epoch: the teacher's pass on them is kept (train/teacher_cache.py).
        limit = cache_limit(config.teacher_cache_setting(), config.image_size == config.load_size)
        self.teacher_cache = TeacherCache(limit, mirrored=config.flip) if limit else None
        # Fidelity is measured as compare measures it: uint8 images in, uint8 images out, at the torch
        # engine's precision (autocast on CUDA, fp32 on the CPU: testset.run_model); with the uncompiled
        # teacher, as these calls are one-offs (see Runtime.eager).
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
        targets = self._teacher_targets(x)
        x_in = x if targets.start is None else targets.start
        t_out, t_feats = targets.output, targets.features
        y = batch[self.target] if self.has_target else t_out.detach()
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

    def _teacher_targets(self, x: torch.Tensor) -> TeacherTargets:
        """The teacher's targets for the batch ``x``: from the teacher cache where it holds them."""
        if self.teacher_cache is None:
            return self._teacher_pass(x)
        was_full = self.teacher_cache.full
        targets = self.teacher_cache.targets(x, self._teacher_pass, self.runtime.device)
        if targets.start is not None:
            targets.start = self.runtime.to_device(targets.start)  # the memory format the student runs in
        if self.teacher_cache.full and not was_full:
            self.say(
                f"The teacher cache is full ({self.teacher_cache.nbytes / 2**30:.2f} GiB, "
                f"{len(self.teacher_cache.entries)} inputs): the teacher runs each time on the others "
                "(a larger --teacher-cache keeps more)."
            )
        return targets

    def _teacher_pass(self, x: torch.Tensor) -> TeacherTargets:
        """The frozen teacher on ``x``: what the student starts from, the output and the imitated hidden states."""
        with torch.no_grad(), self.runtime.autocast():
            x_in = self._encoded(x)  # with a shared encoder, one pass serves the teacher and the student
            t_out, t_feats = self.teacher_generator(x_in, return_features=True, encoded=self.shares_encoder)
        return TeacherTargets(x_in if self.shares_encoder else None, t_out, [t_feats[j] for j in self.mapping])

    def discard_caches(self) -> None:
        """Forget what the teacher cache holds (a compiled first step that was undone may have filled it)."""
        if self.teacher_cache is not None:
            self.teacher_cache = TeacherCache(self.teacher_cache.limit, mirrored=self.teacher_cache.mirrored)

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
    notes = ()
    if config.teacher_step not in (None, teacher.step):
        notes = (
            f"Teacher {teacher.source} is at step {teacher.step} now; this student started against its step "
            f"{config.teacher_step} and continues against the teacher as it is now.",
        )
    return run_planned(
        plan,
        "student",
        partial(_prepare, plan, observer),
        observer=observer,
        domains=plan.domains,
        primary=teacher.direction[0],
        notes=notes,
        budget=config.step_budget(started),
    )


def _prepare(plan: DistillPlan, observer: Observer, session: Session) -> Prepared:
    """The distillation recipe for the opened session, the run described to the user, and the sample batch."""
    config, teacher, runtime = plan.config, plan.teacher, session.runtime
    recipe = DistillRecipe(
        config,
        runtime,
        teacher,
        held_out_images(session.data_dir, teacher.direction),
        dataset_label(session.data_dir, config.data),
        has_target=len(plan.domains) == 2,
        say=observer.message if runtime.is_main else None,
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
        if recipe.teacher_cache is not None:
            observer.message(
                f"Teacher cache: on, up to {recipe.teacher_cache.limit / 2**30:.1f} GiB: the teacher runs once on "
                "each input, and its outputs serve the input whenever it comes back."
            )
    samples = sample_images(recipe.held_out).permute(0, 3, 1, 2).float() / 127.5 - 1
    return Prepared(recipe, {teacher.direction[0]: runtime.to_device(samples)})
