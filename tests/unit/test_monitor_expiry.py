"""A live monitor crossing a book's 08:00 UTC expiry: the dated positions settle at the index
before the first tick at or after the expiry, stop carrying margin, and later index moves leave
their settled cash alone; a tick from the future cannot settle anything."""

from __future__ import annotations

import pytest

from margin_engine.book.columnar import book_from_portfolio
from margin_engine.engine.monitor import Monitor, TickStatus
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.store.base import EventKind, Tick
from tests.conftest import MONITOR_MARKET, NO_HAIRCUTS

SECOND = 10**9
T0 = 1_722_816_000 * SECOND  # 2024-08-05T00:00:00Z
EXPIRY = T0 + 8 * 3600 * SECOND  # BTC-5AUG24 expires 2024-08-05T08:00:00Z
PORTFOLIO = {"schema": "margin-engine/portfolio/v1", "accounts": [
    {"id": "future", "mode": "cross", "collateral": {"USDC": 10000},
     "positions": [{"instrument": "BTC-5AUG24", "size": 1, "entry_price": 50000}]},
    {"id": "perp", "mode": "cross", "collateral": {"USDC": 10000},
     "positions": [{"instrument": "BTC-PERP", "size": 1, "entry_price": 50000}]}]}


def _monitor(now: list[int]) -> Monitor:
    return Monitor(book_from_portfolio(parse_portfolio(PORTFOLIO)),
                   parse_market(MONITOR_MARKET), NO_HAIRCUTS, clock=lambda: now[0])


def _feed(monitor: Monitor, now: list[int], ticks: list[Tick]) -> list[list[str]]:
    kinds = []
    for tick in ticks:
        now[0] = tick.time_ns
        outcome = monitor.process(tick)
        kinds.append([e.kind for e in outcome.events])
    return kinds


def test_the_future_settles_at_the_index_before_the_first_tick_after_0800() -> None:
    now = [T0]
    monitor = _monitor(now)
    before = _feed(monitor, now, [Tick(1, EXPIRY - 3600 * SECOND, "BTC", 49000.0),
                                  Tick(2, EXPIRY - 60 * SECOND, "BTC", 48500.0)])
    assert EventKind.SETTLEMENT not in sum(before, [])
    assert monitor.initial[0] > 0.0  # the live future carries margin
    now[0] = EXPIRY + 30 * SECOND
    crossing = monitor.process(Tick(3, now[0], "BTC", 47000.0))
    settled = [e for e in crossing.events if e.kind == EventKind.SETTLEMENT]
    assert len(settled) == 1
    assert '"price":48500.0' in settled[0].payload
    assert '"expiry":"2024-08-05T08:00:00Z"' in settled[0].payload
    now[0] = EXPIRY + 3600 * SECOND
    monitor.process(Tick(4, now[0], "BTC", 45000.0))
    # settled at 48,500: 10,000 + (48,500 - 50,000) whatever the index does next; no margin
    assert monitor.equity[0] == pytest.approx(8500.0, abs=1e-9)
    assert monitor.initial[0] == 0.0
    assert monitor.maintenance[0] == 0.0
    # the perp keeps moving with the index: 10,000 + (45,000 - 50,000)
    assert monitor.equity[1] == pytest.approx(5000.0, abs=1e-9)
    assert monitor.initial[1] > 0.0
    # the market clock moved to the crossing tick (the book's times to expiry with it)
    assert monitor.market.timestamp_ns == EXPIRY + 30 * SECOND


def test_a_tick_from_2200_settles_nothing_and_a_replay_settles_the_same() -> None:
    now = [T0]
    monitor = _monitor(now)
    year_2200 = 7_258_118_400 * SECOND
    rejected = monitor.process(Tick(1, year_2200, "BTC", 50100.0))
    assert rejected.status is TickStatus.REJECTED
    assert monitor.state.expiries  # still pending
    assert monitor.initial[0] > 0.0
    ticks = [Tick(2, EXPIRY - 60 * SECOND, "BTC", 48500.0),
             Tick(3, EXPIRY + 30 * SECOND, "BTC", 47000.0),
             Tick(4, EXPIRY + 90 * SECOND, "BTC", 46000.0)]
    _feed(monitor, now, ticks)
    rebuilt = _monitor([0])
    for tick in ticks:  # the store's rebuild path: no wall clock, the same steps
        rebuilt.process(tick, commit=False)
    assert rebuilt.equity.tolist() == monitor.equity.tolist()
    assert rebuilt.initial.tolist() == monitor.initial.tolist()
    assert rebuilt.market.settlements == monitor.market.settlements
