"""The frozen teacher's outputs, kept per training image, for runs whose inputs repeat exactly.

When each crop is the whole image (``--image-size`` equal to ``--load-size``), a training image comes
back every epoch as one of two inputs (flipped or not), and the frozen teacher gives the same
outputs for it each time. A narrow student's step is mostly that pass (docs/distillation.md), so
keeping what it gave makes the later epochs cost the student's updates alone. The cache only saves
time: a step uses the values the teacher computed for that very input (keyed by the input's bytes),
stored in the dtype they were computed in, and makes the same ``--echo`` updates as without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cgdistill.device import available_memory
from cgdistill.errors import CgdistillError

AUTO_SHARE = 0.25  # of the memory free when the run starts: room for the loader, the networks and other programs


@dataclass
class TeacherTargets:
    """What the teacher gives a batch: the student's start (the shared encoder's output, or None when
    the student starts from the images), the teacher's output, and its hidden states the student imitates."""

    start: torch.Tensor | None
    output: torch.Tensor
    features: list[torch.Tensor]

    def sample(self, i: int) -> TeacherTargets:
        """Sample ``i`` on the CPU, in its own storage (a view would keep the whole batch alive)."""

        def own(t: torch.Tensor) -> torch.Tensor:
            return t[i].to("cpu").clone(memory_format=torch.contiguous_format)

        return TeacherTargets(
            None if self.start is None else own(self.start), own(self.output), [own(f) for f in self.features]
        )

    @property
    def nbytes(self) -> int:
        tensors = [self.output, *self.features] + ([] if self.start is None else [self.start])
        return sum(t.numel() * t.element_size() for t in tensors)


def stack(samples: list[TeacherTargets], device: torch.device) -> TeacherTargets:
    """Per-sample targets as one batch on ``device``."""

    def batch(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(tensors).to(device, non_blocking=True)

    starts = [s.start for s in samples]
    return TeacherTargets(
        None if starts[0] is None else batch(starts),  # type: ignore[arg-type]
        batch([s.output for s in samples]),
        [batch([s.features[j] for s in samples]) for j in range(len(samples[0].features))],
    )


def input_key(image: torch.Tensor) -> bytes:
    """One training input's identity: a digest of its values (equal inputs give equal teacher outputs)."""
    data = image.detach().to("cpu").contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).digest()


def cache_limit(setting: str | int, crops_repeat: bool) -> int:
    """Bytes the cache may hold for ``--teacher-cache`` as read (``DistillConfig.teacher_cache_setting``;
    0: off). ``auto`` keeps one only when the inputs repeat (each crop the whole image), up to a quarter
    of the host memory free now (the cache lives there, whatever device trains)."""
    if setting == "off":
        return 0
    if setting == "auto":
        return int(available_memory(torch.device("cpu")) * AUTO_SHARE) if crops_repeat else 0
    return int(setting)


class TeacherCache:
    """Up to ``limit`` bytes of per-input teacher targets on the CPU; once full, new inputs are computed
    each time they come (the run goes on at the uncached speed for them).

    ``mirrored`` (training with random flips): an input that comes back flipped is the same tensor
    mirrored left to right, so the pass that computes a new input computes its mirror image too. The
    teacher's total work is the same, done sooner: the cache is complete after one epoch instead of
    filling over several, and the time budget then counts the steps the rest of the run will take.
    """

    def __init__(self, limit: int, *, mirrored: bool = False) -> None:
        if limit <= 0:
            raise CgdistillError(f"A teacher cache needs a positive size, got {limit} bytes.")
        self.limit, self.mirrored = limit, mirrored
        self.entries: dict[bytes, TeacherTargets] = {}
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.full = False

    def targets(
        self, images: torch.Tensor, compute: Callable[[torch.Tensor], TeacherTargets], device: torch.device
    ) -> TeacherTargets:
        """The teacher's targets for the batch ``images``: ``compute`` runs on the inputs not seen before
        (one pass over those alone, and their mirror images when ``mirrored``), the rest come from the cache."""
        keys = [input_key(image) for image in images]
        missing = [i for i, key in enumerate(keys) if key not in self.entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh: dict[int, TeacherTargets] = {}
        if missing:
            new = images[missing] if len(missing) < len(keys) else images
            mirrors, mirror_keys = self._new_mirrors(new, {keys[i] for i in missing})
            computed = compute(torch.cat([new, mirrors]) if mirror_keys else new)
            for j, i in enumerate(missing):
                fresh[i] = computed.sample(j)
                self._keep(keys[i], fresh[i])
            for j, key in enumerate(mirror_keys, start=len(missing)):
                self._keep(key, computed.sample(j))
        return stack([fresh[i] if i in fresh else self.entries[key] for i, key in enumerate(keys)], device)

    def _new_mirrors(self, new: torch.Tensor, new_keys: set[bytes]) -> tuple[torch.Tensor, list[bytes]]:
        """The mirror images of ``new`` that neither the cache nor the batch holds, with their keys."""
        if not self.mirrored or self.full:
            return new[:0], []
        mirrored = new.flip(-1)
        chosen, keys = [], []
        for j, image in enumerate(mirrored):
            key = input_key(image)
            if key not in self.entries and key not in new_keys and key not in keys:
                chosen.append(j)
                keys.append(key)
        return mirrored[chosen], keys

    def _keep(self, key: bytes, sample: TeacherTargets) -> None:
        size = sample.nbytes
        if self.nbytes + size > self.limit:
            self.full = True
            return
        self.entries[key] = sample
        self.nbytes += size
