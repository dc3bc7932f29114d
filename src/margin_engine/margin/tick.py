"""The per-tick path of the portfolio model: what a tick changes, apart from what it does not.

``TickBook`` is the resolved book, fixed between ticks: CSR offsets, the int32 instrument of each
position, its float64 quantity (size x contract size, / entry for inverse perps and futures: no
market in it) and size, the collateral amounts. ``bind_tick`` is what a tick changes: the
instruments bound to the market (marks, forwards, vols, settlement; one binding of a probe book
holding each instrument once, so no per-position array is rebuilt) and the scenario grid of
every instrument (padded to whole vectors). ``tick_margins`` is the fused pass over the book
(``portfolio_kernel.tick_margin_nb``): scenario P&L, scan risk, contingencies, correlation
aggregation, parallel over chunks of accounts. Results equal ``PortfolioModel.compute`` on the
bound book bit for bit (tests/unit/test_tick_path.py), hence the scalar reference to 1e-12.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from margin_engine.book.bound import BoundBook, asset_prices, bind_market
from margin_engine.book.columnar import MODE_CODES, ColumnarBook, book_from_columns
from margin_engine.collateral.haircuts import book_haircuts
from margin_engine.core.errors import InputError
from margin_engine.core.types import FloatArray
from margin_engine.domain.instruments import MarginMode
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.portfolio_kernel import (
    KIND_INVERSE,
    KIND_LINEAR,
    KIND_OPTION,
    KIND_SETTLED,
    tick_margin_nb,
)
from margin_engine.margin.protocol import MarginResult
from margin_engine.margin.scenarios import linear_moves, scenario_table, value_change_grid
from margin_engine.market.snapshot import MarketSnapshot

VECTOR = 4  # scenario columns padded to a multiple of this (float64 lanes of a 256-bit vector)


@dataclass(frozen=True, slots=True)
class TickBook:
    """What a tick does not change: the resolved book as the per-tick pass reads it."""

    book: ColumnarBook
    quantity: FloatArray  # per position: USD P&L per USD of price move, market-free
    probe: ColumnarBook  # every instrument once (size 1): binds the instruments alone
    max_len: int

    @staticmethod
    def from_book(book: ColumnarBook) -> TickBook:
        table = book.instruments
        n_inst = len(table.instruments)
        size_cs = book.size * table.contract_size[book.position_instrument]
        inverse_linear = (table.inverse & ~table.is_option)[book.position_instrument]
        quantity = np.divide(size_cs, book.entry_price, out=size_cs.copy(),
                             where=inverse_linear)
        probe = book_from_columns(
            account_ids=["instruments"], mode=np.array([MODE_CODES[MarginMode.PORTFOLIO]],
                                                       dtype=np.int32),
            instruments=table.instruments, position_account=np.zeros(n_inst, dtype=np.int64),
            position_instrument=np.arange(n_inst, dtype=np.int32), size=np.ones(n_inst),
            entry_price=np.ones(n_inst), assets=book.assets,
            collateral=np.zeros((1, len(book.assets))))
        lengths = np.diff(book.offsets)
        return TickBook(book=book, quantity=np.ascontiguousarray(quantity), probe=probe,
                        max_len=int(lengths.max()) if lengths.size else 0)


@dataclass(frozen=True, slots=True)
class TickMarket:
    """What a tick changes: the instruments bound to the market and their scenario grid."""

    instruments: BoundBook  # the probe book bound: per-instrument and per-underlying arrays
    grid: FloatArray  # instruments x padded scenarios, USD per unit of quantity
    kind: np.ndarray  # uint8 per instrument: KIND_*
    prices: FloatArray  # per collateral column
    coin: np.ndarray  # per collateral column: its coin's underlying index, -1 if none


def bind_tick(tick_book: TickBook, market: MarketSnapshot, config: RiskConfig) -> TickMarket:
    """Bind the instruments to ``market`` and price each on every scenario once."""
    try:
        bound = bind_market(tick_book.probe, market)
    except InputError:
        bind_market(tick_book.book, market)  # the same refusal, naming the book's position
        raise
    table = bound.book.instruments
    grid = value_change_grid(bound, config.portfolio)
    n_s = grid.shape[1]
    width = -(-n_s // VECTOR) * VECTOR
    padded = np.zeros((grid.shape[0], width))
    padded[:, :n_s] = grid
    kind = np.full(len(table.instruments), KIND_LINEAR, dtype=np.uint8)
    kind[table.inverse & ~table.is_option] = KIND_INVERSE
    kind[table.is_option] = KIND_OPTION
    kind[~bound.live] = KIND_SETTLED
    assets = tick_book.book.assets
    coin = np.array([bound.underlyings.index(a.partition("@")[0])
                     if a.partition("@")[0] in bound.underlyings else -1 for a in assets],
                    dtype=np.int64)
    prices = asset_prices(tick_book.book, market) if assets else np.zeros(0)
    return TickMarket(instruments=bound, grid=padded, kind=kind, prices=prices, coin=coin)


def tick_margins(tick_book: TickBook, tick: TickMarket, config: RiskConfig, *,
                 detail: bool = True) -> MarginResult:
    """The portfolio model's result for every account of the book at the tick's market
    (``detail``: with the per-underlying breakdown; without it only IM and MM are filled)."""
    cfg = config.portfolio
    scenarios = scenario_table(cfg)
    book, bound = tick_book.book, tick.instruments
    table = bound.book.instruments
    n_acct, n_u = book.account_count, len(bound.underlyings)
    im, mm = np.empty(n_acct), np.empty(n_acct)
    shape = (n_acct, n_u) if detail else (0, n_u)
    scan, cont = np.empty(shape), np.empty(shape)
    worst = np.empty(shape, dtype=np.int64)
    active = np.empty(shape, dtype=np.bool_)
    tick_margin_nb(
        book.offsets, book.position_instrument, tick_book.quantity, book.size,
        table.underlying, bound.contingency_group, tick.kind, table.contract_size, bound.mark,
        bound.index, tick.grid, len(scenarios), np.array([s[2] for s in scenarios]),
        np.array([s[0] for s in scenarios]), np.array(linear_moves(cfg)),
        np.ascontiguousarray(book.collateral), tick.prices, tick.coin, bound.correlation,
        cfg.option_contingency_rate, cfg.linear_contingency_rate, cfg.max_cross_offset,
        cfg.maintenance_fraction, tick_book.max_len, detail, im, mm, scan, cont, worst, active)
    depeg = _depeg(tick_book, tick, config)
    if depeg.any():
        im = im + depeg
        mm = cfg.maintenance_fraction * im
    revalued = frozenset(bound.underlyings) | frozenset(config.haircuts.stablecoins)
    haircut = book_haircuts(book.collateral, book.assets, tick.prices, config.haircuts,
                            revalued).deduction
    return MarginResult(
        model="portfolio", initial_margin=im, maintenance_margin=mm, active=active,
        per_underlying={"scan_risk": scan, "contingency": cont, "worst_scenario": worst}
        if detail else {},
        per_account={"depeg": depeg} if config.haircuts.enabled else {},
        scenarios=scenarios, collateral_haircut=haircut)


def _depeg(tick_book: TickBook, tick: TickMarket, config: RiskConfig) -> FloatArray:
    """``portfolio.depeg_charge`` from the tick's asset prices."""
    cfg = config.haircuts
    book = tick_book.book
    charge = np.zeros(book.account_count)
    if not cfg.enabled:
        return charge
    for col, key in enumerate(book.assets):
        if key.partition("@")[0] in cfg.stablecoins:
            drop = max(0.0, float(tick.prices[col]) - cfg.depeg_price)
            charge += cfg.depeg_weight * np.maximum(book.collateral[:, col], 0.0) * drop
    return charge
