"""The teacher a student learns from: ``--teacher RUN|FILE`` loaded once, with what its run also holds."""

from __future__ import annotations

from dataclasses import dataclass

from cgdistill.nets import PatchDiscriminator, ResnetGenerator
from cgdistill.runs import (
    discriminator_judging,
    generator_file,
    require_weights,
    resolve_generator,
    reverse,
    target_domain,
)
from cgdistill.weights import load_discriminator, load_generator


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
