"""The live training display: a rich progress bar with step, epoch, speed, ETA, losses and lr."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cgdistill.cli.app import err_console
from cgdistill.train.loop import Observer, StepReport


class RichObserver(Observer):
    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = None

    def start(self, total_steps: int, initial_step: int) -> None:
        self.progress = Progress(
            TextColumn("[bold]step"),
            MofNCompleteColumn(),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err_console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=initial_step, speed="", info="")

    def update(self, report: StepReport) -> None:
        if self.progress is None:
            return
        losses = " ".join(f"{k} {v:.3f}" for k, v in report.losses.items())
        extra = " ".join(f"[green]{k} {v:.2f}[/]" for k, v in report.metrics.items())
        info = f"ep {report.epoch}/{report.total_epochs} lr {report.lr:.2e} {losses} {extra}".strip()
        self.progress.update(self.task, completed=report.step, speed=f"{report.steps_per_s:.2f} it/s", info=info)

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, soft_wrap=True)
        else:
            err_console.print(text, soft_wrap=True)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
