"""Liquidation levels of every account, vectorised: the book is bound once, each model's gap
is re-evaluated from arrays (``level_kernels``) at any level of one underlying.

Per underlying u: the accounts exposed to u are the jobs; the state of each of u's instruments
(mark, and the portfolio model's scenario values or the sensitivity model's Greeks) at every
level of the search grid is computed once and shared by all accounts when the book is large
(accounts x positions in u well above u's distinct instruments), else filled as the search needs
it into tables kept from one call to the next (``StateTables``: one what-if after another at the
same market reads them). Then one compiled pass scans each account outward from today's index
and refines both roots. Today's result of the model is taken from the caller when it has one
(``known_results``), else computed.

Models with a compiled gap: the built-in ``isolated``, ``cross``, ``portfolio`` and
``sensitivity`` models (looked up by type, so a model built with other data of the same type
uses its own parameters); any other model returns None here and is searched by the reference.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook, asset_prices, expiry_forwards
from margin_engine.book.kernels import held_by_underlying_nb, longest_row_nb
from margin_engine.collateral.haircuts import column_haircuts, split_collateral_key
from margin_engine.core.kept import KEPT
from margin_engine.core.threads import in_threads
from margin_engine.core.types import FloatArray
from margin_engine.liquidation import level_kernels as lk
from margin_engine.liquidation.shared_states import kept_rows
from margin_engine.margin.common import coins_of
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.cross import CrossModel
from margin_engine.margin.isolated import IsolatedModel
from margin_engine.margin.portfolio import PortfolioModel
from margin_engine.margin.protocol import MarginModel
from margin_engine.margin.registry import get_model
from margin_engine.margin.sensitivity import SensitivityModel

TABLE_SHARING = 2.0  # build the shared state table when (job, instrument) pairs exceed this x
XTOL_RELATIVE = 1e-12  # Brent's xtol, relative to today's index (as the reference)
RTOL = 1e-15
STATS = {"evaluations": 0, "jobs": 0}  # f evaluations and searches so far (for benchmarks)


# The search reads its arrays at unsigned 32-bit indexes (instruments, positions, table rows):
# numba adds a test and a correction for a negative index (Python's wraparound) to every read
# at a signed one, which cost about 5 % of the search on the bench book.
NO_ROW = np.iinfo(np.uint32).max  # an instrument without a row in the state table (a pair
# of grid levels that is no block of the chord tree)
MAX_POSITIONS = int(np.iinfo(np.uint32).max)


def book_arrays(bound: BoundBook) -> lk.BookArrays:
    """The bound book as the kernels read it."""
    book, table = bound.book, bound.book.instruments
    if book.position_count > MAX_POSITIONS:
        raise ValueError(f"the liquidation search takes at most {MAX_POSITIONS:,} positions "
                         f"in one book, got {book.position_count:,}: split the book")
    scaled = KEPT.get((table, bound.market), "scaled", lambda: _scaled(bound),
                      len(table.instruments))
    return lk.BookArrays(
        offsets=np.ascontiguousarray(book.offsets, dtype=np.int64),
        inst=np.ascontiguousarray(book.position_instrument, dtype=np.uint32),
        account=np.ascontiguousarray(bound.position_account, dtype=np.int64),
        q=_f(bound.quantity), entry=_f(book.entry_price), entry_usd=_f(bound.entry_usd),
        signed=_f(bound.signed_notional),
        und=np.ascontiguousarray(table.underlying, dtype=np.int32),
        live=_b(bound.live), is_option=_b(table.is_option), inverse=_b(table.inverse),
        is_call=_b(table.is_call), strike=_f(table.strike), years=_f(bound.years),
        sigma=_f(bound.sigma), base=_f(bound.base_price), base_scaled=scaled,
        mark=_f(bound.mark), und_index=_f(bound.index))


def _scaled(bound: BoundBook) -> np.ndarray:
    """Per instrument: whether its base price is a mark that moves with the index (a live
    option whose expiry has a forward, a marked delta-one instrument)."""
    table = bound.book.instruments
    forwards = expiry_forwards(bound.book, bound.market)
    scaled = np.zeros(len(table.instruments), dtype=np.bool_)
    for row, instrument in enumerate(table.instruments):
        if not bound.live[row]:
            continue
        if table.is_option[row]:
            u = bound.underlyings[int(table.underlying[row])]
            scaled[row] = (u, int(table.expiry_ns[row])) in forwards
        else:
            scaled[row] = instrument.name in bound.market.marks
    return scaled


def collateral(bound: BoundBook, config: RiskConfig, revalued: frozenset[str],
               depeg: bool = False) -> lk.Collateral:
    """Collateral columns with the haircut parameters of ``book_haircuts`` (``revalued``:
    assets whose volatility part the model leaves out) and, with ``depeg``, the portfolio
    model's stablecoin depeg."""
    cfg = config.haircuts
    keys = bound.book.assets
    coin, stable, fixed, liquidity, cap, limit = KEPT.get(
        (config,), ("collateral", keys, bound.underlyings, revalued),
        lambda: _collateral_parameters(bound, config, revalued))
    return lk.Collateral(
        amount=np.ascontiguousarray(bound.book.collateral, dtype=np.float64).reshape(
            bound.account_count, len(keys)),
        price=_f(asset_prices(bound.book, bound.market)) if keys else np.zeros(0),
        coin=coin, haircuts=bool(cfg.enabled), fixed=fixed, liquidity=liquidity, cap=cap,
        limit=limit, stable=stable, depeg=bool(depeg and cfg.enabled),
        depeg_weight=float(cfg.depeg_weight), depeg_price=float(cfg.depeg_price))


