"""The one training loop that the teacher recipe and the distiller share.

A recipe supplies its models, optimizers, pools and ``train_step``; the loop owns the data order,
the learning-rate schedule, logging, samples, checkpoints, exact resume, stop signals
(Ctrl-C, SIGTERM, SIGHUP: save and exit; train/stopping.py), checkpoints by the clock, the NaN stop
and, under --compile, the check of the first compiled step (train/compile_check.py).
:func:`fit` is a flat loop over the step index: the epoch, the place in its data order and the lr
come from the step (train/timeline.py), what follows a step from :func:`_due_after`, and the work
between steps (resume, log, sample, save) from :class:`_Job`, which also asks a time budget
(train/budget.py) for the run's length while the budget is still deciding it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from time import monotonic
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from cgdistill.data.unpaired import EpochSampler, UnpairedDataset
from cgdistill.errors import CgdistillError, WorkFailed
from cgdistill.fsutil import NoSpace, atomic_path, atomic_write_text, storage_errors
from cgdistill.nets import evaluating
from cgdistill.plots import read_metrics, write_curves
from cgdistill.runs import METRICS_FILE
from cgdistill.train.budget import StepBudget
from cgdistill.train.compile_check import checked_first_step
from cgdistill.train.config import TrainConfig
from cgdistill.train.pool import ImagePool
from cgdistill.train.runtime import Runtime, broadcast_from_main
from cgdistill.train.state import Position, latest_checkpoint, load_state, save_state
from cgdistill.train.stopping import StopFlag, TrainingInterrupted
from cgdistill.train.timeline import Timeline


class Recipe(ABC):
    """What a training job supplies to :func:`fit`."""

    modules: dict[str, nn.Module]  # saved in the training state (trainable or not)
    optimizers: dict[str, torch.optim.Optimizer]
    pools: dict[str, ImagePool]

    @abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimisation step on ``batch``; returns the detached losses to log."""

    @abstractmethod
    def sample_rows(self, batch: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        """Rows of images ([-1, 1]) that show progress, for ``samples/step_XXXXXXX.png``."""

    @abstractmethod
    def export(self, run_dir: Path, step: int) -> None:
        """Write the user-facing model files (atomically)."""

    def evaluate(self) -> dict[str, float]:
        """Periodic measurements beyond the losses (the distiller's fidelity); none by default."""
        return {}

    def discard_caches(self) -> None:
        """Forget values kept from earlier steps (a step that was undone may have left wrong ones); none by default."""
        return None


@dataclass
class StepReport:
    """What the loop tells its observer after each logged step."""

    step: int
    total_steps: int
    epoch: int
    total_epochs: int
    lr: float
    losses: dict[str, float]
    steps_per_s: float
    metrics: dict[str, float] = field(default_factory=dict)


class Observer:
    """Presentation hooks (the CLI draws a rich display); the default is silent."""

    def start(self, total_steps: int, initial_step: int) -> None: ...

    def update(self, report: StepReport) -> None: ...

    def message(self, text: str) -> None: ...

    def finish(self) -> None: ...


@contextlib.contextmanager
def _inference(recipe: Recipe, runtime: Runtime) -> Iterator[None]:
    """For samples and measurements: the networks in eval mode (batch norm keeps its running
    statistics) and uncompiled (no compilation for no_grad and other shapes), then as they were."""
    with evaluating(*recipe.modules.values()), runtime.eager():
        yield


def _collate_batch(batch: dict, runtime: Runtime) -> dict[str, torch.Tensor]:
    return {key: runtime.to_device(value) for key, value in batch.items() if torch.is_tensor(value)}


def _write_metrics(run_dir: Path, record: dict) -> None:
    path = run_dir / METRICS_FILE
    with storage_errors(path), open(path, "a", encoding="utf-8") as handle:
        size = handle.tell()
        try:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
        except OSError:
            handle.truncate(size)  # no half line for the next reader (best effort: the disk is full)
            raise


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, forget log lines written after the checkpoint (they will be written again); lines
    logged before issue 14 take the reference's loss names, so that the file speaks one language."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = [record for record in read_metrics(path) if record.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))


def _save_samples(rows: list[list[torch.Tensor]], path: Path) -> None:
    from torchvision.utils import save_image

    images = [img.detach().float().cpu() for row in rows for img in row]
    grid = torch.stack(images).add(1).div(2).clamp(0, 1)
    with atomic_path(path) as tmp:
        save_image(grid, tmp, nrow=len(rows[0]), padding=2, format="png")


def _open_tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CgdistillError(
            "--tensorboard needs the tensorboard package; install it with `pip install 'cgdistill[tensorboard]'`."
        ) from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def build_loader(dataset: UnpairedDataset, config: TrainConfig, runtime: Runtime) -> tuple[DataLoader, EpochSampler]:
    sampler = EpochSampler(len(dataset), seed=config.seed, rank=runtime.rank, world_size=runtime.world_size)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=runtime.workers,
        pin_memory=runtime.device.type == "cuda",
        persistent_workers=runtime.workers > 0,
        drop_last=False,
    )
    return loader, sampler


