"""``distill --time-budget``: a wall-clock budget turned into a step count once, early in the run.

A user with a CPU knows how long they can wait, not how many steps that buys. The run trains a few
steps at the full learning rate (the schedule is flat for its first half, so those steps are the same
whatever the final count), measures its step rate and what one evaluation costs, then fixes the count
that ends inside the budget, with the lr decay, the weight average and the evaluations laid onto it.
The count is stored in the run's config.json (``max_steps``, ``budget_steps``), so ``--resume``
finishes the run it continues (bit-exactly on the CPU with a fixed thread count, as any resume), however
fast the machine is then.

All of it is one object, :class:`StepBudget`: ``DistillConfig.step_budget`` makes it with what it needs
of the run, the loop (train/loop.py) asks it whether and at what count to fix the run's length and
tells it what it timed, and train/command.py stores the count it fixed (``stored_settings``).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cgdistill.errors import CgdistillError

_UNITS = {"s": 1, "m": 60, "h": 3600}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")

# Steps timed before the count is fixed, and the least share of the budget they span: a handful of
# steps at a few milliseconds each would give a noisy rate.
WARMUP_STEPS = 5
WARMUP_SHARE = 0.03
WARMUP_CAP_S = 30.0


_clock = time.perf_counter  # a test stands in for the machine's speed here


def now() -> float:
    """The budget's clock: every duration the budget weighs is read from it."""
    return _clock()


# Once the count is fixed, the steps go on being timed, and every REFINE_SHARE of the budget the count
# is fixed again from the steps since the last count, for as long as the lr schedule is flat (its first
# half): nothing laid onto the count has happened yet there. A run's first steps are slower than the
# rest (the allocator's and oneDNN's caches warming up, a compile): a count from them alone left a
# fifth of a 15-minute budget unused in one run and overran another by 55 s; and a machine's speed
# drifts, which the later counts follow (one from 15% of the budget alone overran by 2 minutes).
REFINE_SHARE = 0.15

