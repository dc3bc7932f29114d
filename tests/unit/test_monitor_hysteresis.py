"""Status hysteresis: band 0 is the bare thresholds, a band emits fewer events on a path that
oscillates around IM, and never keeps an account below MM out of liquidation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from margin_engine.book.columnar import book_from_portfolio
from margin_engine.engine.monitor import Monitor
from margin_engine.engine.risk_state import RiskStatus
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.liquidation.population import leveraged_population
from margin_engine.market.documents import flat_market_document
from margin_engine.store.base import EventKind, Tick
from tests.unit.test_tick_guard import MARKET, MIN, NOW, PORTFOLIO, T0, _config

OK, CALL, LIQUIDATION = RiskStatus.OK, RiskStatus.CALL, RiskStatus.LIQUIDATION

# The long 2 BTC with 5,000 USDC: equity 2 S - 95,000, IM 0.04 S, MM 0.02 S. Bare thresholds:
# call below 48,469.4, liquidation below 47,979.8. Band 0.05: the call ends at equity >=
# 1.05 IM (S >= 48,518.9), the liquidation at equity >= 1.05 MM (S >= 48,004.0).
OSCILLATING = [48600, 48400, 48500, 48420, 48510, 48440, 48530, 48300, 47900, 48000, 47950,
               48100, 48700]
CALL_, LIQ, REC = EventKind.MARGIN_CALL, EventKind.LIQUIDATION, EventKind.RECOVERY
BARE = [CALL_, REC, CALL_, REC, CALL_, REC, CALL_, LIQ, CALL_, LIQ, CALL_, REC]
BANDED = [CALL_, REC, CALL_, LIQ, CALL_, REC]


def _events(band: float, prices: list[int]) -> list[str]:
    monitor = Monitor(book_from_portfolio(parse_portfolio(PORTFOLIO)), parse_market(MARKET),
                      _config(hysteresis_band=band), clock=lambda: NOW)
    outcomes = monitor.run(Tick(k + 1, T0 + (k + 1) * MIN, "BTC", float(p))
                           for k, p in enumerate(prices))
    return [e.kind for o in outcomes for e in o.events if e.account == "long-20x"]


def test_band_zero_is_the_bare_thresholds_and_a_band_emits_fewer_events() -> None:
    assert _events(0.0, OSCILLATING) == BARE
    assert _events(0.05, OSCILLATING) == BANDED


def _bare(monitor: Monitor) -> np.ndarray:
    """The statuses of the thresholds alone (no hysteresis), from the monitor's numbers."""
    m = monitor.multiplier
    status = np.where(monitor.gap < 0, LIQUIDATION,
                      np.where(monitor.equity < monitor.initial * m, CALL, OK))
    return np.where(monitor.holding, status, OK)


def _walk(seed: int, count: int) -> list[Tick]:
    """BTC and ETH alternating a second apart, 0.2 % a tick: every account crosses."""
    rng = np.random.default_rng(seed)
    level = {"BTC": 60000.0, "ETH": 3000.0}
    ticks = []
    for k in range(count):
        symbol = "BTC" if k % 2 == 0 else "ETH"
        level[symbol] *= float(np.exp(rng.normal(-0.0003, 0.002)))
        ticks.append(Tick(k + 1, T0 + k * 10**9, symbol, round(level[symbol], 2)))
    return ticks


@pytest.mark.parametrize("band", [0.0, 0.05, 0.1])
def test_an_account_below_maintenance_is_always_in_liquidation(band: float) -> None:
    index = {"BTC": 60000.0, "ETH": 3000.0}
    doc: dict[str, Any] = leveraged_population(300, 3, index)
    monitor = Monitor(book_from_portfolio(parse_portfolio(doc)),
                      parse_market(flat_market_document(index, T0)),
                      _config(hysteresis_band=band), clock=lambda: NOW)
    events = 0
    for tick in _walk(5, 400):
        events += len(monitor.process(tick).events)
        below_mm = monitor.holding & (monitor.gap < 0)
        assert np.all(monitor.status[below_mm] == LIQUIDATION)
        below_im = monitor.holding & (monitor.equity < monitor.initial * monitor.multiplier)
        assert np.all(monitor.status[below_im] != OK)
        if band == 0.0:
            np.testing.assert_array_equal(monitor.status, _bare(monitor))
    assert events > 0
    if band > 0:
        assert events < _count_bare_events()


def _count_bare_events() -> int:
    index = {"BTC": 60000.0, "ETH": 3000.0}
    monitor = Monitor(book_from_portfolio(parse_portfolio(leveraged_population(300, 3, index))),
                      parse_market(flat_market_document(index, T0)),
                      _config(hysteresis_band=0.0), clock=lambda: NOW)
    return sum(len(o.events) for o in monitor.run(_walk(5, 400)))
