"""Liquidation price: the index level of one underlying at which equity = MM, all else fixed.

f(S) = equity(S) - MM(S) is evaluated for every account at once on a log grid of index levels
in (0, 10 x index] (one market binding per level); the sign change nearest to today's index (in
log distance) brackets the root, which Brent's method then pins per account on a one-account
book. Null (NaN) when f has no root in the range. Marks of perps/futures and coin collateral
move with the index; vols are sticky strike.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    gap: FloatArray = bound.equity() - result.maintenance_margin
    return gap


def liquidation_prices(bound: BoundBook, model: str, config: RiskConfig,
                       accounts: np.ndarray | None = None,
                       models: Mapping[str, MarginModel] | None = None) -> FloatArray:
    """accounts x underlyings liquidation index levels (NaN: none within (0, 10 x index])."""
    from scipy.optimize import brentq

    book, market = bound.book, pinned_settlements(bound)
    names = {i.name: i.underlying for i in book.instruments.instruments}
    marked = marks_by_underlying(market, names)
    n_acct, n_u = bound.account_count, len(bound.underlyings)
    out = np.full((n_acct, n_u), np.nan)
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
            bracket = _nearest_bracket(values[row], levels, index)
            if bracket is None:
                continue
            low, high = bracket
            single = book_subset(book, [int(account)])

            def f(s: float, single: ColumnarBook = single, u: str = u) -> float:
                bound_s = bind_market(single, with_index(market, marked, u, s))
                return float(_gap(bound_s, model, config, models)[0])

            out[account, u_idx] = brentq(f, low, high, xtol=1e-12 * index, rtol=1e-15,
                                         maxiter=200)
    return out


def _exposed(bound: BoundBook) -> np.ndarray:
    from margin_engine.margin.common import active_cells

    exposed: np.ndarray = active_cells(bound) | (bound.collateral_exposure != 0.0)
    return exposed


def _nearest_bracket(values: FloatArray, levels: FloatArray,
                     index: float) -> tuple[float, float] | None:
    exact = np.nonzero(values == 0.0)[0]
    signs = np.sign(values)
    changes = np.nonzero(signs[:-1] * signs[1:] < 0)[0]
    options = [(abs(np.log(levels[j] / index)), float(levels[j]), float(levels[j]))
               for j in exact]
    options += [(min(abs(np.log(levels[j] / index)), abs(np.log(levels[j + 1] / index))),
                 float(levels[j]), float(levels[j + 1])) for j in changes]
    if not options:
        return None
    _, low, high = min(options)
    if low == high:  # an exact zero on the grid: widen a hair so brentq has a bracket
        return low * (1 - 1e-12), low * (1 + 1e-12)
    return low, high