# Kept free for what follows the last step (the final checkpoint and model file, the sample sheet).
RESERVE_SHARE = 0.02


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90s``, ``15m``, ``1h``, ``1h30m`` or a plain number of seconds."""
    cleaned = text.strip().lower().replace(" ", "")
    try:
        seconds = float(cleaned)
    except ValueError:
        parts = _PART.findall(cleaned)
        if not parts or "".join(n + u for n, u in parts) != cleaned:
            raise CgdistillError(
                f"--time-budget {text!r} is not a duration; write it as e.g. 90s, 15m, 1h or 1h30m."
            ) from None
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise CgdistillError(f"--time-budget {text!r} is not a positive duration; write it as e.g. 90s, 15m or 1h.")
    return seconds


def steps_within(remaining_s: float, step_s: float, evaluation_s: float, eval_every: int) -> int:
    """How many more steps fit in ``remaining_s``, each costing ``step_s``, with an evaluation every
    ``eval_every`` steps and one after the last (costing ``evaluation_s`` each)."""
    if step_s <= 0:
        raise ValueError("step_s must be positive")
    per_step = step_s + (evaluation_s / eval_every if eval_every else 0.0)
    final_evaluation = evaluation_s if eval_every else 0.0
    return max(0, math.floor((remaining_s - final_evaluation) / per_step))


def flat_share_of(epochs: int, epochs_decay: int) -> float:
    """The part of a run the lr schedule keeps flat: ``epochs / (epochs + epochs_decay)`` (all of it
    when either is 0, as the schedule then never decays or has no flat start to keep)."""
    return epochs / (epochs + epochs_decay) if epochs and epochs_decay else 1.0


@dataclass
class StepBudget:
    """Times the first steps of a run and fixes its step count so the run ends within ``seconds``,
    counted from ``started`` (the command's start: loading the teacher and the data count too).

    The loop asks it and tells it what it measured; nothing else changes it. What it needs of the
    run is given when it is made: ``eval_every`` (the recipe's measurements, whose cost the count
    leaves room for) and ``flat_share`` (see :func:`flat_share_of`). Once :meth:`fix` has run, ``total``
    is the run's step count and the budget has nothing more to decide.
    """

    seconds: float
    started: float = field(default_factory=now)
    eval_every: int = 0
    flat_share: float = 0.5
    text: str = ""  # the budget as the user wrote it (``--time-budget 15m``), for the sentence that reports the count
    mark: tuple[int, float] | None = None  # (steps done, time) where the timed stretch began
    evaluation_s: float = 0.0
    step_s: float = 0.0
    total: int | None = None  # the step count, once fixed
    first_total: int | None = None  # the count fixed from the first steps
    final: bool = False  # the count is the run's length: the next re-timing would fall past the flat lr part
    cap: int = 0  # at most this many steps (``--max-steps`` or the schedule's end), from the first fix

    @classmethod
    def parse(cls, text: str, *, started: float, eval_every: int, epochs: int, epochs_decay: int) -> StepBudget:
        """The budget ``--time-budget text`` gives a run with these settings."""
        return cls(
            parse_duration(text),
            started=started,
            eval_every=eval_every,
            flat_share=flat_share_of(epochs, epochs_decay),
            text=text,
        )

    @property
    def pending(self) -> bool:
        """Whether the count is still to be fixed, or fixed again (the loop asks nothing more once it is)."""
        return not self.final

    @contextlib.contextmanager
    def timing_log(self, evaluates: bool) -> Iterator[None]:
        """Around a logged step's work: when it ``evaluates``, its duration is what one evaluation costs
        (the most recent one counts)."""
        started = now()
        yield
        if evaluates:
            self.note_evaluation(now() - started)

    def note_evaluation(self, seconds: float) -> None:
        """The cost of one evaluation, as the loop measured it (the most recent one counts)."""
        self.evaluation_s = seconds

    def start_timing(self, done: int) -> None:
        """Begin the timed stretch after ``done`` steps (after the first step and its evaluation)."""
        self.mark = (done, now())

    def start_timing_once(self, done: int) -> None:
        """:meth:`start_timing` at the loop's first read of the losses, which ends the warm-up."""
        if self.mark is None:
            self.start_timing(done)

    def ready(self, done: int) -> bool:
        """Whether enough steps have been timed to fix the count (or, once fixed, to fix it again)."""
        if self.mark is None:
            return False
        steps, since = done - self.mark[0], now() - self.mark[1]
        long_enough = steps >= WARMUP_STEPS and since >= min(WARMUP_SHARE * self.seconds, WARMUP_CAP_S)
        if self.total is not None:
            # Fixed for now: again once REFINE_SHARE of the budget has passed since, and sooner where this
            # count would end the lr schedule's flat part before that (the lr must not decay on its account).
            late = since >= REFINE_SHARE * self.seconds
            return (late and long_enough) or (steps >= 1 and done >= math.floor(self.flat_share * self.total))
        return long_enough

    def fix_total(self, done: int, flat_share: float = 0.5) -> int:
        """The run's total step count: ``done`` plus what fits in the time left.

        ``flat_share`` is the part of a run the lr schedule keeps flat (``epochs / (epochs + epochs_decay)``):
        the timed steps ran at the full lr, so the count is at least what keeps them inside that part,
        which only a budget too small to time a few steps in can exceed.
        """
        assert self.mark is not None, "start_timing() comes first"
        at = now()
        self.step_s = (at - self.mark[1]) / max(1, done - self.mark[0])
        remaining = self.seconds * (1 - RESERVE_SHARE) - (at - self.started)
        fitting = done + steps_within(remaining, self.step_s, self.evaluation_s, self.eval_every)
        least = math.ceil(done / flat_share) if flat_share > 0 else done
        return max(fitting, least)

    def fix(self, done: int, cap: int, agree: Callable[[int], int] = lambda count: count) -> int:
        """Fix the run's step count after ``done`` steps: what the timed steps say fits, at most ``cap``
        (``--max-steps`` or the schedule's end). ``agree`` turns this process's count into the one every
        process uses (under DDP, rank 0's).

        Each call times the steps since the last one and fixes the count for now, until the next call
        (``REFINE_SHARE`` of the budget later) would fall past the flat part of the lr schedule: that
        count is the run's length.
        """
        if self.total is None:
            self.cap = cap  # later calls get the current count as the run's length: the cap stays the first
        self.total = agree(min(self.fix_total(done, self.flat_share), self.cap))
        if self.first_total is None:
            self.first_total = self.total
        flat_end_s = self.started + self.flat_share * self.seconds
        self.final = now() + REFINE_SHARE * self.seconds >= flat_end_s
        if not self.final:
            self.start_timing(done)  # the next count is timed from here
        return self.total

    def stored_settings(self) -> dict[str, int]:
        """What config.json records of the fixed count, so that ``--resume`` trains to it."""
        assert self.total is not None, "fix() comes first"
        return {"budget_steps": self.total, "max_steps": self.total}

    def report(self) -> str:
        """The sentence that tells the user the count and where it came from."""
        if not self.final:
            return (
                f"Time budget {self.text}: {self.step_s:.2f} s per step over the first steps and "
                f"{self.evaluation_s:.1f} s per evaluation, so this run trains {self.total} steps for now; "
                "it is timed again past its first steps."
            )
        earlier = f"; the first steps alone said {self.first_total}" if self.first_total != self.total else ""
        return (
            f"Time budget {self.text}: {self.step_s:.2f} s per step past the first steps and "
            f"{self.evaluation_s:.1f} s per evaluation, so this run trains {self.total} steps "
            f"(stored in config.json; --resume keeps it{earlier})."
        )
