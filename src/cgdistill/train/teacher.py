"""The CycleGAN recipe (Zhu et al., 2017): two generators, two PatchGANs, LSGAN + cycle + identity.

Names follow the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix), so loss curves
compare with the authors' by name; its ``G_A`` is our ``G_A2B`` (the paper's G), ``G_B`` our ``G_B2A`` (F).

    name     network / loss                                          reference (paper)
    D_A      judges domain B: real B against G_A2B's fakes           netD_A, loss_D_A (D_Y)
    D_B      judges domain A: real A against G_B2A's fakes           netD_B, loss_D_B (D_X)
    G_A      G_A2B's LSGAN loss under D_A                            loss_G_A
    G_B      G_B2A's LSGAN loss under D_B                            loss_G_B
    cycle_A  |G_B2A(G_A2B(a)) - a|_1 * lambda_cycle                  loss_cycle_A
    cycle_B  |G_A2B(G_B2A(b)) - b|_1 * lambda_cycle                  loss_cycle_B
    idt_A    |G_A2B(b) - b|_1 * lambda_identity * lambda_cycle       loss_idt_A
    idt_B    |G_B2A(a) - a|_1 * lambda_identity * lambda_cycle       loss_idt_B

Runs made before these names (issue 14) called the discriminator of domain A ``D_A``, logged
``G_A2B``/``G_B2A`` and swapped ``idt_A``/``idt_B``; their model files, training states and metrics
still read right (runs.py ``discriminator_judging``, train/state.py, plots.py ``with_reference_names``).

The step below is the published one; with ``fuse_passes`` the passes through one network are
batched into one call, which is the same mathematics under instance norm.
"""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path

import torch

from cgdistill.losses import cycle_loss, discriminator_loss, gan_loss, identity_loss
from cgdistill.nets import (
    DiscriminatorConfig,
    GeneratorConfig,
    PatchDiscriminator,
    ResnetGenerator,
    init_weights,
    unwrap,
)
from cgdistill.runs import discriminator_file, generator_file
from cgdistill.train.command import Prepared, run_planned
from cgdistill.train.config import TeacherConfig
from cgdistill.train.loop import Observer, Recipe
from cgdistill.train.plan import Plan, plan_teacher
from cgdistill.train.pool import ImagePool
from cgdistill.train.runtime import Runtime
from cgdistill.train.session import Session, dataset_label, fixed_sample_batch
from cgdistill.weights import save_discriminator, save_generator

LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")
"""The logged losses, in the reference implementation's order."""
JUDGED_DOMAIN = {"D_A": "B", "D_B": "A"}
"""The domain whose images each discriminator judges (recorded in its model file)."""


