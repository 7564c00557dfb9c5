"""What both training commands do once their run is planned: process group, lock, session, fit.

``train_teacher`` and ``distill`` each plan their run (train/plan.py) and build their recipe; the
steps between, and their order, are this module's one function, :func:`run_planned`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from cgdistill.train.budget import StepBudget
from cgdistill.train.loop import Observer, Recipe, fit
from cgdistill.train.plan import Plan
from cgdistill.train.runtime import join_process_group, teardown_runtime
from cgdistill.train.session import (
    Session,
    open_session,
    refuse_changed_run,
    refuse_existing_run,
    write_config,
    writing_run,
)


@dataclass(frozen=True)
class Prepared:
    """What a command hands the loop once its session is open: its recipe, and the batch its sample
    sheets show."""

    recipe: Recipe
    sample_batch: dict[str, torch.Tensor] | None = None


def run_planned(
    plan: Plan,
    kind: str,
    prepare: Callable[[Session], Prepared],
    *,
    observer: Observer,
    domains: tuple[str, ...] = ("A", "B"),
    primary: str = "A",
    notes: Sequence[str] = (),
    budget: StepBudget | None = None,
) -> Path:
    """Train the run ``plan`` describes (``kind``: teacher or student); returns the run folder.

    In this order: join torchrun's process group; take the run's lock, so that a second writer is
    refused before anything is written; refuse a new run in a folder that holds one, and a resume
    whose config.json another process rewrote since the plan read it; say ``notes``; open the
    session (runtime, config.json, dataset of ``domains``); ``prepare`` the recipe; fit. A ``budget``
    fixes the run's length during the first steps, and the count it fixes is stored with the run.
    """
    rank, _, _ = join_process_group(plan.config.device)
    with writing_run(plan.run_dir, rank, observer):
        if not plan.resume:
            refuse_existing_run(plan.run_dir, rank)
        refuse_changed_run(plan, rank)
        for note in notes:
            observer.message(note)
        session = open_session(plan, kind, observer=observer, domains=domains, primary=primary)
        try:
            prepared = prepare(session)
            fit(
                prepared.recipe,
                plan.config,
                session.runtime,
                session.dataset,
                session.run_dir,
                resume=plan.resume,
                observer=observer,
                sample_batch=prepared.sample_batch,
                budget=budget,
                on_budget=lambda fixed: store_budget(session, kind, observer, fixed),
            )
        finally:
            teardown_runtime(session.runtime)
    return session.run_dir


def store_budget(session: Session, kind: str, observer: Observer, budget: StepBudget) -> None:
    """Store the step count ``budget`` fixed in the run's config.json, so that ``--resume`` trains to it
    however fast the machine is then, and tell the user (rank 0 alone writes and talks)."""
    if session.runtime.is_main:
        settings = replace(session.config, **budget.stored_settings())
        write_config(session.run_dir, kind, settings, session.data_dir)
        observer.message(budget.report())
