"""Partial liquidation of one account.

Each position's score = maintenance margin freed by closing it / cost of closing it (the
penalty, penalty_rate x |notional|); positions are closed best score first (hedges, which free
no margin, are never closed first), each only as far as needed: the last one by the smallest
fraction (bisection to 1e-9) that brings equity after haircuts back to IM x target_buffer.
Closing realises the position's P&L into the settlement asset (equity unchanged) and pays the
penalty (equity falls).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from margin_engine.book.bound import BoundBook, bind_market
from margin_engine.book.columnar import ColumnarBook
from margin_engine.core.types import FloatArray
from margin_engine.liquidation.config import LiquidationConfig
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import get_model
from margin_engine.market.snapshot import MarketSnapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class Closure:
    position: int  # row within the account
    instrument: str
    size_closed: float  # signed, the part of the position removed
    notional: float  # |closed| at the mark
    realised_pnl: float
    penalty: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PartialLiquidation:
    closures: tuple[Closure, ...]
    book: ColumnarBook  # one account, after the closures (settlement asset updated)
    # Mark-to-market after the closures (targets use equity after haircuts); for positions on
    # their own margin, the closed positions' equity less penalties (see _positions_alone).
    equity: float
    initial_margin: float
    maintenance_margin: float
    target_reached: bool
    # Positions on their own margin, each on its own: the penalties their equity could pay and
    # the sum of their deficits beyond their margin (bad debt); None for shared equity.
    charged_penalty: float | None = None
    shortfall: float | None = None


def _state(book: ColumnarBook, market: MarketSnapshot, model: str,
           config: RiskConfig) -> tuple[float, float, float, BoundBook]:
    bound = bind_market(book, market)
    result = get_model(model).compute(bound, config)
    return (float(result.adjusted_equity(bound.equity())[0]), float(result.initial_margin[0]),
            float(result.maintenance_margin[0]), bound)


def _close(book: ColumnarBook, bound: BoundBook, row: int, fraction: float, settle: int,
           penalty_rate: float) -> tuple[ColumnarBook, Closure]:
    """Remove ``fraction`` of position ``row``: P&L realised, penalty paid, in settle column."""
    inst = int(book.position_instrument[row])
    closed_q = bound.quantity[row] * fraction
    pnl = float(closed_q * (bound.mark[inst] - bound.entry_usd[row]))
    notional = abs(float(bound.signed_notional[row])) * fraction
    penalty = penalty_rate * notional
    size = book.size.copy()
    size[row] -= book.size[row] * fraction
    collateral = book.collateral.copy()
    collateral[0, settle] += pnl - penalty
    closure = Closure(position=row, instrument=book.instruments.instruments[inst].name,
                      size_closed=float(book.size[row] * fraction), notional=notional,
                      realised_pnl=pnl, penalty=penalty)
    return replace(book, size=size, collateral=collateral), closure


def partially_liquidate(book: ColumnarBook, market: MarketSnapshot, model: str,
                        config: RiskConfig, liquidation: LiquidationConfig,
                        margin_multiplier: float = 1.0) -> PartialLiquidation:
    """``book`` holds one account whose assets include the settlement asset (priced in
    ``market``). Margin requirements are scaled by ``margin_multiplier`` (circuit breaker)."""
    settle = book.assets.index(liquidation.settlement_asset)
    alone = _positions_alone(book, market, model, config, liquidation, margin_multiplier)
    if alone is not None:
        return alone
    equity, initial, maintenance, bound = _state(book, market, model, config)

    def short_of_target(eq: float, im: float) -> bool:
        return eq < im * margin_multiplier * liquidation.target_buffer

    closures: list[Closure] = []
    if not short_of_target(equity, initial):
        return PartialLiquidation(closures=(), book=book, equity=float(bound.equity()[0]),
                                  initial_margin=initial, maintenance_margin=maintenance,
                                  target_reached=True)
    scores = _scores(book, bound, market, model, config, maintenance, liquidation.penalty_rate,
                     settle)
    for row in np.argsort(-scores, kind="stable"):
        if book.size[row] == 0.0:
            continue
        full, closure = _close(book, bound, int(row), 1.0, settle, liquidation.penalty_rate)
        eq_full, im_full, mm_full, bound_full = _state(full, market, model, config)
        if short_of_target(eq_full, im_full):
            book, bound = full, bound_full
            equity, initial, maintenance = eq_full, im_full, mm_full
            closures.append(closure)
            continue
        low, high = 0.0, 1.0
        while high - low > 1e-9:
            mid = 0.5 * (low + high)
            trial, _ = _close(book, bound, int(row), mid, settle, liquidation.penalty_rate)
            eq, im, _, _ = _state(trial, market, model, config)
            if short_of_target(eq, im):
                low = mid
            else:
                high = mid
        book, closure = _close(book, bound, int(row), high, settle, liquidation.penalty_rate)
        equity, initial, maintenance, bound = _state(book, market, model, config)
        closures.append(closure)
        return PartialLiquidation(closures=tuple(closures), book=book,
                                  equity=float(bound.equity()[0]), initial_margin=initial,
                                  maintenance_margin=maintenance, target_reached=True)
    return PartialLiquidation(closures=tuple(closures), book=book,
                              equity=float(bound.equity()[0]), initial_margin=initial,
                              maintenance_margin=maintenance,
                              target_reached=not short_of_target(equity, initial))


def _positions_alone(book: ColumnarBook, market: MarketSnapshot, model: str,
                     config: RiskConfig, liquidation: LiquidationConfig,
                     margin_multiplier: float) -> PartialLiquidation | None:
    """For a model whose positions carry their own margin (isolated): close, whole, each
    position whose equity e_p is below its MM; only its margin is at risk, so ``equity`` is
    the closed positions' margin + P&L less penalties (< 0: bad debt), the free balance apart.
    None for models whose positions share the account's equity."""
    bound = bind_market(book, market)
    result = get_model(model).compute(bound, config)
    if result.position_equity is None:
        return None
    settle = book.assets.index(liquidation.settlement_asset)
    position_mm = result.per_position["maintenance_margin"]
    at_risk = result.per_position["margin_held"] + result.per_position["unrealised_pnl"]
    below = (position_mm > 0.0) & (result.position_equity < margin_multiplier * position_mm) \
        & (book.size != 0.0)
    closures: list[Closure] = []
    left = charged = shortfall = 0.0
    for row in np.nonzero(below)[0].tolist():
        book, closure = _close(book, bound, int(row), 1.0, settle, liquidation.penalty_rate)
        closures.append(closure)
        own = float(at_risk[row])  # this position's margin + P&L: all it can lose
        paid = min(closure.penalty, max(own, 0.0))
        charged += paid
        shortfall += max(0.0, -own)
        left += max(own, 0.0) - paid
    after = bind_market(book, market)
    after_result = get_model(model).compute(after, config)
    return PartialLiquidation(closures=tuple(closures), book=book, equity=left,
                              initial_margin=float(after_result.initial_margin[0]),
                              maintenance_margin=float(after_result.maintenance_margin[0]),
                              target_reached=True, charged_penalty=charged, shortfall=shortfall)


def _scores(book: ColumnarBook, bound: BoundBook, market: MarketSnapshot, model: str,
            config: RiskConfig, maintenance: float, penalty_rate: float,
            settle: int) -> FloatArray:
    """Margin freed per unit of closing cost for each position (-inf for nothing freed). The
    closed P&L goes to the settlement column, as in a real closure: credited to another column
    (a coin) it would move the coin-collateral revaluation of the portfolio model's MM."""
    scores = np.full(book.position_count, -np.inf)
    for row in range(book.position_count):
        if book.size[row] == 0.0:
            continue
        without, closure = _close(book, bound, row, 1.0, settle, 0.0)
        _, _, mm_without, _ = _state(without, market, model, config)
        freed = maintenance - mm_without
        cost = max(penalty_rate * closure.notional, 1e-12)
        scores[row] = freed / cost if freed > 0 else -np.inf
    return scores
