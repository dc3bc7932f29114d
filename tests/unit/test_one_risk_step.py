"""The live monitor and the crash replay run one risk step (``RiskState.step``): on the same
book and path they agree bar by bar on who is liquidatable, and the replay inherits the
monitor's tick guard (a bad print is held, not liquidated on)."""

from __future__ import annotations

import numpy as np

from margin_engine.book.columnar import book_from_portfolio
from margin_engine.data.prices import PriceSeries
from margin_engine.engine.monitor import Monitor
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.liquidation.config import LiquidationConfig
from margin_engine.liquidation.population import leveraged_population
from margin_engine.liquidation.replay import replay
from margin_engine.margin.config import RiskConfig
from margin_engine.market.documents import flat_market_document
from margin_engine.store.base import Tick
from tests.unit.test_liquidation import _replay_book, _series

T0 = 1_750_000_000 * 10**9
CONFIG = RiskConfig()


def _paths(bars: int) -> dict[str, PriceSeries]:
    """Seeded one-minute BTC and ETH paths: calm, a 15 % slide, a partial rebound."""
    rng = np.random.default_rng(5)
    drift = np.concatenate([np.zeros(bars // 4), np.full(bars // 2, -0.0015),
                            np.full(bars - bars // 4 - bars // 2, 0.0008)])
    paths = {}
    for symbol, level in (("BTC", 60000.0), ("ETH", 3000.0)):
        close = level * np.exp(np.cumsum(drift + 0.001 * rng.standard_normal(bars)))
        close[0] = level
        paths[symbol] = PriceSeries(source="test", time_ns=T0 + np.arange(bars) * 60 * 10**9,
                                    close=close, open=close, high=close, low=close,
                                    volume=np.zeros(bars))
    return paths


def test_monitor_and_replay_agree_bar_by_bar_on_who_is_liquidatable() -> None:
    bars = 160
    paths = _paths(bars)
    market = parse_market(flat_market_document({"BTC": 60000.0, "ETH": 3000.0}, T0))
    book = book_from_portfolio(parse_portfolio(dict(leveraged_population(
        400, 3, {"BTC": 60000.0, "ETH": 3000.0}))))
    replayed = replay(book, market, paths, config=CONFIG, liquidation=CONFIG.liquidation,
                      execute=False)
    assert replayed.below_by_bar is not None

    monitor = Monitor(book, market, CONFIG, clock=lambda: T0)
    seq = 0
    live = np.zeros_like(replayed.below_by_bar)
    for t in range(bars):
        for symbol, series in paths.items():
            seq += 1
            monitor.process(Tick(seq, int(series.time_ns[t]), symbol,
                                 float(series.close[t]), "path"), commit=False)
        live[t] = monitor.state.liquidatable()
    assert replayed.below_by_bar.any(axis=1).sum() > 20  # the slide puts accounts below MM
    disagree = np.nonzero((live != replayed.below_by_bar).any(axis=1))[0]
    assert disagree.size == 0, f"bars where the two loops disagree: {disagree[:10]}"


def test_a_bad_print_is_held_by_the_replay_as_by_the_monitor() -> None:
    """One 1 % print (x0.01) between two normal bars: before, the replay liquidated on it;
    now the tick guard holds it (1,000s of sigma) and drops it when the next bar is back."""
    book, market = _replay_book(10000)
    path = {"BTC": _series([50000, 50000, 500, 50000, 50000])}
    result = replay(book, market, path, config=CONFIG,
                    liquidation=LiquidationConfig(latency_seconds=0))
    kinds = [e["type"] for e in result.events]
    assert kinds == ["tick_quarantined", "quarantine_dropped"]
    assert result.totals["quarantined_ticks"] == 1
    assert result.totals["liquidations"] == 0
    assert result.totals["bad_debt"] == 0.0