class CycleGANRecipe(Recipe):
    """The teacher's part of the loop: both generators and discriminators, their optimizers and pools,
    and one step of the published recipe."""

    def __init__(self, config: TeacherConfig, runtime: Runtime, dataset_name: str) -> None:
        self.config, self.runtime, self.dataset_name = config, runtime, dataset_name
        gen_cfg = GeneratorConfig(blocks=config.blocks, ngf=config.ngf, norm=config.norm, upsample=config.upsample)
        disc_cfg = DiscriminatorConfig(ndf=config.ndf, norm=config.norm)
        seed = torch.Generator().manual_seed(config.seed)
        # Initialised in this order (the judge of domain A before that of B, as before the rename),
        # so that a seed gives the same networks as it did then.
        nets = {
            "G_A2B": ResnetGenerator(gen_cfg),
            "G_B2A": ResnetGenerator(gen_cfg),
            "D_B": PatchDiscriminator(disc_cfg),
            "D_A": PatchDiscriminator(disc_cfg),
        }
        for net in nets.values():
            init_weights(net, generator=seed)
        self.modules = {name: runtime.prepare(net) for name, net in nets.items()}
        self.G_A2B, self.G_B2A = self.modules["G_A2B"], self.modules["G_B2A"]
        self.D_A, self.D_B = self.modules["D_A"], self.modules["D_B"]  # D_A judges domain B, D_B domain A
        betas = (config.beta1, config.beta2)
        self.optimizers = {
            "G": torch.optim.Adam(
                itertools.chain(self.G_A2B.parameters(), self.G_B2A.parameters()), lr=config.lr, betas=betas
            ),
            # The judge of domain A first: the parameter order of states written before the rename.
            "D": torch.optim.Adam(
                itertools.chain(self.D_B.parameters(), self.D_A.parameters()), lr=config.lr, betas=betas
            ),
        }
        rank_seed = config.seed * 1000 + runtime.rank
        # Keyed by the domain of the fakes they hold: pool "B" feeds D_A, pool "A" feeds D_B.
        self.pools = {"A": ImagePool(config.pool_size, rank_seed + 1), "B": ImagePool(config.pool_size, rank_seed + 2)}

    def _translate(self, real_A: torch.Tensor, real_B: torch.Tensor, with_identity: bool):
        """fake_B, rec_A, fake_A, rec_B and (when the identity loss is on) idt_A = G_A2B(b), idt_B = G_B2A(a)."""
        n = real_A.shape[0]
        if self.runtime.fuse_passes and with_identity:
            out = self.G_A2B(torch.cat([real_A, real_B]))
            fake_B, idt_A = out[:n], out[n:]
            out = self.G_B2A(torch.cat([real_B, real_A, fake_B]))
            fake_A, idt_B, rec_A = out[:n], out[n : 2 * n], out[2 * n :]
            rec_B = self.G_A2B(fake_A)
            return fake_B, rec_A, fake_A, rec_B, idt_A, idt_B
        fake_B = self.G_A2B(real_A)
        rec_A = self.G_B2A(fake_B)
        fake_A = self.G_B2A(real_B)
        rec_B = self.G_A2B(fake_A)
        idt_A = self.G_A2B(real_B) if with_identity else None
        idt_B = self.G_B2A(real_A) if with_identity else None
        return fake_B, rec_A, fake_A, rec_B, idt_A, idt_B

    def _judge(self, D, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.runtime.fuse_passes:
            scores = D(torch.cat([real, fake]))
            return discriminator_loss(scores[: real.shape[0]], scores[real.shape[0] :])
        return discriminator_loss(D(real), D(fake))

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg, rt = self.config, self.runtime
        real_A, real_B = batch["A"], batch["B"]
        lambda_idt = cfg.lambda_identity * cfg.lambda_cycle
        discriminators = (self.D_A, self.D_B)

        # Generators: D is only a critic here, so it gets no gradients (and its DDP wrapper is bypassed).
        for D in discriminators:
            D.requires_grad_(False)
        with rt.autocast():
            fake_B, rec_A, fake_A, rec_B, idt_A, idt_B = self._translate(real_A, real_B, lambda_idt > 0)
            losses = {
                "G_A": gan_loss(unwrap(self.D_A)(fake_B), True),
                "G_B": gan_loss(unwrap(self.D_B)(fake_A), True),
                "cycle_A": cycle_loss(rec_A, real_A) * cfg.lambda_cycle,
                "cycle_B": cycle_loss(rec_B, real_B) * cfg.lambda_cycle,
            }
            # idt_B before idt_A: the order runs before the rename summed them in, so that an old
            # run resumes to the same bits as it would have without the rename.
            if lambda_idt > 0:
                losses["idt_B"] = identity_loss(idt_B, real_A) * lambda_idt
                losses["idt_A"] = identity_loss(idt_A, real_B) * lambda_idt
        rt.step("G", sum(losses.values()), self.optimizers["G"])

        # Discriminators: real images against fakes drawn from the history pools.
        for D in discriminators:
            D.requires_grad_(True)
        pooled_A = self.pools["A"].query(fake_A.detach())
        pooled_B = self.pools["B"].query(fake_B.detach())
        with rt.autocast():
            losses["D_B"] = self._judge(self.D_B, real_A, pooled_A)
            losses["D_A"] = self._judge(self.D_A, real_B, pooled_B)
        rt.step("D", losses["D_A"] + losses["D_B"], self.optimizers["D"])
        return {name: losses[name].detach() for name in LOSS_NAMES if name in losses}

    @torch.no_grad()
    def sample_rows(self, batch: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        """Per sample: real A | fake B | reconstructed A | real B | fake A | reconstructed B."""
        G_A2B, G_B2A = unwrap(self.G_A2B), unwrap(self.G_B2A)
        with self.runtime.autocast():
            real_A, real_B = batch["A"], batch["B"]
            fake_B, fake_A = G_A2B(real_A), G_B2A(real_B)
            rec_A, rec_B = G_B2A(fake_B), G_A2B(fake_A)
        return [[real_A[i], fake_B[i], rec_A[i], real_B[i], fake_A[i], rec_B[i]] for i in range(real_A.shape[0])]

    def export(self, run_dir: Path, step: int) -> None:
        common = {"dataset": self.dataset_name, "step": step}
        for direction in ("A2B", "B2A"):
            save_generator(
                self.modules[f"G_{direction}"],
                run_dir / generator_file(direction),
                direction=direction,
                image_size=self.config.image_size,
                **common,
            )
        for letter in ("A", "B"):
            name = f"D_{letter}"
            judges = JUDGED_DOMAIN[name]
            save_discriminator(self.modules[name], run_dir / discriminator_file(letter), judges=judges, **common)


def train_teacher(
    config: TeacherConfig, *, resume: bool = False, observer: Observer | None = None, given: set[str] | None = None
) -> Path:
    """Train (or resume) a CycleGAN teacher run; returns the run folder.

    ``given`` names the settings the user set explicitly (on resume only some may change).
    """
    observer = observer or Observer()
    plan = plan_teacher(config, resume=resume, given=given)
    for note in plan.notes:
        observer.message(note)
    return run_planned(plan, "teacher", partial(_prepare, plan, observer), observer=observer)


def _prepare(plan: Plan[TeacherConfig], observer: Observer, session: Session) -> Prepared:
    """The CycleGAN recipe for the opened session, the run described to the user, and the sample batch."""
    config, runtime = plan.config, session.runtime
    if runtime.is_main:
        observer.message(
            f"Training teacher {config.name} on {session.data_dir} "
            f"({len(session.dataset.A_paths)} A / {len(session.dataset.B_paths)} B images) on {runtime.describe()}."
        )
    recipe = CycleGANRecipe(config, runtime, dataset_label(session.data_dir, config.data))
    return Prepared(recipe, fixed_sample_batch(session.dataset, runtime))