def _collateral_parameters(bound: BoundBook, config: RiskConfig, revalued: frozenset[str]
                           ) -> tuple[np.ndarray, ...]:
    """Per collateral column: (coin's underlying or -1, stablecoin, fixed haircut, liquidity
    coefficient, haircut cap, concentration limit)."""
    cfg = config.haircuts
    keys = bound.book.assets
    stable = np.zeros(len(keys), dtype=np.bool_)
    coin = np.full(len(keys), -1, dtype=np.int64)
    for col, key in enumerate(keys):
        asset, _ = split_collateral_key(key)
        if asset in bound.underlyings:
            coin[col] = bound.underlyings.index(asset)
        stable[col] = asset in cfg.stablecoins
    columns = column_haircuts(cfg, keys, revalued)
    return coin, stable, columns.fixed, columns.liquidity, columns.cap, columns.limit


def charges(bound: BoundBook, config: RiskConfig) -> lk.Charges:
    """Isolated notional tiers per underlying (padded) and the short-option rule."""
    cfg = config.isolated
    tiers = [cfg.tiers_for(u) for u in bound.underlyings]
    width = max([len(t) for t in tiers] + [1])
    n_u = len(tiers)
    up_to, ir, mr = np.full((n_u, width), np.inf), np.zeros((n_u, width)), np.zeros((n_u, width))
    for v, ladder in enumerate(tiers):
        for t, tier in enumerate(ladder):
            up_to[v, t], ir[v, t], mr[v, t] = tier.up_to, tier.initial_rate, tier.maintenance_rate
    return lk.Charges(up_to=up_to, initial_rate=ir, maintenance_rate=mr,
                      n_tiers=np.array([len(t) for t in tiers], dtype=np.int64),
                      opt_base=float(cfg.option_initial_base),
                      opt_floor=float(cfg.option_initial_floor),
                      opt_maintenance=float(cfg.option_maintenance_rate))


Context = tuple[lk.BookArrays, lk.Collateral, Any, int]  # book, collateral, model, work size
_KNOWN: ContextVar[tuple[BoundBook, RiskConfig, dict[int, Any]] | None] = ContextVar(
    "known_results", default=None)


