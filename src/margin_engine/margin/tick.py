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

``IncrementalSlice`` is the monitor's path for a slice of accounts after a move of one
underlying: the instruments repriced, only that underlying's positions revalued through
per-(account, underlying) indexes built once (``portfolio_kernel.slice_margin_nb``); equal to
``PortfolioModel.recompute`` on the repriced slice bit for bit
(tests/unit/test_incremental_slice.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from margin_engine.book.bound import BoundBook, asset_prices, bind_market, reprice
from margin_engine.book.columnar import MODE_CODES, ColumnarBook, book_from_columns
from margin_engine.book.kernels import position_account_nb, quantity_nb, rows_holding_nb
from margin_engine.collateral.haircuts import book_deductions
from margin_engine.core.errors import InputError
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.domain.instruments import MarginMode
from margin_engine.margin.config import PortfolioConfig, RiskConfig
from margin_engine.margin.portfolio import collateral_depeg, rows_sigma, value_change_rows
from margin_engine.margin.portfolio_kernel import (
    KIND_INVERSE,
    KIND_LINEAR,
    KIND_OPTION,
    KIND_SETTLED,
    option_terms_nb,
    slice_margin_nb,
    tick_margin_nb,
    unsigned,
)
from margin_engine.margin.protocol import MarginResult
from margin_engine.margin.scenarios import (
    scenario_columns,
    scenario_table,
    value_change_grid,
)
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
        quantity = quantity_nb(book.position_instrument, book.size, book.entry_price,
                               table.contract_size, table.inverse, table.is_option)
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
    grid = value_change_grid(bound, config.portfolio)
    n_s = grid.shape[1]
    width = -(-n_s // VECTOR) * VECTOR
    padded = np.zeros((grid.shape[0], width))
    padded[:, :n_s] = grid
    kind = instrument_kinds(bound)
    assets = tick_book.book.assets
    coin = np.array([bound.underlyings.index(a.partition("@")[0])
                     if a.partition("@")[0] in bound.underlyings else -1 for a in assets],
                    dtype=np.int64)
    prices = asset_prices(tick_book.book, market) if assets else np.zeros(0)
    return TickMarket(instruments=bound, grid=padded, kind=kind, prices=prices, coin=coin)


def instrument_kinds(bound: BoundBook) -> np.ndarray:
    """uint8 per instrument: KIND_SETTLED past expiry, else KIND_OPTION, KIND_INVERSE (inverse
    perpetual / future) or KIND_LINEAR."""
    table = bound.book.instruments
    kind = np.full(len(table.instruments), KIND_LINEAR, dtype=np.uint8)
    kind[table.inverse & ~table.is_option] = KIND_INVERSE
    kind[table.is_option] = KIND_OPTION
    kind[~bound.live] = KIND_SETTLED
    return kind


def tick_margins(tick_book: TickBook, tick: TickMarket, config: RiskConfig, *,
                 detail: bool = True) -> MarginResult:
    """The portfolio model's result for every account of the book at the tick's market
    (``detail``: with the per-underlying breakdown; without it only IM and MM are filled)."""
    cfg = config.portfolio
    scenarios = scenario_table(cfg)
    columns = scenario_columns(cfg)
    book, bound = tick_book.book, tick.instruments
    table = bound.book.instruments
    n_acct, n_u = book.account_count, len(bound.underlyings)
    im, mm = np.empty(n_acct), np.empty(n_acct)
    shape = (n_acct, n_u) if detail else (0, n_u)
    scan, cont = np.empty(shape), np.empty(shape)
    worst = np.empty(shape, dtype=np.int64)
    active = np.empty(shape, dtype=np.bool_)
    tick_margin_nb(
        unsigned(book.offsets, np.int64), unsigned(book.position_instrument, np.int32),
        tick_book.quantity, book.size, unsigned(table.underlying, np.int32),
        bound.contingency_group, tick.kind, table.contract_size, bound.mark,
        bound.index, tick.grid, len(scenarios), columns.weights, columns.moves, columns.linear,
        np.ascontiguousarray(book.collateral), tick.prices, tick.coin, bound.correlation,
        cfg.option_contingency_rate, cfg.linear_contingency_rate, cfg.max_cross_offset,
        cfg.maintenance_fraction, tick_book.max_len, detail, im, mm, scan, cont, worst, active)
    per_account = {}
    if config.haircuts.enabled:  # the stablecoin depeg charge (none without haircuts)
        depeg = per_account["depeg"] = _depeg(tick_book, tick, config)
        if depeg.any():
            im = im + depeg
            mm = cfg.maintenance_fraction * im
    revalued = frozenset(bound.underlyings) | frozenset(config.haircuts.stablecoins)
    haircut = book_deductions(book.collateral, book.assets, tick.prices, config.haircuts,
                              revalued)
    return MarginResult(
        model="portfolio", initial_margin=im, maintenance_margin=mm, active=active,
        per_underlying={"scan_risk": scan, "contingency": cont, "worst_scenario": worst}
        if detail else {},
        per_account=per_account, scenarios=scenarios, collateral_haircut=haircut)


def _depeg(tick_book: TickBook, tick: TickMarket, config: RiskConfig) -> FloatArray:
    """``portfolio.collateral_depeg`` at the tick's asset prices."""
    book = tick_book.book
    prices = {key.partition("@")[0]: float(price) for key, price in zip(
        book.assets, tick.prices, strict=True)}
    return collateral_depeg(book.collateral, book.assets, prices, config)


# ---------------------------------------------------------------- one underlying moved
def probe_of(book: ColumnarBook) -> ColumnarBook:
    """Every instrument of ``book``'s own table once (size 1, no collateral): binding it binds
    the instruments alone, with the same table and so the same underlyings."""
    n_inst = len(book.instruments.instruments)
    return ColumnarBook(
        account_ids=("instruments",),
        mode=np.array([MODE_CODES[MarginMode.PORTFOLIO]], dtype=np.int32),
        instruments=book.instruments, offsets=np.array([0, n_inst], dtype=np.int64),
        position_instrument=np.arange(n_inst, dtype=np.int32), size=np.ones(n_inst),
        entry_price=np.ones(n_inst), assets=book.assets,
        collateral=np.zeros((1, len(book.assets))))


def _rows_in(offsets: IntArray, keep: np.ndarray) -> tuple[IntArray, IntArray]:
    """The CSR index of the position rows where ``keep``: (offsets per account, rows), each
    account's rows in book order."""
    rows = np.nonzero(keep)[0]
    counts = np.bincount(position_account_nb(offsets)[rows], minlength=offsets.shape[0] - 1)
    sub = np.zeros(offsets.shape[0], dtype=np.int64)
    np.cumsum(counts, out=sub[1:])
    return sub, rows


class SharedCells(NamedTuple):
    """The latest portfolio cells of every account of a book (from whichever slice last
    computed them) and which are known, with the book's row of each of a slice's accounts."""

    rows: IntArray  # the slice's accounts' rows in the tables below
    known: np.ndarray  # accounts x underlyings
    scan: FloatArray
    cont: FloatArray
    worst: np.ndarray


_NO_SHARED = SharedCells(np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.bool_),
                         np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0), dtype=np.int64))


