"""The monitor's pool health figures against numpy's formulas for them."""

from __future__ import annotations

import numpy as np
import pytest

from margin_engine.engine.pool_health import collateral_by_asset_nb, pool_health
from margin_engine.engine.risk_state import RiskStatus


@pytest.mark.parametrize("seed", range(3))
def test_pool_health_is_numpys_sums_and_counts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5_000
    maintenance = rng.uniform(0.0, 1e5, n) * (rng.random(n) < 0.8)
    equity = maintenance * rng.uniform(0.5, 1.5, n)  # many near MM, some below
    equity[:40] = maintenance[:40] * 1.1  # the edge: 1.1 x MM is not near
    equity[40:80] = maintenance[40:80]  # MM itself is near (not below)
    holding = rng.random(n) < 0.9
    status = rng.integers(0, 3, n).astype(np.int8)
    got = pool_health(equity, maintenance, holding, status, int(RiskStatus.CALL),
                      int(RiskStatus.LIQUIDATION))
    assert got.equity == pytest.approx(float(equity.sum()), rel=1e-12)
    assert got.maintenance == pytest.approx(float(maintenance.sum()), rel=1e-12)
    assert got.shortfall == pytest.approx(float(np.maximum(maintenance - equity, 0.0).sum()),
                                          rel=1e-12)
    near = holding & (equity < 1.1 * maintenance) & (equity >= maintenance)
    assert got.near_liquidation == int(near.sum()) > 0
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
