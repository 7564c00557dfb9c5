"""Live displays: training's progress line (step, epoch, it/s, ETA, lr) and line of losses, and the
demo's stages. The commands import this module when they run: it imports the trainer, and so torch."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.status import Status
from rich.text import Text

from cgdistill.cli.app import err_console, note, styled, terminal_may_be_gone
from cgdistill.demo import DemoObserver
from cgdistill.train.loop import Observer, StepReport


class _TrainingProgress(Progress):
    """A progress bar with the latest losses and measurements drawn under it."""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            losses = task.fields.get("losses")
            if losses:
                yield losses


class RichObserver(Observer):
    def __init__(self) -> None:
        self.progress: _TrainingProgress | None = None
        self.task = None

    def start(self, total_steps: int, initial_step: int) -> None:
        self.progress = _TrainingProgress(
            TextColumn("[bold]step"),
            MofNCompleteColumn(),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[where]}"),
            console=err_console,
        )
        with terminal_may_be_gone():
            self.progress.start()
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=initial_step, speed="", where="", losses=None
        )

    def update(self, report: StepReport) -> None:
        if self.progress is None:
            return
        losses = Text("  ")
        for name, value in report.losses.items():
            losses.append(f"{name} ", style="dim")
            losses.append(f"{value:.3f}  ")
        for name, value in report.metrics.items():
            losses.append(f"{name} ", style="dim")
            losses.append(f"{value:.2f}  ", style="bold green")
        with terminal_may_be_gone():
            self._update(report, losses)

    def _update(self, report: StepReport, losses: Text) -> None:
        self.progress.update(
            self.task,
            completed=report.step,
            total=report.total_steps,  # --time-budget fixes the run's length after its first steps
            speed=f"{report.steps_per_s:.2f} it/s",
            where=f"epoch {report.epoch}/{report.total_epochs}  lr {report.lr:.2e}",
            losses=losses,
        )

    def message(self, text: str) -> None:
        console = self.progress.console if self.progress is not None else err_console
        with terminal_may_be_gone():
            console.print(text, soft_wrap=True, markup=False)  # library text is plain, never markup

    def finish(self) -> None:
        if self.progress is not None:
            with terminal_may_be_gone():
                self.progress.stop()
            self.progress = None


class LiveDemo(DemoObserver):
    """Stage headers, a spinner while a stage has no progress bar of its own, and the training bars."""

    def __init__(self) -> None:
        self.status: Status | None = None

    def stage(self, index: int, total: int, title: str) -> None:
        note(styled("[bold cyan]\\[{}/{}][/] [bold]{}[/]", index, total, title))
        self.status = err_console.status(styled("{}...", title))
        self.status.start()

    def training(self) -> Observer:
        self._stop_spinner()  # one live display at a time: the progress bar takes over
        return RichObserver()

    def message(self, text: str) -> None:
        note(f"  {text}")

    def stage_done(self, index: int, seconds: float, detail: str) -> None:
        self._stop_spinner()
        note(styled("  [green]done[/] in {} s: {}", f"{seconds:.0f}", detail))

    def close(self) -> None:
        self._stop_spinner()

    def _stop_spinner(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
