"""The one training loop that the teacher recipe and the distiller share.

A recipe supplies its models, optimizers, pools and ``train_step``; the loop owns the data order,
the learning-rate schedule, logging, samples, checkpoints, exact resume, Ctrl-C and the NaN stop.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from cgdistill.data.unpaired import EpochSampler, UnpairedDataset
from cgdistill.errors import CgdistillError, WorkFailed
from cgdistill.nets import evaluating
from cgdistill.plots import read_metrics, write_curves
from cgdistill.runs import METRICS_FILE
from cgdistill.train.config import TrainConfig
from cgdistill.train.pool import ImagePool
from cgdistill.train.runtime import Runtime
from cgdistill.train.schedule import lr_factor_at
from cgdistill.train.state import Position, load_state, save_state


class TrainingInterrupted(CgdistillError):
    """Ctrl-C: the state was saved at ``step``; the CLI says how to resume."""

    def __init__(self, step: int, run_dir: Path) -> None:
        super().__init__(f"Interrupted at step {step}; the checkpoint in {run_dir} is complete.", exit_code=130)
        self.step, self.run_dir = step, run_dir


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

    def state_extra(self) -> dict:
        return {}


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
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, forget log lines written after the checkpoint (they will be written again); lines
    logged before issue 14 take the reference's loss names, so that the file speaks one language."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = [record for record in read_metrics(path) if record.get("step", 0) <= step]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))


def _save_samples(rows: list[list[torch.Tensor]], path: Path) -> None:
    from torchvision.utils import save_image

    from cgdistill.fsutil import atomic_path

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


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current step; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


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
    on_checkpoint: Callable[[int], None] | None = None,
) -> Position:
    """Train ``recipe`` until ``config.max_steps`` or the end of the schedule; returns the final position.

    Under DDP every rank runs this loop in step; rank 0 alone writes files and talks to ``observer``.
    """
    observer = observer if observer is not None and runtime.is_main else Observer()
    loader, sampler = build_loader(dataset, config, runtime)
    per_rank = -(-len(dataset) // runtime.world_size)
    steps_per_epoch = max(1, math.ceil(per_rank / config.batch_size))
    total_steps = steps_per_epoch * config.total_epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    position = Position()
    scalers = {name: runtime.scaler(name) for name in recipe.optimizers}
    scalers = {k: v for k, v in scalers.items() if v is not None}
    if resume:
        position, _ = load_state(
            run_dir,
            modules=recipe.modules,
            optimizers=recipe.optimizers,
            # The checkpoint holds rank 0's image pools; the other ranks' pools start again empty.
            pools=recipe.pools if runtime.is_main else {},
            scalers=scalers,
            device=runtime.device,
        )
        if runtime.is_main:
            _truncate_metrics(run_dir, position.step)
            observer.message(f"Resuming {run_dir.name} at step {position.step} (epoch {position.epoch + 1}).")

    def checkpoint() -> None:
        if runtime.is_main:
            recipe.export(run_dir, position.step)
            save_state(
                run_dir,
                position,
                modules=recipe.modules,
                optimizers=recipe.optimizers,
                pools=recipe.pools,
                scalers=scalers,
                extra=recipe.state_extra(),
            )
            write_curves(run_dir)
            if on_checkpoint:
                on_checkpoint(position.step)
        if runtime.distributed:
            torch.distributed.barrier()

    if position.step >= total_steps:
        observer.message(f"Run {run_dir.name} is already at step {position.step} of {total_steps}; nothing to do.")
        return position

    tensorboard = _open_tensorboard(run_dir) if config.tensorboard and runtime.is_main else None
    observer.start(total_steps, position.step)
    last_time, last_step = time.perf_counter(), position.step
    rate = 0.0
    pending: list[torch.Tensor] = []  # the packed losses of the steps since the last sync

    def settle(stop_requested: bool) -> tuple[dict[str, float], bool]:
        """Wait for the device (and the other ranks), check the pending steps' losses; the last step's."""
        rows, stop_requested = runtime.all_reduce_losses_and_stop(pending, stop_requested)
        first = position.step - len(pending) + 1
        pending.clear()
        for offset, row in enumerate(rows):
            bad = [name for name, value in zip(names, row, strict=True) if not math.isfinite(value)]
            if bad:
                losses = dict(zip(names, row, strict=True))
                raise WorkFailed(
                    f"Training diverged at step {first + offset}: the {bad[0]} loss is {losses[bad[0]]}; "
                    f"the last good checkpoint in {run_dir} is kept (try a lower --lr)."
                )
        return dict(zip(names, rows[-1], strict=True)), stop_requested

    names: list[str] = []
    try:
        with _StopFlag() as stop:
            while position.step < total_steps and position.epoch < config.total_epochs:
                sampler.set_epoch(position.epoch, start=position.offset)
                for batch in loader:
                    factor = lr_factor_at(
                        position.step,
                        steps_per_epoch=steps_per_epoch,
                        epochs=config.epochs,
                        epochs_decay=config.epochs_decay,
                        max_steps=config.max_steps,
                    )
                    for optimizer in recipe.optimizers.values():
                        for group in optimizer.param_groups:
                            group["lr"] = config.lr * factor
                    runtime.begin_step()
                    losses = recipe.train_step(_collate_batch(batch, runtime))
                    names = list(losses)
                    pending.append(runtime.pack(losses))
                    position.step += 1
                    position.offset += next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
                    step = position.step
                    eval_every = getattr(config, "eval_every", 0)
                    evaluate = bool(eval_every) and (step % eval_every == 0 or step == total_steps or step == 1)
                    log = evaluate or step % config.log_every == 0 or step == total_steps or step == 1
                    sample = step % config.sample_every == 0 or step == total_steps
                    save = step % config.save_every == 0 or step == total_steps
                    # The only host syncs: the device runs ahead of Python between them. Every rank
                    # decides alike (a collective follows), so a rank's own Ctrl-C waits for the next.
                    if not (log or sample or save or (stop.requested and not runtime.distributed)):
                        continue
                    values, stop_requested = settle(stop.requested)
                    if runtime.is_main and log:
                        now = time.perf_counter()
                        rate = (step - last_step) / max(now - last_time, 1e-9)
                        last_time, last_step = now, step
                        with _inference(recipe, runtime):
                            metrics = recipe.evaluate() if evaluate else {}
                        record = {
                            "step": step,
                            "epoch": position.epoch + 1,
                            "lr": config.lr * factor,
                            "steps_per_s": round(rate, 4),
                            **{k: round(v, 6) for k, v in values.items()},
                            **metrics,
                        }
                        _write_metrics(run_dir, record)
                        if metrics:
                            write_curves(run_dir)
                        if tensorboard is not None:
                            for key, value in {**values, **metrics, "lr": config.lr * factor}.items():
                                tensorboard.add_scalar(key, value, step)
                        observer.update(
                            StepReport(
                                step,
                                total_steps,
                                position.epoch + 1,
                                config.total_epochs,
                                config.lr * factor,
                                values,
                                rate,
                                metrics,
                            )
                        )
                    if runtime.is_main and sample_batch is not None and sample:
                        with _inference(recipe, runtime):
                            rows = recipe.sample_rows(sample_batch)
                        _save_samples(rows, run_dir / "samples" / f"step_{step:07d}.png")
                    if stop_requested:
                        checkpoint()
                        raise TrainingInterrupted(step, run_dir)
                    if step >= total_steps:
                        break
                    if step % config.save_every == 0:
                        checkpoint()
                else:
                    position.epoch += 1
                    position.offset = 0
                    continue
                break
            if pending:
                settle(False)
            checkpoint()
    finally:
        observer.finish()
        if tensorboard is not None:
            tensorboard.close()
    return position
