"""The profiles' fast liquidation path equals their ``requirement`` on random books.

``moved_gap(pb, u)`` evaluates only the part of equity - threshold that moves with underlying
u; with today's gap it must give ``requirement``'s gap at any level, and the liquidation search
through it must find the levels the search through ``requirement`` finds.
"""

from __future__ import annotations

import numpy as np
import pytest

from margin_engine.profiles import (
    binance_pm,
    binance_um,
    deribit_pm,
    derive_pmrm,
    dydx_v4,
    hyperliquid,
    okx_pm,
)
from margin_engine.profiles.base import ProfileBook, make_state, today
from margin_engine.profiles.run import run_profile
from tests.unit.level_books import random_level_book

STABLES = ("USDC", "USDT")
PROFILES = {
    "deribit-xpm": deribit_pm.profile(),
    "deribit-spm": deribit_pm.profile(deribit_pm.DeribitParams(cross_collateral=False)),
    "derive-pmrm": derive_pmrm.profile(),
    "okx-pm": okx_pm.profile(),
    "binance-um": binance_um.profile(),
    "binance-pm": binance_pm.profile(),
    "dydx-v4": dydx_v4.profile(),
    "hyperliquid": hyperliquid.profile(),
}


def _book(seed: int, modes: tuple[int, ...] = (0, 1, 2)) -> ProfileBook:
    return ProfileBook.from_bound(random_level_book(60, seed, modes=modes), STABLES)


@pytest.mark.parametrize("name", sorted(PROFILES))
@pytest.mark.parametrize("seed", [3, 17])
def test_moved_part_plus_today_is_the_requirement_gap(name: str, seed: int) -> None:
    profile = PROFILES[name]
    pb = _book(seed)
    rng = np.random.default_rng(seed)
    now = profile.requirement(pb, today(pb))
    now_gap = now.equity[:, 0] - now.threshold[:, 0]
    accounts = np.arange(pb.accounts)
    for u in range(len(pb.underlyings)):
        index = float(pb.index[u])
        levels = index * np.exp(rng.uniform(-1.5, 1.5, (pb.accounts, 3)))
        req = profile.requirement(pb, make_state(pb, u, levels))
        part = profile.moved_gap(pb, u)
        base = now_gap - part(accounts, np.full(pb.accounts, index))
        for col in range(levels.shape[1]):
            fast = base + part(accounts, levels[:, col].copy())
            slow = req.equity[:, col] - req.threshold[:, col]
            scale = np.maximum(np.abs(req.equity[:, col]), np.abs(req.threshold[:, col]))
            np.testing.assert_array_less(np.abs(fast - slow), 1e-10 * scale + 1e-9)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_liquidation_levels_through_the_fast_path_equal_the_requirement_search(
        name: str) -> None:
    pb = _book(5, modes=(1, 2))  # isolated positions are searched through requirement
    fast = run_profile(PROFILES[name], pb).levels
    slow = run_profile(PROFILES[name], pb, reference=True).levels
    assert fast is not None
    assert slow is not None
    for side in ("down", "up"):
        a, b = getattr(fast, side), getattr(slow, side)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=1e-9, equal_nan=True)
    assert np.isfinite(fast.down).any() or np.isfinite(fast.up).any()
