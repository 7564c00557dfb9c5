"""The learning-rate schedule of the recipe: constant, then linear decay to zero."""

from __future__ import annotations


def lr_factor(epoch: int, epochs: int, epochs_decay: int) -> float:
    """Multiplier of the base lr in ``epoch`` (0-based): 1 for ``epochs`` epochs, then linearly
    down over ``epochs_decay`` epochs, reaching 1/(epochs_decay+1) in the last one as the reference does."""
    return 1.0 - max(0, epoch + 1 - epochs) / float(epochs_decay + 1)