@contextmanager
def known_results(bound: BoundBook, config: RiskConfig,
                  results: Iterable[tuple[MarginModel, Any]]) -> Iterator[None]:
    """Within the block, searches on ``bound`` with ``config`` take today's result of a
    model from ``results`` ((model, its result on this bound book and config) pairs) instead
    of running it again."""
    token = _KNOWN.set((bound, config, {id(m): r for m, r in results}))
    try:
        yield
    finally:
        _KNOWN.reset(token)


def _today(bound: BoundBook, config: RiskConfig, model: MarginModel) -> Any:
    """The model's result on the bound book today (known, or computed)."""
    known = _KNOWN.get()
    if known is not None and known[0] is bound and known[1] is config and \
            id(model) in known[2]:
        return known[2][id(model)]
    return model.compute(bound, config)


def _portfolio(bound: BoundBook, config: RiskConfig, model: MarginModel) -> Context:
    table = bound.book.instruments
    template, revalued = KEPT.get(
        (table, bound.market, config), ("portfolio", bound.underlyings, bound.book.assets),
        lambda: _portfolio_template(bound, config), len(table.instruments))
    today = _today(bound, config, model).per_underlying
    worst = np.asarray(today["worst_scenario"], dtype=np.int64)
    on = worst >= 0
    level = np.where(on, today["scan_risk"] + today["contingency"], 0.0)
    move = np.where(on, template.moves[np.maximum(worst, 0)], 0.0)
    held, underlying = np.nonzero(level)  # row by row: each account's ascending
    offsets = np.zeros(bound.account_count + 1, dtype=np.int64)
    np.cumsum(np.bincount(held, minlength=bound.account_count), out=offsets[1:])
    ctx = template._replace(level_other=_f(level), direction_other=_f(np.sign(move)),
                            other_offsets=offsets, other_und=underlying.astype(np.int64))
    return (book_arrays(bound), collateral(bound, config, revalued, depeg=True), ctx,
            2 * template.moves.size + 2 * len(bound.underlyings))


def _portfolio_template(bound: BoundBook, config: RiskConfig
                        ) -> tuple[lk.PortfolioCtx, frozenset[str]]:
    """The portfolio context's parts that do not depend on today's result (scenarios,
    scenario vols, groups, correlations, rates; today's cells empty), and the assets the
    model revalues."""
    from margin_engine.margin.scenarios import scenario_columns, scenario_sigma

    cfg = config.portfolio
    columns = scenario_columns(cfg)
    ctx = lk.PortfolioCtx(
        sigma_s=_f(scenario_sigma(bound, cfg)), moves=columns.moves, shocks=columns.shocks,
        lin_moves=columns.linear, weights=columns.weights,
        ref_days=float(cfg.vol_shock_reference_days),
        p_short=float(cfg.vol_shock_power_short), p_long=float(cfg.vol_shock_power_long),
        floor=float(cfg.vol_floor), group=np.ascontiguousarray(bound.contingency_group,
                                                                dtype=np.int64),
        level_other=np.zeros((0, 0)), direction_other=np.zeros((0, 0)),
        other_offsets=np.zeros(1, dtype=np.int64), other_und=np.zeros(0, dtype=np.int64),
        rho=_f(bound.correlation),
        opt_rate=float(cfg.option_contingency_rate), lin_rate=float(cfg.linear_contingency_rate),
        max_offset=float(cfg.max_cross_offset), mm_fraction=float(cfg.maintenance_fraction),
        w_max=max(0.0, float(columns.weights.max(initial=0.0))),
        lin_max=float(np.abs(columns.linear).max(initial=0.0)),
        factor=max(1.0, float((1.0 + columns.moves).max(initial=1.0))) + 1.0,
        vol_scale=np.zeros(0), slope=np.zeros(0), curvature=np.zeros((0, 0)),
        dbase=np.zeros(0))
    ctx = ctx._replace(vol_scale=lk.vol_scales_nb(_f(bound.years), ctx))
    slope, curvature, dbase = lk.candidate_constants_nb(book_arrays(bound), ctx)
    ctx = ctx._replace(slope=slope, curvature=curvature, dbase=dbase)
    return ctx, coins_of(bound) | frozenset(config.haircuts.stablecoins)


