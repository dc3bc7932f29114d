"""Marginal (tax-bracket) notional tiers.

charge(N) = sum_i rate_i x max(0, min(N, up_to_i) - up_to_{i-1}), with up_to_0 = 0; continuous
in N, so no cliff at a tier boundary.
"""

from __future__ import annotations

import numpy as np

from margin_engine.core.types import FloatArray
from margin_engine.margin.config import Tier


def tiered_charge(notional: FloatArray, tiers: tuple[Tier, ...]) -> tuple[FloatArray, FloatArray]:
    """(initial, maintenance) charge on |notional| under marginal tiers."""
    amount = np.abs(np.asarray(notional, dtype=np.float64))
    initial = np.zeros_like(amount)
    maintenance = np.zeros_like(amount)
    lower = 0.0
    for tier in tiers:
        portion = np.clip(amount, lower, tier.up_to) - lower
        initial += tier.initial_rate * portion
        maintenance += tier.maintenance_rate * portion
        lower = tier.up_to
    return initial, maintenance
