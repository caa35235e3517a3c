"""Intervals for shares measured on a sample of images (the audit's subgroups, its diagnosis)."""

from __future__ import annotations

import math

Z95 = 1.96


def wilson(share: float, n: int) -> list[float]:
    """The 95% Wilson interval of a share observed on ``n`` images."""
    if n == 0:
        return [0.0, 1.0]
    centre = (share + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 / (1 + Z95 ** 2 / n) * math.sqrt(share * (1 - share) / n + Z95 ** 2 / (4 * n ** 2))
    return [max(0.0, centre - half), min(1.0, centre + half)]
