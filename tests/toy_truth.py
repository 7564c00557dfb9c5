"""``toy_b2a``: the toy dataset's true night -> day map, for the tests of its ground truth. The package
needs only the day -> night map, ``cgdistill.data.toy.toy_a2b``, which is its own inverse."""

from __future__ import annotations

import numpy as np

from cgdistill.data.toy import toy_a2b


def toy_b2a(pixels: np.ndarray) -> np.ndarray:
    """The true night -> day map, the exact inverse of ``toy_a2b`` (the map is its own inverse)."""
    return toy_a2b(pixels)
