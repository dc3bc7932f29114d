"""Liquidation prices: the index levels of one underlying at which equity (after collateral
haircuts) = MM, all else fixed.

f(S) = equity(S) - MM(S) on a log grid of index levels in (0, 10 x index]: the sign change
closest below today's index brackets the ``down`` root and the one closest above it the ``up``
root; Brent's method pins each (the vectorised search: Newton's steps with the portfolio
model, to Brent's tolerance). ``nearest`` is whichever of the two lies closer to the index
in log distance (the single ``liquidation_price`` of the JSON contract). NaN where f has no root
on that side within the range. Marks of perps/futures and coin collateral move with the index;
vols are sticky strike; settled positions stay fixed cash.

``liquidation_levels`` binds the book once and searches every account in one compiled pass
(``vector_levels``: the built-in isolated, cross, portfolio and sensitivity models); other
models (var, models built by callers) use ``liquidation_levels_reference``, the independent
per-account search that rebinds the market at every step (and the oracle of the tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook, bind_market, pinned_settlements
from margin_engine.book.columnar import ColumnarBook, book_subset
from margin_engine.core.types import FloatArray
from margin_engine.liquidation.shocks import marks_by_underlying, with_index
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.protocol import MarginModel
from margin_engine.margin.registry import get_model

GRID = np.concatenate([np.geomspace(1e-3, 1.0, 90, endpoint=False), np.geomspace(1.0, 10.0, 60)])
UPPER_MULTIPLE = 10.0


def _gap(bound: BoundBook, model: str, config: RiskConfig,
         models: Mapping[str, MarginModel] | None = None) -> FloatArray:
    result = get_model(model, models).compute(bound, config)
    gap: FloatArray = result.maintenance_gap(bound.equity(), bound.position_account)
    return gap


@dataclass(frozen=True, slots=True)
class LiquidationLevels:
    """accounts x underlyings index levels (NaN where none)."""

    down: FloatArray  # the closest root at or below today's index
    up: FloatArray  # the closest root above it
    nearest: FloatArray  # the closer of the two in log distance

    def distance_pct(self, index: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(down, up) as percent moves of each underlying's index (NaN where none)."""
        return 100.0 * (self.down / index - 1.0), 100.0 * (self.up / index - 1.0)


def liquidation_levels(bound: BoundBook, model: str, config: RiskConfig,
                       accounts: np.ndarray | None = None,
                       models: Mapping[str, MarginModel] | None = None) -> LiquidationLevels:
    """Both liquidation levels of every (wanted) account on every underlying it is exposed to."""
    from margin_engine.liquidation.vector_levels import account_levels

    found = account_levels(bound, model, config, GRID, accounts, models)
    if found is None:
        return liquidation_levels_reference(bound, model, config, accounts, models)
    return _with_nearest(found[0], found[1], bound.index[np.newaxis, :])


def liquidation_levels_reference(bound: BoundBook, model: str, config: RiskConfig,
                                 accounts: np.ndarray | None = None,
                                 models: Mapping[str, MarginModel] | None = None
                                 ) -> LiquidationLevels:
    """``liquidation_levels`` by a per-account search: f on the grid from one market binding
    per level, then Brent per account on a one-account book rebound at every step."""
    from scipy.optimize import brentq

    book, market = bound.book, pinned_settlements(bound)
    names = {i.name: i.underlying for i in book.instruments.instruments}
    marked = marks_by_underlying(market, names)
    n_acct, n_u = bound.account_count, len(bound.underlyings)
    down, up = np.full((n_acct, n_u), np.nan), np.full((n_acct, n_u), np.nan)
    wanted = np.ones(n_acct, dtype=np.bool_) if accounts is None else accounts
    exposed = _exposed(bound)
    for u_idx, u in enumerate(bound.underlyings):
        index = float(bound.index[u_idx])
        candidates = np.nonzero(wanted & exposed[:, u_idx])[0]
        if candidates.size == 0:
            continue
        sub = book_subset(book, candidates.tolist())
        levels = index * GRID
        values = np.column_stack([
            _gap(bind_market(sub, with_index(market, marked, u, float(s))), model, config,
                 models)
            for s in levels])
        for row, account in enumerate(candidates):
            single = book_subset(book, [int(account)])

            def f(s: float, single: ColumnarBook = single, u: str = u) -> float:
                bound_s = bind_market(single, with_index(market, marked, u, s))
                return float(_gap(bound_s, model, config, models)[0])

            below, above = _brackets(values[row], levels, index)
            for bracket, out in ((below, down), (above, up)):
                if bracket is not None:
                    out[account, u_idx] = brentq(f, bracket[0], bracket[1],
                                                 xtol=1e-12 * index, rtol=1e-15, maxiter=200)
    return _with_nearest(down, up, bound.index[np.newaxis, :])


def liquidation_prices(bound: BoundBook, model: str, config: RiskConfig,
                       accounts: np.ndarray | None = None,
                       models: Mapping[str, MarginModel] | None = None) -> FloatArray:
    """accounts x underlyings: the liquidation level nearest today's index (NaN: none)."""
    return liquidation_levels(bound, model, config, accounts, models).nearest