def _isolated(bound: BoundBook, config: RiskConfig, model: MarginModel) -> Context:
    book = bound.book
    ctx = lk.IsolatedCtx(*charges(bound, config),
                         margin=_optional(book.position_margin, book),
                         leverage=_optional(book.position_leverage, book))
    return (book_arrays(bound), collateral(bound, config, frozenset()), ctx,
            4 * _max_len(bound))


def _cross(bound: BoundBook, config: RiskConfig, model: MarginModel) -> Context:
    today = _today(bound, config, model).per_underlying["maintenance_margin"]
    ctx = lk.CrossCtx(*charges(bound, config),
                      hedge_maintenance=float(config.cross.hedge_maintenance_rate),
                      maintenance_cells=_f(today))
    return book_arrays(bound), collateral(bound, config, frozenset()), ctx, 1


def _sensitivity(bound: BoundBook, config: RiskConfig, model: MarginModel) -> Context:
    from margin_engine.margin.sensitivity import (
        LAMBDA_BASE,
        Z99,
        instrument_sensitivities,
        underlying_gamma,
    )

    assert isinstance(model, SensitivityModel)
    params = model.params
    delta_1pct, vega, tenor_lo, weight_lo = instrument_sensitivities(bound, params)
    rw = np.array([params.risk_weight(u) for u in bound.underlyings])
    n_t = len(params.tenor_days)
    ctx = lk.SensitivityCtx(
        delta_1pct=_f(delta_1pct), vega=_f(vega),
        tenor_lo=np.ascontiguousarray(tenor_lo, dtype=np.int64), weight_lo=_f(weight_lo),
        rw=rw, sigma_u=rw / 100.0 * math.sqrt(365.0 / params.mpor_days) / Z99,
        vrw=float(params.vega_risk_weight),
        sf=np.array([0.5 * min(1.0, params.mpor_days / t) for t in params.tenor_days]),
        tenor_rho=_f(params.tenor_correlation), gamma=_f(underlying_gamma(bound, params)),
        lambda_base=float(LAMBDA_BASE), mm_fraction=float(params.maintenance_fraction))
    n_u = len(bound.underlyings)
    return (book_arrays(bound), collateral(bound, config, coins_of(bound)), ctx,
            7 * n_u + n_u * n_t)


Builder = Callable[[BoundBook, RiskConfig, MarginModel], Context]
BUILDERS: dict[type, Builder] = {
    PortfolioModel: _portfolio, IsolatedModel: _isolated, CrossModel: _cross,
    SensitivityModel: _sensitivity,
}


def supports(model: str, models: Mapping[str, MarginModel] | None = None) -> bool:
    """Whether ``model`` has a compiled gap (else the reference search is used)."""
    return type(get_model(model, models)) in BUILDERS


def account_levels(bound: BoundBook, model: str, config: RiskConfig, grid: FloatArray,
                   accounts: np.ndarray | None = None,
                   models: Mapping[str, MarginModel] | None = None
                   ) -> tuple[FloatArray, FloatArray] | None:
    """(down, up): accounts x underlyings, the closest root of adjusted equity - MM at or
    below / above each underlying's index on ``grid`` x index, refined by Brent (by Newton's
    steps with the portfolio model, to Brent's tolerance); None when
    the model has no compiled gap."""
    built = get_model(model, models)
    builder = BUILDERS.get(type(built))
    if builder is None:
        return None
    n_acct, n_u = bound.account_count, len(bound.underlyings)
    down, up = np.full((n_acct, n_u), np.nan), np.full((n_acct, n_u), np.nan)
    wanted = None if accounts is None else np.asarray(accounts)
    jobs = np.arange(n_acct, dtype=np.int64) if wanted is None else \
        np.nonzero(wanted)[0].astype(np.int64)
    exposure = np.ascontiguousarray(bound.collateral_exposure, dtype=np.float64)
    held = _held_by_underlying(bound, wanted)
    if jobs.size == 0 or not (any(count for _, count in held) or np.any(exposure[jobs] != 0.0)):
        return down, up
    context = builder(bound, config, built)
    max_rows = _max_len(bound)
    for u in range(n_u):
        instruments, positions = held[u]
        d, p = _search(context, jobs, u, float(bound.index[u]), grid, instruments, positions,
                       max_rows, exposure, (bound.book.instruments, bound.market, config))
        down[jobs, u], up[jobs, u] = d, p
    return down, up


