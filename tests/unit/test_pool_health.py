"""The monitor's pool health figures against numpy's formulas for them."""

from __future__ import annotations

import numpy as np
import pytest

from margin_engine.core.pairwise import pairwise_sum
from margin_engine.engine.pool_health import collateral_by_asset_nb, pool_health
from margin_engine.engine.risk_state import RiskStatus


@pytest.mark.parametrize(("seed", "n"), [(0, 5_000), (1, 7), (2, 129), (3, 100_003)])
def test_pool_health_is_numpys_sums_and_counts(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    maintenance = rng.uniform(0.0, 1e5, n) * (rng.random(n) < 0.8)
    equity = maintenance * rng.uniform(0.5, 1.5, n)  # many near MM, some below
    equity[:40] = maintenance[:40] * 1.1  # the edge: 1.1 x MM is not near
    equity[40:80] = maintenance[40:80]  # MM itself is near (not below)
    holding = rng.random(n) < 0.9
    status = rng.integers(0, 3, n).astype(np.int8)
    got = pool_health(equity, maintenance, holding, status, int(RiskStatus.CALL),
                      int(RiskStatus.LIQUIDATION))
    # numpy's sums bit for bit (the stored figures of older runs must replay equal)
    assert got.equity == float(equity.sum())
    assert got.maintenance == float(maintenance.sum())
    assert got.shortfall == float(np.maximum(maintenance - equity, 0.0).sum())
    near = holding & (equity < 1.1 * maintenance) & (equity >= maintenance)
    assert got.near_liquidation == int(near.sum())
    assert got.near_liquidation > 0 or n < 10
    assert got.margin_calls == int(np.sum(status == RiskStatus.CALL))
    assert got.liquidatable == int(np.sum(status == RiskStatus.LIQUIDATION))


def test_a_nan_shortfall_stays_nan_and_collateral_sums_per_asset() -> None:
    health = pool_health(np.array([1.0, np.nan]), np.array([2.0, 1.0]),
                         np.array([True, True]), np.zeros(2, dtype=np.int8), 1, 2)
    assert np.isnan(health.shortfall)
    assert health.near_liquidation == 0
    amounts = np.array([[1.0, 100.0], [2.0, 0.0], [0.5, 50.0]])
    prices = np.array([60_000.0, 1.0])
    assert np.array_equal(collateral_by_asset_nb(amounts, prices), [210_000.0, 150.0])
    rng = np.random.default_rng(5)
    amounts = rng.uniform(0.0, 5.0, (10_001, 3)) * (rng.random((10_001, 3)) < 0.5)
    prices = np.array([65_000.3, 1.0001, 2_500.7])
    assert np.array_equal(collateral_by_asset_nb(amounts, prices), (amounts * prices).sum(axis=0))


def test_pairwise_sum_is_numpys_sum_for_every_length() -> None:
    """The halving below and above one block of 128, a remainder of every size mod 8, and
    lengths whose halves are cut to multiples of 8."""
    rng = np.random.default_rng(9)
    for n in [*range(0, 300), 1000, 1023, 4096, 8191, 8193, 65537, 100_003]:
        values = rng.standard_normal(n) * np.exp(rng.uniform(-12.0, 12.0, n))
        assert pairwise_sum(values, 0, n) == float(values.sum()), n
    values = rng.standard_normal(5000)
    assert pairwise_sum(values, 1000, 3000) == float(values[1000:4000].sum())