def _batches(loader: DataLoader, sampler: EpochSampler, start: Position) -> Iterator[dict]:
    """The batches from ``start`` on, epoch after epoch, without end. An epoch's order and
    augmentation follow from (seed, epoch), so entering one mid-way replays what a straight run saw."""
    epoch, offset = start.epoch, start.offset
    while True:
        sampler.set_epoch(epoch, start=offset)
        yield from loader
        epoch, offset = epoch + 1, 0


def _set_lr(recipe: Recipe, lr: float) -> None:
    for optimizer in recipe.optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = lr


@dataclass(frozen=True)
class _Due:
    """What follows a step: the loop's "every N steps" rules, decided in one place (:func:`_due_after`)."""

    evaluate: bool
    log: bool
    sample: bool
    save: bool  # a checkpoint during the run; the last step's is written when the loop ends

    @property
    def reads_losses(self) -> bool:
        """Each of these needs the losses on the host (a sync); between them the device runs ahead."""
        return self.log or self.sample or self.save


def _due_after(step: int, total: int, config: TrainConfig) -> _Due:
    """What is due once ``step`` steps are done: the first and the last step are always logged."""
    first, last = step == 1, step == total
    eval_every = config.evaluation_interval
    evaluate = bool(eval_every) and (step % eval_every == 0 or first or last)
    return _Due(
        evaluate=evaluate,
        log=evaluate or step % config.log_every == 0 or first or last,
        sample=step % config.sample_every == 0 or last,
        save=step % config.save_every == 0 and not last,
    )


def divergence_hint(runtime: Runtime) -> str:
    """What to try after a non-finite loss. Compiled training under half precision on a CPU gave NaN
    gradients where eager training did not (train/compile_check.py catches that at the first step;
    a fault that shows later would look like this), so without --compile comes first there."""
    if runtime.compile and runtime.amp_dtype is not None and runtime.device.type == "cpu":
        return "try without --compile, or with --no-amp; then a lower --lr"
    return "try a lower --lr"