def _held_by_underlying(bound: BoundBook, wanted: np.ndarray | None
                        ) -> list[tuple[np.ndarray, int]]:
    """Per underlying: the instruments the (wanted) accounts hold in it, and how many
    positions that is."""
    book = bound.book
    inst = book.position_instrument if wanted is None else \
        book.position_instrument[wanted[bound.position_account]]
    table = book.instruments
    held, starts, positions = held_by_underlying_nb(
        np.ascontiguousarray(inst), np.ascontiguousarray(table.underlying, dtype=np.int64),
        len(bound.underlyings))
    return [(held[starts[u]:starts[u + 1]], int(positions[u]))
            for u in range(len(bound.underlyings))]


def position_levels(bound: BoundBook, model: str, config: RiskConfig, grid: FloatArray,
                    models: Mapping[str, MarginModel] | None = None,
                    accounts: np.ndarray | None = None
                    ) -> tuple[FloatArray, FloatArray, FloatArray] | None:
    """(down, up, index per row) of every isolated position on its own margin (1 x positions;
    ``accounts``: a mask of the accounts searched), or None when the model is not the
    built-in isolated one."""
    built = get_model(model, models)
    if type(built) is not IsolatedModel:
        return None
    n_pos = bound.book.position_count
    down, up = np.full((1, n_pos), np.nan), np.full((1, n_pos), np.nan)
    position_index = np.full(n_pos, np.nan)
    today = built.compute(bound, config)
    maintenance = today.per_position["maintenance_margin"]
    table = bound.book.instruments
    book = bound.book
    context = (book_arrays(bound), collateral(bound, config, frozenset()),
               lk.PositionCtx(*charges(bound, config), held=_f(today.per_position["margin_held"]),
                              value_today=_f(bound.collateral_value)), 1)
    und = table.underlying[book.position_instrument]
    wanted = np.ones(book.position_count, dtype=np.bool_) if accounts is None else \
        np.asarray(accounts)[bound.position_account]
    for u in range(len(table.underlyings)):
        rows = np.nonzero((maintenance > 0.0) & (und == u) & wanted)[0].astype(np.int64)
        if rows.size == 0:
            continue
        index = float(bound.index[u])
        position_index[rows] = index
        d, p = _search(context, rows, u, index, grid, np.unique(book.position_instrument[rows]),
                       rows.size, 1, np.zeros((0, 0)), (table, bound.market, config))
        down[0, rows], up[0, rows] = d, p
    return down, up, position_index


