"""Static-arbitrage checks on SVI slices (forward log-moneyness k, total variance w).

Butterfly: g(k) >= 0 on a grid (density non-negative). Calendar: w(k, T2) >= w(k, T1) for
T2 > T1 at every k of the grid.
"""

from __future__ import annotations

import numpy as np

from margin_engine.core.types import FloatArray
from margin_engine.vol.svi import SviSlice

TOLERANCE = 1e-10


WIDEN = 0.25  # the checked range extends a quarter of the quoted span beyond each side


def moneyness_grid(k: FloatArray, *more: FloatArray, points: int = 121) -> FloatArray:
    """Grid over the quoted forward log-moneyness of one slice (or the union of several),
    widened by WIDEN x span on each side: where the smile is used, not far extrapolation."""
    low = min(float(np.min(x)) for x in (k, *more))
    high = max(float(np.max(x)) for x in (k, *more))
    span = max(high - low, 1e-3)
    return np.linspace(low - WIDEN * span, high + WIDEN * span, points)


def butterfly_violations(svi: SviSlice, grid: FloatArray) -> int:
    """Grid points where the risk-neutral density would be negative."""
    return int(np.sum(svi.butterfly_density(grid) < -TOLERANCE))


def calendar_violations(earlier: SviSlice, later: SviSlice, grid: FloatArray) -> int:
    """Grid points where the later expiry has less total variance than the earlier one."""
    return int(np.sum(later.total_variance(grid) < earlier.total_variance(grid) - TOLERANCE))