class _PendingLosses:
    """The packed losses of the steps since the last read. Reading them waits for the device (and,
    under DDP, for the other ranks), so the loop reads only when something is due."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.names: list[str] = []
        self.packed: list[torch.Tensor] = []

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        self.names = list(losses)
        self.packed.append(Runtime.pack(losses))

    def read(self, runtime: Runtime, step: int, stop_requested: bool) -> tuple[dict[str, float], bool]:
        """The losses of ``step`` (the last pending one) and whether any rank was asked to stop;
        raises with the first step whose loss is not finite."""
        rows, stop_requested = runtime.all_reduce_losses_and_stop(self.packed, stop_requested)
        first = step - len(self.packed) + 1
        self.packed.clear()
        for at, row in enumerate(rows, start=first):
            losses = dict(zip(self.names, row, strict=True))
            bad = [name for name, value in losses.items() if not math.isfinite(value)]
            if bad:
                raise WorkFailed(
                    f"Training diverged at step {at}: the {bad[0]} loss is {losses[bad[0]]}; "
                    f"the last good checkpoint in {self.run_dir} is kept ({divergence_hint(runtime)})."
                )
        return dict(zip(self.names, rows[-1], strict=True)), stop_requested


@dataclass
class _Job:
    """One ``fit`` call's fixed parts and what it does between steps: resume, log, sample, save.

    Every rank calls these alike; rank 0 alone writes files and talks to the observer.
    """

    recipe: Recipe
    config: TrainConfig
    runtime: Runtime
    timeline: Timeline
    run_dir: Path
    observer: Observer
    sample_batch: dict[str, torch.Tensor] | None
    scalers: dict[str, torch.amp.GradScaler] = field(init=False)
    budget: StepBudget | None = None  # --time-budget, while its count is to be fixed
    on_budget: Callable[[StepBudget], None] | None = None  # stores the fixed count with the run
    tensorboard: Any = None
    clock: tuple[float, int] = (0.0, 0)  # (time, step) of the last log, for the speed

    def __post_init__(self) -> None:
        scalers = {name: self.runtime.scaler(name) for name in self.recipe.optimizers}
        self.scalers = {name: scaler for name, scaler in scalers.items() if scaler is not None}

    @property
    def main(self) -> bool:
        return self.runtime.is_main

    def resume(self) -> int:
        """Load the latest checkpoint; returns the number of steps done.

        The data position is derived from the step, as the schedule always was. Where the stored one
        disagrees (the number of processes or images changed), training continues at the step's place
        and says so: part of one epoch is then seen twice or not at all, and the lr stays on schedule.
        """
        stored, _ = load_state(
            self.run_dir,
            modules=self.recipe.modules,
            optimizers=self.recipe.optimizers,
            # The checkpoint holds rank 0's image pools; the other ranks' pools start again empty.
            pools=self.recipe.pools if self.main else {},
            scalers=self.scalers,
            device=self.runtime.device,
        )
        if self.main:
            _truncate_metrics(self.run_dir, stored.step)
        where = self.timeline.position(stored.step)
        if not self.timeline.agrees_with(stored):
            self.observer.message(
                f"The checkpoint stood at sample {stored.offset} of epoch {stored.epoch + 1}, but with "
                f"{self.timeline.samples_per_epoch} samples per process and epoch now, step {stored.step} falls at "
                f"sample {where.offset} of epoch {where.epoch + 1}: training continues there, on the lr schedule."
            )
        self.observer.message(f"Resuming {self.run_dir.name} at step {stored.step} (epoch {where.epoch + 1}).")
        return stored.step

    def begin(self, start: int) -> None:
        if self.config.tensorboard and self.main:
            self.tensorboard = _open_tensorboard(self.run_dir)
        self.observer.start(self.timeline.total_steps, start)
        self.clock = (time.perf_counter(), start)

    @property
    def _budget(self) -> StepBudget | None:
        """The time budget while it still decides the run's length."""
        return self.budget if self.budget is not None and self.budget.pending else None

    def length_after(self, done: int, total: int) -> int:
        """The run's step count after ``done`` steps: ``total``, or the count the time budget fixes
        once it has timed enough steps (the timeline follows it; ``on_budget`` stores it)."""
        budget = self._budget
        if budget is None or not budget.ready(done):
            return total
        self.runtime.synchronize()  # the device runs ahead of the host: time what it did
        total = budget.fix(done, total, agree=self.runtime.from_main)
        self.timeline = replace(self.timeline, max_steps=total)
        if self.on_budget is not None:
            self.on_budget(budget)
        return total

    def losses_read(self, done: int) -> None:
        """The loop read the losses after ``done`` steps: the first read ends the budget's warm-up
        (the first step and its evaluation), so its timed stretch starts there."""
        if self._budget is not None:
            self._budget.start_timing_once(done)

    def log(self, step: int, losses: dict[str, float], *, evaluate: bool) -> None:
        """A ``metrics.jsonl`` line for ``step`` (with the recipe's measurements when ``evaluate``),
        TensorBoard scalars and the observer's report; the time budget learns what it cost."""
        with self._budget.timing_log(evaluate) if self._budget is not None else contextlib.nullcontext():
            self._log(step, losses, evaluate=evaluate)

    def _log(self, step: int, losses: dict[str, float], *, evaluate: bool) -> None:
        if not self.main:
            return
        now, (then, last_step) = time.perf_counter(), self.clock
        rate = (step - last_step) / max(now - then, 1e-9)
        self.clock = (now, step)
        with _inference(self.recipe, self.runtime):
            metrics = self.recipe.evaluate() if evaluate else {}
        epoch, lr = self.timeline.epoch(step - 1) + 1, self.config.lr * self.timeline.lr_factor(step - 1)
        record = {
            "step": step,
            "epoch": epoch,
            "lr": lr,
            "steps_per_s": round(rate, 4),
            "time": round(time.time(), 2),  # wall clock, so curves can be drawn against time spent
            **{k: round(v, 6) for k, v in losses.items()},
            **metrics,
        }
        _write_metrics(self.run_dir, record)
        if metrics:
            write_curves(self.run_dir)
        if self.tensorboard is not None:
            for key, value in {**losses, **metrics, "lr": lr}.items():
                self.tensorboard.add_scalar(key, value, step)
        total_steps, total_epochs = self.timeline.total_steps, self.timeline.total_epochs
        self.observer.update(StepReport(step, total_steps, epoch, total_epochs, lr, losses, rate, metrics))

    def sample(self, step: int) -> None:
        if self.main and self.sample_batch is not None:
            with _inference(self.recipe, self.runtime):
                rows = self.recipe.sample_rows(self.sample_batch)
            _save_samples(rows, self.run_dir / "samples" / f"step_{step:07d}.png")

    def checkpoint(self, step: int) -> None:
        """The training state after ``step`` steps, then the model files and the curves.

        The state first: when the disk fills up during the first checkpoint, the run then holds no
        model file either, and the same command starts it again (a model file alone would make it a
        run that exists but cannot be resumed).
        """
        if self.main:
            save_state(
                self.run_dir,
                self.timeline.position(step),
                modules=self.recipe.modules,
                optimizers=self.recipe.optimizers,
                pools=self.recipe.pools,
                scalers=self.scalers,
            )
            self.recipe.export(self.run_dir, step)
            write_curves(self.run_dir)
        if self.runtime.distributed:
            torch.distributed.barrier()

    def end(self) -> None:
        self.observer.finish()
        if self.tensorboard is not None:
            self.tensorboard.close()


