"""Where each training step falls: its epoch, its place in the epoch's data order, its learning rate.

The step is the run's one clock. The data order and augmentation of an epoch are pure functions of
(seed, epoch) (data/unpaired.py) and the lr schedule is a function of the step (schedule.py), so a
checkpoint needs only the step count to put both back where a straight run would have them.
"""

from __future__ import annotations

from dataclasses import dataclass

from cgdistill.train.config import TrainConfig
from cgdistill.train.schedule import lr_factor_at
from cgdistill.train.state import Position


def steps_per_epoch(samples_per_epoch: int, batch_size: int) -> int:
    """Steps in an epoch of ``samples_per_epoch`` samples (per rank); the last batch may be smaller (no drop_last)."""
    return max(1, -(-samples_per_epoch // batch_size))


@dataclass(frozen=True)
class Timeline:
    """A run's steps laid onto epochs. Step indices are 0-based: step ``i`` is the (i+1)-th step."""

    samples_per_epoch: int  # per rank: each rank's share of the epoch's order
    batch_size: int
    epochs: int
    epochs_decay: int
    max_steps: int | None = None

    @classmethod
    def for_run(cls, config: TrainConfig, dataset_size: int, world_size: int) -> Timeline:
        return cls(
            samples_per_epoch=-(-dataset_size // world_size),
            batch_size=config.batch_size,
            epochs=config.epochs,
            epochs_decay=config.epochs_decay,
            max_steps=config.max_steps,
        )

    @property
    def steps_per_epoch(self) -> int:
        """Every epoch has this many steps."""
        return steps_per_epoch(self.samples_per_epoch, self.batch_size)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.epochs_decay

    @property
    def total_steps(self) -> int:
        """The run's end: the epoch schedule, or ``max_steps`` when that comes first."""
        full = self.steps_per_epoch * self.total_epochs
        return full if self.max_steps is None else min(full, self.max_steps)

    def epoch(self, step: int) -> int:
        """The 0-based epoch that step index ``step`` trains in."""
        return step // self.steps_per_epoch

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base lr for step index ``step``."""
        return lr_factor_at(
            step,
            steps_per_epoch=self.steps_per_epoch,
            epochs=self.epochs,
            epochs_decay=self.epochs_decay,
            max_steps=self.max_steps,
        )

    def position(self, done: int) -> Position:
        """Where training stands after ``done`` steps: the epoch to continue in, and the samples of
        its order (per rank) already consumed. The end of an epoch is the start of the next one."""
        epoch, within = divmod(done, self.steps_per_epoch)
        return Position(step=done, epoch=epoch, offset=within * self.batch_size)

    def agrees_with(self, stored: Position) -> bool:
        """Whether a checkpoint's stored epoch and offset are where its step falls on this timeline.

        They can differ only when the number of processes or of training images changed since the
        checkpoint was written (the batch size cannot change on resume). Checkpoints written before the
        loop derived the position from the step stored the end of an epoch as (that epoch, all of its
        samples), which is the same place as (the next epoch, 0), so those agree.
        """
        epoch, offset = stored.epoch, stored.offset
        if offset == self.samples_per_epoch:
            epoch, offset = epoch + 1, 0
        derived = self.position(stored.step)
        return (epoch, offset) == (derived.epoch, derived.offset)
