"""The learning-rate schedule of the recipe: constant, then linear decay to zero.

Without ``--max-steps`` the lr follows the published epoch schedule. A run cut short by
``--max-steps`` gets the same shape compressed onto its own length (constant for the fraction
``epochs / (epochs + epochs_decay)`` of its steps, then linear decay), so that a short run also ends
at a low learning rate instead of stopping mid-plateau.
"""

from __future__ import annotations


def lr_factor(epoch: int, epochs: int, epochs_decay: int) -> float:
    """Multiplier of the base lr in ``epoch`` (0-based): 1 for ``epochs`` epochs, then linearly
    down over ``epochs_decay`` epochs, reaching 1/(epochs_decay+1) in the last one as the reference does."""
    return 1.0 - max(0, epoch + 1 - epochs) / float(epochs_decay + 1)


def decay_start_step(total_steps: int, epochs: int, epochs_decay: int) -> int:
    """First step of the decay when the schedule is compressed onto ``total_steps`` steps."""
    total_epochs = epochs + epochs_decay
    if total_epochs == 0 or epochs_decay == 0:
        return total_steps
    return round(total_steps * epochs / total_epochs)


def lr_factor_at(
    step: int, *, steps_per_epoch: int, epochs: int, epochs_decay: int, max_steps: int | None = None
) -> float:
    """Multiplier of the base lr for the step with 0-based index ``step``.

    When ``max_steps`` cuts the epoch schedule short, the schedule is compressed onto ``max_steps``;
    the last step then runs at 1/(decay steps + 1) of the base lr, as the last epoch does in the reference.
    """
    full = steps_per_epoch * (epochs + epochs_decay)
    if max_steps is None or max_steps >= full:
        return lr_factor(step // steps_per_epoch, epochs, epochs_decay)
    start = decay_start_step(max_steps, epochs, epochs_decay)
    if step < start:
        return 1.0
    return max(0.0, (max_steps - step) / float(max_steps - start + 1))