def fit(
    recipe: Recipe,
    config: TrainConfig,
    runtime: Runtime,
    dataset: UnpairedDataset,
    run_dir: Path,
    *,
    resume: bool = False,
    observer: Observer | None = None,
    sample_batch: dict[str, torch.Tensor] | None = None,
    budget: StepBudget | None = None,
    on_budget: Callable[[StepBudget], None] | None = None,
) -> Position:
    """Train ``recipe`` until ``config.max_steps`` or the end of the schedule; returns the final position.

    The step is the one clock: the epoch, the place in its data order and the lr are derived from it
    (:class:`Timeline`). Under DDP every rank runs this loop in step; rank 0 alone writes files and
    talks to ``observer``. With a ``budget`` (``--time-budget``) the run's length is fixed after its
    first timed steps, which run at the flat start of the lr schedule whatever the final length, and
    ``on_budget`` receives the budget with its count, to store with the run.
    """
    observer = observer if observer is not None and runtime.is_main else Observer()
    timeline = Timeline.for_run(config, len(dataset), runtime.world_size)
    job = _Job(recipe, config, runtime, timeline, run_dir, observer, sample_batch, budget, on_budget)
    start = job.resume() if resume else 0
    total = timeline.total_steps
    if start >= total:
        observer.message(f"Run {run_dir.name} is already at step {start} of {total}; nothing to do.")
        return timeline.position(start)

    batches = _batches(*build_loader(dataset, config, runtime), timeline.position(start))
    pending = _PendingLosses(run_dir)
    job.begin(start)
    step = start  # the 0-based index of the next step; ``done`` counts steps, as files do
    minutes = config.save_every_minutes
    saved_at = monotonic()
    try:
        with _full_disk_keeps_the_last_checkpoint(run_dir), StopFlag() as stop, contextlib.ExitStack() as uncompiled:
            while step < total:
                batch = _collate_batch(next(batches), runtime)
                _set_lr(recipe, config.lr * job.timeline.lr_factor(step))
                runtime.begin_step()
                if runtime.compile and step == start:  # a miscompiled model shows at its first step
                    losses, eager = checked_first_step(recipe, job.scalers, batch, observer.message)
                    if eager:
                        uncompiled.enter_context(torch.compiler.set_stance("force_eager"))
                else:
                    losses = recipe.train_step(batch)
                pending.add(losses)
                step = done = step + 1
                total = job.length_after(done, total)
                due = _due_after(done, total, config)
                timed = minutes is not None and monotonic() - saved_at >= minutes * 60 and done < total
                # Every rank decides alike (a collective follows), so under DDP a rank's own signal and
                # clock wait for the next read, where the ranks agree.
                if not (due.reads_losses or ((stop.requested or timed) and not runtime.distributed)):
                    continue
                losses, stopping = pending.read(runtime, done, stop.requested)
                if minutes is not None and runtime.distributed:
                    timed = broadcast_from_main(timed)  # rank 0's clock decides for all
                if due.log:
                    job.log(done, losses, evaluate=due.evaluate)
                job.losses_read(done)
                if due.sample:
                    job.sample(done)
                saving = stopping or due.save or timed
                if saving:
                    with stop.saving():
                        job.checkpoint(done)
                    saved_at = monotonic()
                # A signal during that save needs no second one (one process: no ranks to agree with).
                if stopping or (saving and stop.requested and not runtime.distributed):
                    stop.stopped = True
                    raise TrainingInterrupted(done, run_dir, stop.signum)
            with stop.saving():
                job.checkpoint(total)
    finally:
        job.end()
    return job.timeline.position(total)


@contextlib.contextmanager
def _full_disk_keeps_the_last_checkpoint(run_dir: Path) -> Iterator[None]:
    """A full disk during training says what is kept and how to go on."""
    try:
        yield
    except NoSpace as full:
        if latest_checkpoint(run_dir) is None:
            raise full.then("no checkpoint was complete yet: free some space and run the same command again") from None
        raise full.then(
            f"the last complete checkpoint in {run_dir} is kept: free some space and continue with --resume"
        ) from None