def _search(context: Context, jobs: np.ndarray, u: int, index: float, grid: FloatArray,
            held: np.ndarray, positions: int, max_rows: int, exposure: np.ndarray,
            origin: tuple[Any, ...] | None = None) -> tuple[FloatArray, FloatArray]:
    """Both levels of every job on u (``held``: u's instruments in the jobs' positions,
    ``positions`` of them; ``exposure``: accounts x underlyings coin collateral, or empty for
    jobs that are positions; ``origin``: see ``StateTables.family``). Jobs with no position
    in u and no coin of u are left NaN."""
    bk, cl, ctx, work = context
    levels = index * grid
    j0 = _center(grid)
    width = lk.state_width(ctx)
    held = np.asarray(held, dtype=np.int64)
    down, up = np.empty(jobs.size), np.empty(jobs.size)
    evaluations = np.zeros(jobs.size, dtype=np.int64)

    no_chords = _NO_CHORDS
    prune = PRUNE and isinstance(ctx, lk.PortfolioCtx) and _weights_not_negative(ctx)
    newton = NEWTON and isinstance(ctx, lk.PortfolioCtx)

    def run(table: np.ndarray, table_row: np.ndarray, cum: np.ndarray,
            chords: tuple[np.ndarray, np.ndarray] = no_chords, threads: bool = True) -> None:
        def piece(a: int, b: int) -> None:
            lk.search_levels_nb(bk, cl, ctx, jobs, a, b, u, index, levels, j0, table,
                                table_row, cum, XTOL_RELATIVE * index, RTOL, max_rows,
                                work + max_rows, exposure, down, up, evaluations, *chords,
                                prune, newton)
        if threads:
            in_threads(jobs.size, piece, pieces_per_thread=SEARCH_PIECES)
        else:
            piece(0, jobs.size)

    if positions > TABLE_SHARING * held.size:
        table, cum = _state_table(bk, ctx, held, levels, index, width, origin)
        table_row = np.full(bk.und.shape[0], NO_ROW, dtype=np.uint32)
        table_row[held] = np.arange(held.size)
        run(table, table_row, cum, _chords(ctx, table, levels, j0))
    elif STATE_CACHE and 0 < held.size <= STATE_TABLES.capacity:
        with STATE_TABLES.family(bk, ctx, held, levels, width, origin) as (table, table_row):
            # one thread: the search fills the kept table as it reads it, and a row being
            # written (mark first) must not be read by another thread
            run(table, table_row, np.empty((0, levels.size, 2)), threads=False)
    else:
        run(np.empty((0, levels.size, width)), np.empty(0, dtype=np.uint32),
            np.empty((0, levels.size, 2)))
    STATS["evaluations"] += int(evaluations.sum())
    STATS["jobs"] += int(np.count_nonzero(evaluations))
    return down, up