def position_liquidation_levels(bound: BoundBook, model: str, config: RiskConfig,
                                models: Mapping[str, MarginModel] | None = None,
                                accounts: np.ndarray | None = None) -> LiquidationLevels:
    """Per position (as 1 x positions arrays): where each position on its own margin meets its
    MM as its underlying's index moves (NaN elsewhere; ``accounts``: a mask of the accounts
    whose positions are searched). The margin it holds is today's share of the account's
    collateral, so it follows the collateral's value (coin collateral moves with its price)."""
    from margin_engine.liquidation.vector_levels import position_levels

    found = position_levels(bound, model, config, GRID, models, accounts)
    if found is None:
        return position_liquidation_levels_reference(bound, model, config, models, accounts)
    return _with_nearest(found[0], found[1], found[2])


def position_liquidation_levels_reference(bound: BoundBook, model: str, config: RiskConfig,
                                          models: Mapping[str, MarginModel] | None = None,
                                          accounts: np.ndarray | None = None
                                          ) -> LiquidationLevels:
    """``position_liquidation_levels`` by a per-position search rebinding the market."""
    from scipy.optimize import brentq

    n_pos = bound.book.position_count
    down, up = np.full((1, n_pos), np.nan), np.full((1, n_pos), np.nan)
    today = get_model(model, models).compute(bound, config)
    nearest = np.full((1, n_pos), np.nan)
    if today.position_equity is None:
        return LiquidationLevels(down=down, up=up, nearest=nearest)
    held = today.per_position["margin_held"]
    book, market = bound.book, pinned_settlements(bound)
    table = book.instruments
    marked = marks_by_underlying(market, {i.name: i.underlying for i in table.instruments})
    position_index = np.empty(n_pos)

    def gaps(sub: ColumnarBook, rows_of_sub: np.ndarray, accounts: list[int], u: str,
             level: float) -> FloatArray:
        moved = bind_market(sub, with_index(market, marked, u, level))
        value_today = bound.collateral_value[accounts]
        follows = np.divide(moved.collateral_value, value_today,
                            out=np.ones(len(accounts)), where=value_today > 0.0)
        result = _isolated_result(moved, model, config, models,
                                  held[rows_of_sub] * follows[moved.position_account])
        assert result.position_equity is not None
        gap: FloatArray = result.position_equity - result.per_position["maintenance_margin"]
        return gap

    for u_idx, u in enumerate(bound.underlyings):
        rows = np.nonzero((today.per_position["maintenance_margin"] > 0.0)
                          & (table.underlying[book.position_instrument] == u_idx)
                          & (True if accounts is None
                             else np.asarray(accounts)[bound.position_account]))[0]
        if rows.size == 0:
            continue
        index = float(bound.index[u_idx])
        position_index[rows] = index
        holders = np.unique(bound.position_account[rows]).tolist()
        sub_rows = np.concatenate([np.arange(book.offsets[a], book.offsets[a + 1])
                                   for a in holders])
        sub = book_subset(book, holders)
        levels = index * GRID
        values = np.column_stack([gaps(sub, sub_rows, holders, u, float(s)) for s in levels])
        where = {int(r): k for k, r in enumerate(sub_rows.tolist())}
        for row in rows.tolist():
            a = int(bound.position_account[row])
            own = np.arange(book.offsets[a], book.offsets[a + 1])
            single = book_subset(book, [a])  # the root search binds this account alone
            k_own = int(row - book.offsets[a])

            def f(s: float, single: ColumnarBook = single, own: np.ndarray = own,
                  a: int = a, k_own: int = k_own, u: str = u) -> float:
                return float(gaps(single, own, [a], u, s)[k_own])

            below, above = _brackets(values[where[row]], levels, index)
            for bracket, out in ((below, down), (above, up)):
                if bracket is not None:
                    out[0, row] = brentq(f, bracket[0], bracket[1], xtol=1e-12 * index,
                                         rtol=1e-15, maxiter=200)
    return _with_nearest(down, up, position_index)


def _with_nearest(down: FloatArray, up: FloatArray, index: FloatArray) -> LiquidationLevels:
    """Both levels, and the one closer to ``index`` in log distance (down on a tie)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        closer_down = np.abs(np.log(down / index)) <= np.abs(np.log(up / index))
    nearest = np.where(np.isnan(up) | (~np.isnan(down) & closer_down), down, up)
    return LiquidationLevels(down=down, up=up, nearest=nearest)


def _isolated_result(bound: BoundBook, model: str, config: RiskConfig,
                     models: Mapping[str, MarginModel] | None, held: FloatArray) -> Any:
    """The model's result with each position's margin fixed at ``held``."""
    from dataclasses import replace

    fixed = replace(bound.book, position_margin=held)
    return get_model(model, models).compute(replace(bound, book=fixed), config)


def _exposed(bound: BoundBook) -> np.ndarray:
    from margin_engine.margin.common import active_cells

    exposed: np.ndarray = active_cells(bound) | (bound.collateral_exposure != 0.0)
    return exposed


def _brackets(values: FloatArray, levels: FloatArray, index: float
              ) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """(closest bracket at or below ``index``, closest bracket above it) of a sign change of
    ``values`` over ``levels`` (ascending; an exact zero is widened by a hair for Brent)."""
    below: tuple[float, float] | None = None
    above: tuple[float, float] | None = None
    for j in range(levels.size):
        if values[j] == 0.0:
            pair = (float(levels[j]) * (1 - 1e-12), float(levels[j]) * (1 + 1e-12))
        elif j + 1 < levels.size and values[j] * values[j + 1] < 0.0:
            pair = (float(levels[j]), float(levels[j + 1]))
        else:
            continue
        if pair[1] <= index * (1 + 1e-12):
            below = pair  # ascending: the last one found is the closest below
        elif above is None:
            above = pair
    return below, above
