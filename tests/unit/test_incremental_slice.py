"""The monitor's incremental portfolio path (``IncrementalSlice``: only the moved underlying's
positions revalued, nothing rebound) on a random book (BTC, ETH and a collateral-only SOL;
linear and inverse perps, futures, options and inverse options, settled expiries; coin,
stablecoin and bridged collateral; isolated, cross and portfolio accounts):

* over a random walk of every symbol with an expiry crossed, every account's equity, IM, MM,
  gap and status, every event and the state hash equal bit for bit those of the slices bound
  or repriced and margined by ``PortfolioModel.recompute`` at every tick (the path before);
* over ticks of one underlying (and a stablecoin), and over ticks of every symbol with an
  expiry crossed, they equal a recompute from scratch (``PortfolioModel.compute`` on every
  slice at every tick) bit for bit: a slice takes the other underlyings' cells from the table
  the slices share (see ``SliceRemargin``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from margin_engine.book.bound import BoundBook, bind_market, pinned_settlements
from margin_engine.core.timeutil import parse_timestamp
from margin_engine.engine.monitor import Monitor
from margin_engine.engine.risk_state import SliceRemargin
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.store.base import EventKind, Tick
from tests.conftest import NO_HAIRCUTS
from tests.unit.level_books import level_market, random_level_book

SECOND = 10**9


class FullRecompute(SliceRemargin):
    """The slices bound or repriced and margined by ``compute`` at every tick."""

    def __call__(self, market: MarketSnapshot, moved: frozenset[str],
                 clock_moved: bool) -> list[tuple[np.ndarray, object]]:
        for piece in self.slices.values():
            piece.portfolio = None
        return super().__call__(market, moved, clock_moved)  # type: ignore[return-value]

    def _incremental(self, piece: object, symbol: str) -> None:
        return None


class Recompute(SliceRemargin):
    """The path before: the slices repriced and margined by ``recompute`` at every tick."""

    def _incremental(self, piece: object, symbol: str) -> None:
        return None


def _ticks(count: int, seed: int, start_ns: int, symbols: tuple[str, ...],
           settle: bool) -> list[Tick]:
    """A seeded walk of ``symbols`` (0.4 % steps, 0.05 % for USDC); with ``settle`` one tick
    after 2025-06-06 08:00 settles that expiry (the clock moves, the slices are rebound)."""
    rng = np.random.default_rng(seed)
    level = {"BTC": 50000.0, "ETH": 2000.0, "SOL": 150.0, "USDC": 0.999}
    crossing = parse_timestamp("2025-06-06T09:00:00Z", field="t")
    ticks, time_ns = [], start_ns
    for k in range(count):
        symbol = str(rng.choice(symbols))
        level[symbol] *= float(np.exp(rng.normal(0.0, 0.0005 if symbol == "USDC" else 0.004)))
        time_ns = crossing if settle and k == count // 2 else time_ns + SECOND
        ticks.append(Tick(k + 1, time_ns, symbol, level[symbol]))
    return ticks


def _monitors(bound: BoundBook, config: RiskConfig, model: str,
              reference: type[SliceRemargin]) -> tuple[Monitor, Monitor]:
    """Two monitors on the book: the live path, and one re-margining by ``reference``."""
    market = parse_market(level_market())
    fast = Monitor(bound.book, market, config, model=model)
    other = Monitor(bound.book, market, config, model=model)
    start = bind_market(bound.book, market)
    other.state.remargin = reference(replace(start, market=pinned_settlements(start)),
                                     model, config)
    return fast, other


def _run(fast: Monitor, other: Monitor, ticks: list[Tick]) -> list[EventKind]:
    """Both monitors through ``ticks``: the same outcomes, events and numbers at every one."""
    kinds: list[EventKind] = []
    for tick in ticks:
        a, b = fast.process(tick, commit=False), other.process(tick, commit=False)
        assert (a.status, a.reason) == (b.status, b.reason)
        assert [(e.kind, e.account, e.payload) for e in a.events] == \
            [(e.kind, e.account, e.payload) for e in b.events]
        assert _numbers(fast) == _numbers(other), f"tick {tick.seq} {tick.symbol}"
        kinds += [EventKind(e.kind) for e in a.events]
    assert fast.state_hash() == other.state_hash()
    return kinds


def _numbers(monitor: Monitor) -> list[bytes]:
    return [monitor.equity.tobytes(), monitor.initial.tobytes(),
            monitor.maintenance.tobytes(), monitor.gap.tobytes(), monitor.status.tobytes()]


CASES = [("account", RiskConfig(), 1), ("account", NO_HAIRCUTS, 2),
         ("portfolio", RiskConfig(), 3)]


@pytest.mark.parametrize(("model", "config", "seed"), CASES)
def test_incremental_path_equals_the_recompute_path_bit_for_bit(
        model: str, config: RiskConfig, seed: int) -> None:
    bound = random_level_book(400, seed=seed, asked_margins=False)
    fast, other = _monitors(bound, config, model, Recompute)
    ticks = _ticks(120, seed, fast.market.timestamp_ns,
                   ("BTC", "ETH", "BTC", "ETH", "SOL", "USDC"), settle=True)
    kinds = _run(fast, other, ticks)
    slices = fast.state.remargin.slices  # type: ignore[attr-defined]
    assert slices["BTC"].fast is not None
    assert slices["ETH"].fast is not None
    assert slices["BTC"].mixed is (model == "account")
    assert EventKind.SETTLEMENT in kinds  # the clock moved: rebound, then incremental again
    assert {EventKind.MARGIN_CALL, EventKind.LIQUIDATION} & set(kinds)


@pytest.mark.parametrize(("model", "config", "seed"), CASES)
def test_incremental_path_equals_a_full_recompute_bit_for_bit(
        model: str, config: RiskConfig, seed: int) -> None:
    bound = random_level_book(400, seed=seed, asked_margins=False)
    fast, other = _monitors(bound, config, model, FullRecompute)
    start = fast.market.timestamp_ns
    kinds = []
    for symbols in (("BTC", "BTC", "USDC"), ("ETH",)):  # one underlying at a time
        ticks = _ticks(60, seed, start, symbols, settle=False)
        outcomes = len(fast.rejected)
        kinds += _run(fast, other, [replace(t, seq=fast.last_seq + t.seq) for t in ticks])
        assert len(fast.rejected) == outcomes
        start = ticks[-1].time_ns
    slices = fast.state.remargin.slices  # type: ignore[attr-defined]
    assert slices["BTC"].fast is not None
    assert slices["ETH"].fast is not None
    assert {EventKind.MARGIN_CALL, EventKind.LIQUIDATION, EventKind.RECOVERY} & set(kinds)


@pytest.mark.parametrize(("model", "config", "seed"), CASES)
def test_several_underlyings_moving_equal_a_full_recompute(
        model: str, config: RiskConfig, seed: int) -> None:
    """Accounts holding BTC and ETH (and SOL collateral) re-margined by BTC ticks take ETH's
    cells as ETH's own slice last computed them (the shared table), so every number equals a
    recompute from scratch at every tick, an expiry crossed on the way (every slice anew)."""
    bound = random_level_book(400, seed=seed, asked_margins=False)
    fast, other = _monitors(bound, config, model, FullRecompute)
    ticks = _ticks(120, seed, fast.market.timestamp_ns,
                   ("BTC", "ETH", "BTC", "ETH", "SOL", "USDC"), settle=True)
    kinds = _run(fast, other, ticks)
    assert EventKind.SETTLEMENT in kinds
    slices = fast.state.remargin.slices  # type: ignore[attr-defined]
    assert slices["BTC"].fast is not None
    assert slices["ETH"].fast is not None


@pytest.mark.parametrize(("model", "config", "seed"), CASES)
def test_the_first_tick_of_each_underlying_takes_the_incremental_path(
        model: str, config: RiskConfig, seed: int) -> None:
    """The slices' incremental paths start with the monitor (not on each underlying's first
    tick, which then cost a whole re-margin of the slice: 130 ms at 100,000 accounts), and
    that first tick equals a recompute from scratch."""
    bound = random_level_book(400, seed=seed, asked_margins=False)
    fast, other = _monitors(bound, config, model, FullRecompute)
    slices = fast.state.remargin.slices  # type: ignore[attr-defined]
    assert slices["BTC"].fast is not None
    assert slices["ETH"].fast is not None
    assert "USDC" not in slices or slices["USDC"].fast is None  # not an underlying
    start = fast.market.timestamp_ns
    _run(fast, other, [Tick(1, start + SECOND, "ETH", 2010.0),
                       Tick(2, start + 2 * SECOND, "BTC", 49500.0)])


def test_the_monitor_has_its_tick_kernels_before_the_first_tick() -> None:
    """A new process: the incremental slice's kernel and the cell table's are compiled (or
    loaded from the cache) while the monitor is built, not on its first ticks (from a cold
    cache the slice's kernel took 4.75 s of the first tick of a 100,000-account monitor)."""
    import subprocess
    import sys

    script = """
import numpy as np
from margin_engine.bench.run import _book, instrument_names, random_book_columns
from margin_engine.demo.market import demo_market_document
from margin_engine.engine.monitor import Monitor
from margin_engine.engine.risk_state import _publish_cells_nb, _refresh_cells_nb
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.portfolio_kernel import slice_margin_nb
from margin_engine.store.base import Tick

names = instrument_names(200)
market = parse_market(demo_market_document())
monitor = Monitor(_book(names, random_book_columns(50, 4, names, 3)), market, RiskConfig())
kernels = (slice_margin_nb, _publish_cells_nb, _refresh_cells_nb)
before = [len(k.signatures) for k in kernels]
for seq, (symbol, level) in enumerate((("BTC", 65100.0), ("ETH", 2490.0), ("BTC", 65200.0))):
    monitor.process(Tick(seq + 1, market.timestamp_ns + (seq + 1) * 10**9, symbol, level),
                    commit=False)
print(before, [len(k.signatures) for k in kernels])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    before, after = out.stdout.strip().split("] [")
    assert before == "[1, 1, 1"  # each compiled or loaded once, while the monitor was built
    assert after == "1, 1, 1]"  # and nothing more on the ticks