def _state_table(bk: lk.BookArrays, ctx: Any, held: np.ndarray, levels: FloatArray,
                 index: float, width: int, origin: tuple[Any, ...] | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(states, cum) of the ``held`` instruments at every grid level (``fill_table_nb``),
    the rows kept for books bound to the same market taken from there (``shared_states``)."""
    def fill(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        table = np.empty((rows.size, levels.size, width))
        cum = np.empty((rows.size, levels.size, 2))
        in_threads(rows.size, lambda a, b: lk.fill_table_nb(bk, ctx, rows, a, b, levels, index,
                                                             table, cum))
        return table, cum

    kept = kept_rows()
    if kept is None or origin is None:
        return fill(held)
    instruments = origin[0].instruments
    family = (type(ctx).__name__, width, index, levels.tobytes())
    return kept.table([instruments[int(i)].name for i in held], family, held, fill)


SEARCH_PIECES = 64  # pieces of the jobs per thread: the costs of jobs vary, and the last
# piece taken keeps one thread busy while the other waits (with 8 a thread, up to 0.3 s of 4)
PRUNE = True  # Brent's steps leave out scenarios that cannot be the worst (portfolio model)
NEWTON = True  # Newton's steps refine a bracket before Brent (portfolio model)
CHORDS = True  # certify blocks of grid levels by chords (portfolio model, shared table)


def _chords(ctx: Any, table: np.ndarray, levels: FloatArray, j0: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(deviations, node): the chord deviations of the table's instruments on the blocks the
    bracket search can visit on either side of j0 (``level_kernels.chord_tree``), and each
    block's number by its two ends (NO_ROW: not a block); empty where the model has no chord
    bound (or its scenario weights are not all >= 0, which the bound assumes)."""
    if not (CHORDS and isinstance(ctx, lk.PortfolioCtx) and _weights_not_negative(ctx)):
        return _NO_CHORDS
    blocks = lk.chord_tree(j0, 0) + lk.chord_tree(j0, levels.size - 1)
    near = np.array([b[0] for b in blocks], dtype=np.int64)
    far = np.array([b[1] for b in blocks], dtype=np.int64)
    node = np.full((levels.size, levels.size), NO_ROW, dtype=np.uint32)
    node[near, far] = np.arange(near.size)
    node[far, near] = np.arange(near.size)
    deviations = np.empty((table.shape[0], near.size, 2))
    in_threads(table.shape[0], lambda a, b: lk.chord_deviations_nb(
        table, levels, near, far, a, b, deviations))
    return deviations, node


def _weights_not_negative(ctx: lk.PortfolioCtx) -> bool:
    """Whether the scenario weights are all >= 0, as the chord and candidate bounds assume (a
    weighted lower bound stays a lower bound). The answer for the last weights array asked
    about is kept (one what-if after another asks about the same one)."""
    global _LAST_WEIGHTS
    weights = ctx.weights
    last = _LAST_WEIGHTS
    if last[0] is weights:
        return last[1]
    answer = not bool(np.any(weights < 0.0))
    _LAST_WEIGHTS = (weights, answer)
    return answer


_LAST_WEIGHTS: tuple[np.ndarray | None, bool] = (None, False)
_NO_CHORDS = (np.empty((0, 0, 2)), np.empty((0, 0), dtype=np.uint32))  # no chord bound
_LAST_CENTER: tuple[np.ndarray | None, int] = (None, 0)


def _center(grid: FloatArray) -> int:
    """The grid's level of today's index (where it is 1.0), kept for the last grid asked."""
    global _LAST_CENTER
    last = _LAST_CENTER
    if last[0] is grid and grid[last[1]] == 1.0:
        return last[1]
    at = np.nonzero(grid == 1.0)[0]
    if at.size == 0:
        raise ValueError("the liquidation grid must hold 1.0 (today's index)")
    center = int(at[0])
    _LAST_CENTER = (grid, center)
    return center


class StateTables:
    """Instrument states on the search grid kept from one call to the next (a small book:
    one account's what-if after another at the same market), filled on first use of each
    (instrument, level) by the search itself (entries are NaN until then). Keyed by
    everything ``inst_state`` reads: the grid levels, the model's scenario constants and, per
    instrument, its bound numbers (mark, base, strike, expiry, vol, flags and its scenario
    vols), so a changed market or book reads other rows and the states are those the search
    would compute."""

    def __init__(self, capacity: int = 512, families: int = 4) -> None:
        self.capacity = capacity  # instruments per family (rows of 150 x width floats)
        self.families = families
        self._items: dict[Hashable, _Family] = {}
        self._lock = threading.Lock()

    @contextmanager
    def family(self, bk: lk.BookArrays, ctx: Any, held: np.ndarray, levels: FloatArray,
               width: int, origin: tuple[Any, ...] | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(table, table_row) with rows for the ``held`` instruments, locked while the
        caller's search reads and fills it. ``origin``: the objects ``bk``'s instrument
        columns and ``ctx``'s instrument states derive from (instrument table, market,
        config), under which their keys are kept."""
        keys = [_instrument_key(bk, ctx, int(i)) for i in held] if origin is None else \
            KEPT.get(origin, ("keys", type(ctx).__name__, held.tobytes()),
                     lambda: [_instrument_key(bk, ctx, int(i)) for i in held], held.size)
        with self._lock:
            found = self._family_for((type(ctx).__name__, width, levels.tobytes(),
                                      _scenario_key(ctx)), levels.size, width, len(keys))
            table_row = found.rows_of(keys, held, bk.und.shape[0], kept=origin is not None)
            found.grow(self.capacity)
            yield found.table, table_row

    def _family_for(self, key: Hashable, n_levels: int, width: int, wanted: int) -> _Family:
        found = self._items.pop(key, None)
        if found is None or found.free(self.capacity) < wanted:
            found = _Family(n_levels, width)
        self._items[key] = found  # most recent last
        while len(self._items) > self.families:
            self._items.pop(next(iter(self._items)))
        return found

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        """Families kept."""
        return len(self._items)


ROW_TABLES = 64  # instrument -> row tables kept per family (one per kept keys list)


class _Family:
    """One grid and scenario set: a table of instrument states, NaN where not yet filled."""

    def __init__(self, n_levels: int, width: int) -> None:
        self.table = np.full((0, n_levels, width), np.nan)
        self.rows: dict[Hashable, int] = {}
        self._row_tables: dict[int, tuple[list[Hashable], bytes, np.ndarray]] = {}

    def rows_of(self, keys: list[Hashable], held: np.ndarray, n_inst: int, kept: bool
                ) -> np.ndarray:
        """Per instrument of the book (``n_inst``), its row in the table (NO_ROW: none):
        ``held[k]``'s is the row of ``keys[k]`` (given one when new). With ``kept`` (a keys
        list kept between calls), the answer is kept for that list: a row, once given, stays."""
        if kept:
            found = self._row_tables.get(id(keys))
            if found is not None and found[0] is keys and found[2].shape[0] == n_inst and \
                    found[1] == held.tobytes():
                return found[2]
        table_row = np.full(n_inst, NO_ROW, dtype=np.uint32)
        table_row[held] = [self.row(key) for key in keys]
        if kept:
            if len(self._row_tables) >= ROW_TABLES:
                self._row_tables.clear()
            self._row_tables[id(keys)] = (keys, held.tobytes(), table_row)
        return table_row

    def free(self, capacity: int) -> int:
        return capacity - len(self.rows)

    def grow(self, capacity: int) -> None:
        """Room for every row handed out (doubling, at most ``capacity`` rows; the rows
        filled so far are copied)."""
        have = self.table.shape[0]
        if len(self.rows) <= have:
            return
        size = min(capacity, max(len(self.rows), 2 * have, 16))
        table = np.full((size, *self.table.shape[1:]), np.nan)
        table[:have] = self.table
        self.table = table

    def row(self, key: Hashable) -> int:
        found = self.rows.get(key)
        if found is None:
            found = self.rows[key] = len(self.rows)
        return found


def _instrument_key(bk: lk.BookArrays, ctx: Any, i: int) -> Hashable:
    """What ``inst_state`` reads of instrument i (its scenario vols with the portfolio
    model)."""
    own = (bool(bk.live[i]), bool(bk.is_option[i]), bool(bk.is_call[i]), _number(bk.strike[i]),
           _number(bk.years[i]), _number(bk.sigma[i]), _number(bk.base[i]),
           bool(bk.base_scaled[i]), _number(bk.mark[i]))
    if isinstance(ctx, lk.PortfolioCtx):
        return own + (ctx.sigma_s[i].tobytes(),)
    return own


def _number(value: float) -> float | None:
    """A float for a key: None for NaN (a delta-one instrument's strike and vol), which equals
    nothing, itself included, so a key holding it would never be found again."""
    number = float(value)
    return None if math.isnan(number) else number


def _scenario_key(ctx: Any) -> Hashable:
    if isinstance(ctx, lk.PortfolioCtx):
        return (ctx.moves.tobytes(), ctx.shocks.tobytes(), ctx.lin_moves.tobytes(),
                ctx.ref_days, ctx.p_short, ctx.p_long, ctx.floor)
    return None


STATE_CACHE = True  # keep small books' instrument states between calls (``StateTables``)
STATE_TABLES = StateTables()


def _max_len(bound: BoundBook) -> int:
    """The most positions an account of the book holds (at least 1)."""
    return max(1, int(longest_row_nb(bound.book.offsets)))


def _optional(values: FloatArray | None, book: Any) -> FloatArray:
    if values is None:
        return np.full(book.position_count, np.nan)
    return _f(values)


def _f(values: Any) -> FloatArray:
    return np.ascontiguousarray(values, dtype=np.float64)


def _b(values: Any) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.bool_)
