"""Flicker: how much a model makes consecutive video frames differ beyond what the input changes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Flicker:
    """Temporal instability a model adds: how much consecutive output frames differ, beyond the input's change.

    Both are the mean absolute difference between consecutive frames in 8-bit levels (0-255), over
    all pixels and channels, at the size the model sees. On a static-camera clip the input changes
    little, so a model that treats each frame on its own and swings with small input changes shows up
    as a positive ``value``.
    """

    output_change: float
    input_change: float
    pairs: int

    @property
    def value(self) -> float:
        return self.output_change - self.input_change


class FlickerMeter:
    """Accumulates :class:`Flicker` one frame pair at a time (constant memory)."""

    def __init__(self) -> None:
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self._input_sum = 0.0
        self._output_sum = 0.0
        self.pairs = 0

    def add(self, source: np.ndarray, translated: np.ndarray) -> None:
        if self._previous is not None:
            self._input_sum += mean_abs_change(self._previous[0], source)
            self._output_sum += mean_abs_change(self._previous[1], translated)
            self.pairs += 1
        self._previous = (source, translated)

    def result(self) -> Flicker | None:
        if self.pairs == 0:
            return None
        return Flicker(self._output_sum / self.pairs, self._input_sum / self.pairs, self.pairs)


def mean_abs_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, in levels."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