@dataclass(slots=True)
class IncrementalSlice:
    """The portfolio model on the accounts holding underlying u (a monitor slice), after moves
    of u alone: the same numbers, bit for bit, as ``PortfolioModel.recompute`` on the slice
    repriced (``reprice``), without rebinding a position.

    Per tick only the instruments are repriced (a probe book holding each once) and u's rows
    of the grid built; then one pass over the accounts (``slice_margin_nb``):
        P_a,u[s] = sum over a's positions in u (in book order) of q_p grid[i_p, s]
                   + e_a,u x m_lin[s]
        C_a,u = sum_g term_g x index_u + lin_rate x min(longs, shorts)
    in one pass over each account's positions (which also sums the unrealised P&L; u's
    delta-one positions go to the longs or the shorts by the sign of their notional), the
    net-short option groups' term_g = -net x opt_rate indexed once, the other underlyings'
    scan risk, contingency and worst scenario kept from the last
    result, and equity = collateral . prices + sum_p q_p (mark_i(p) - entry_usd_p) over every
    position (entry_usd = entry x index for inverse options). Collateral value, haircuts,
    depeg and exposures are recomputed only when an asset price moved."""

    u: int
    probe: BoundBook  # the instruments at the last tick's market
    kind: np.ndarray  # KIND_* per instrument
    inst_rows: IntArray  # u's instruments
    sigma_key: tuple[int, int | None]
    sigma: FloatArray  # u's instruments x scenarios vol before the shock
    # every position of the slice (equity)
    offsets: IntArray
    inst: np.ndarray
    quantity: FloatArray
    entry_usd: FloatArray
    inverse_options: IntArray  # rows of inverse options: entry_usd = entry x index
    inverse_entry: FloatArray
    fixed: FloatArray  # signed notional as bound: size x contract size for inverse ones
    option_terms: tuple[IntArray, FloatArray]  # (offsets, -net x opt_rate)
    # the last result's breakdown, updated in place
    scan: FloatArray
    cont: FloatArray
    worst: np.ndarray
    active: np.ndarray
    # the collateral (the slice's own array) and what the asset prices make of it
    collateral: FloatArray
    prices_key: tuple[float, ...] = ()
    collateral_value: FloatArray | None = None
    haircut: FloatArray | None = None
    depeg: FloatArray | None = None
    exposure: FloatArray | None = None  # e_a,u per account
    stable_key: tuple[float, ...] = ()  # the stablecoin prices of ``depeg``
    upnl: FloatArray | None = None  # the last tick's unrealised P&L
    # the rows holding a non-zero amount of some asset, per set of assets (mask bytes)
    holding: dict[bytes, IntArray] = field(default_factory=dict)

    @staticmethod
    def start(bound: BoundBook, result: MarginResult, underlying: str,
              config: RiskConfig) -> IncrementalSlice:
        """From the slice ``bound`` just bound or repriced and the portfolio ``result`` on it."""
        book, table = bound.book, bound.book.instruments
        u = bound.underlyings.index(underlying)
        inst = book.position_instrument
        inverse_options = np.nonzero((table.inverse & table.is_option)[inst])[0]
        u_offsets, u_rows = _rows_in(book.offsets, table.underlying[inst] == u)
        u_inst = np.ascontiguousarray(inst[u_rows])
        u_quantity = bound.quantity[u_rows]
        kind = instrument_kinds(bound)
        lengths = np.diff(u_offsets)
        terms = option_terms_nb(u_offsets, u_inst, u_quantity, table.is_option & bound.live,
                                bound.contingency_group, config.portfolio.option_contingency_rate,
                                int(lengths.max()) if lengths.size else 0)
        breakdown = result.per_underlying
        return IncrementalSlice(
            u=u, probe=reprice(replace(bound, book=probe_of(book)), bound.market), kind=kind,
            inst_rows=np.nonzero(table.underlying == u)[0], sigma_key=(-1, None),
            sigma=np.zeros((0, 0)), offsets=book.offsets, inst=inst,
            quantity=bound.quantity, entry_usd=bound.entry_usd.copy(),
            inverse_options=inverse_options, inverse_entry=book.entry_price[inverse_options],
            fixed=bound.signed_notional, option_terms=terms,
            scan=np.array(breakdown["scan_risk"]), cont=np.array(breakdown["contingency"]),
            worst=np.array(breakdown["worst_scenario"]), active=np.array(result.active),
            collateral=book.collateral)

    def tick(self, market: MarketSnapshot, config: RiskConfig,
             shared: SharedCells | None = None) -> MarginResult:
        """The portfolio result of the slice at ``market`` (u moved, nothing else); the
        unrealised P&L of its accounts is left in ``upnl``. With ``shared``, the other
        underlyings' cells are taken from the latest of every account first and the slice's
        cells written back after, in the same pass (``SharedCells``)."""
        self.probe = probe = reprice(self.probe, market)
        self._at_prices(market, config)
        if self.inverse_options.size:
            spot = probe.index[probe.book.instruments.underlying]
            self.entry_usd[self.inverse_options] = \
                self.inverse_entry * spot[self.inst[self.inverse_options]]
        cfg = config.portfolio
        scenarios = scenario_table(cfg)
        columns = scenario_columns(cfg)
        n_acct = self.offsets.shape[0] - 1
        im, mm, self.upnl = np.empty(n_acct), np.empty(n_acct), np.empty(n_acct)
        assert self.exposure is not None
        assert self.depeg is not None
        cells = shared if shared is not None else _NO_SHARED
        slice_margin_nb(
            self.u, self.probe.book.instruments.underlying, self.kind, probe.mark,
            *self.option_terms, probe.index, self._grid(market, cfg), len(scenarios),
            columns.weights, columns.moves, columns.linear, self.exposure, probe.correlation,
            cfg.linear_contingency_rate, cfg.max_cross_offset, cfg.maintenance_fraction,
            self.offsets, self.inst, self.quantity, self.entry_usd, self.fixed,
            im, mm, self.scan, self.cont, self.worst, self.active, self.upnl,
            cells.rows, cells.known, cells.scan, cells.cont, cells.worst, shared is not None)
        if self.depeg.any():
            im = im + self.depeg
            mm = cfg.maintenance_fraction * im
        return MarginResult(
            model="portfolio", initial_margin=im, maintenance_margin=mm, active=self.active,
            per_underlying={"scan_risk": self.scan, "contingency": self.cont,
                            "worst_scenario": self.worst},
            per_account={"depeg": self.depeg} if config.haircuts.enabled else {},
            scenarios=scenarios, collateral_haircut=self.haircut)

    def equity(self) -> FloatArray:
        """Mark-to-market equity of the slice's accounts at the last tick's market."""
        assert self.collateral_value is not None
        assert self.upnl is not None
        equity: FloatArray = self.collateral_value + self.upnl
        return equity

    def _grid(self, market: MarketSnapshot, cfg: PortfolioConfig) -> FloatArray:
        """u's rows of the grid (``value_change_rows``), padded to whole vectors; their vols
        before the shock are kept while the clock and the vols' time stand still."""
        key = (market.timestamp_ns, market.vol_as_of_ns)
        if key != self.sigma_key:
            self.sigma = rows_sigma(self.probe, cfg, self.inst_rows)
            self.sigma_key = key
        width = -(-len(scenario_table(cfg)) // VECTOR) * VECTOR
        grid: FloatArray = value_change_rows(self.probe, cfg, self.inst_rows, self.sigma,
                                             width)
        return grid

    def _at_prices(self, market: MarketSnapshot, config: RiskConfig) -> None:
        """Collateral value, haircut, depeg and e_a,u per account (``bind_market``'s and the
        model's arithmetic), recomputed when an asset price moved."""
        probe, assets = self.probe, self.probe.book.assets
        prices = asset_prices(probe.book, market)
        key = tuple(prices.tolist())
        if key == self.prices_key and self.exposure is not None:
            return
        n_acct = self.collateral.shape[0]
        self.collateral_value = np.asarray(self.collateral @ prices if assets else
                                           np.zeros(n_acct), dtype=np.float64)
        self.haircut = self._haircut(prices, config)
        stable = tuple(market.asset_prices[a] for a in config.haircuts.stablecoins
                       if a in market.asset_prices)
        if self.depeg is None or stable != self.stable_key:
            self.depeg = collateral_depeg(self.collateral, assets, market.asset_prices, config)
            self.stable_key = stable
        exposure = np.zeros(n_acct)
        for col, asset in enumerate(assets):
            if asset.partition("@")[0] == probe.underlyings[self.u]:
                exposure += self.collateral[:, col] * prices[col]
        self.exposure = exposure
        self.prices_key = key

    def warm_moves(self, config: RiskConfig) -> None:
        """Compile (or load from numba's cache) what a later move of a collateral asset's
        price runs (the rows holding it, their deductions), on no row."""
        assets = self.probe.book.assets
        if self.haircut is None or not assets:
            return
        none = rows_holding_nb(self.collateral, np.zeros(len(assets), dtype=np.bool_))
        self._deductions(asset_prices(self.probe.book, self.probe.market), config, none,
                         self.haircut.copy())

    def _haircut(self, prices: FloatArray, config: RiskConfig) -> FloatArray:
        """Per account, what haircuts take off (``book_deductions``, per account row): after a
        move of some asset prices only the rows holding a non-zero amount of those assets are
        recomputed (a zero balance is taken nothing from at any price)."""
        if self.haircut is None or len(self.prices_key) != prices.size:
            return self._deductions(prices, config)
        moved = prices != np.array(self.prices_key)
        rows = self.holding.get(moved.tobytes())
        if rows is None:  # (the slice's collateral is its own: kept per set of assets)
            rows = self.holding[moved.tobytes()] = rows_holding_nb(self.collateral, moved)
        if rows.size == self.collateral.shape[0]:
            return self._deductions(prices, config)
        return self._deductions(prices, config, rows, self.haircut.copy())

    def _deductions(self, prices: FloatArray, config: RiskConfig, rows: IntArray | None = None,
                    into: FloatArray | None = None) -> FloatArray:
        """``book_deductions`` of the slice's collateral (every row, or ``rows`` into
        ``into``), the model's revalued assets (its underlyings and stablecoins) left out."""
        probe = self.probe
        revalued = frozenset(probe.underlyings) | frozenset(config.haircuts.stablecoins)
        return book_deductions(self.collateral, probe.book.assets, prices, config.haircuts,
                               revalued, rows=rows, into=into)
