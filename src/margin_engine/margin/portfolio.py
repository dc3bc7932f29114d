"""`portfolio` (SPEC 3.3): scenario risk matrix with contingencies and correlation offsets.

With haircuts on, a stablecoin depeg is one more scenario: every stablecoin balance revalued at
``depeg_price``, its loss counted at ``depeg_weight`` and added to the aggregated IM,
    depeg = w x sum over stablecoin balances of amount x max(0, price - depeg_price),
    IM = max(agg, (1 - max_offset) x sum L_u) + depeg,  MM = mm_fraction x IM;
so stablecoins (like coin collateral of the scanned underlyings) lose only the liquidity, chain
and concentration parts of their haircut, not the volatility part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.core.kept import KEPT
from margin_engine.margin.common import coins_of, collateral_haircuts
from margin_engine.margin.config import PortfolioConfig, RiskConfig, VolDynamics
from margin_engine.margin.portfolio_kernel import portfolio_margin_nb, unsigned
from margin_engine.margin.protocol import MarginResult, ModelDefaults
from margin_engine.margin.scenarios import (
    scenario_columns,
    scenario_table,
    value_change_grid,
)


class PortfolioModel(ModelDefaults):
    name = "portfolio"
    revalues_coins = True
    incremental = True

    def compute(self, bound: BoundBook, config: RiskConfig) -> MarginResult:
        cfg = config.portfolio
        table = bound.book.instruments
        grid = KEPT.get((table, bound.market), ("value_change_grid", cfg),
                        lambda: value_change_grid(bound, cfg), len(table.instruments))
        return run_portfolio_kernel(bound, config, grid)

    def recompute(self, bound: BoundBook, config: RiskConfig, previous: MarginResult,
                  underlying: str) -> MarginResult:
        """After a move of ``underlying`` alone: the same result as ``compute``, with only that
        underlying's scenario P&L recomputed (the others are taken from ``previous``): only its
        instruments are priced on the scenarios (the other rows of the grid are never read)."""
        u = bound.underlyings.index(underlying)
        rows = np.nonzero(bound.book.instruments.underlying == u)[0]
        grid = value_change_rows(bound, config.portfolio, rows)
        return run_portfolio_kernel(bound, config, grid, previous=previous, only_underlying=u)

    def explain(self, bound: BoundBook, config: RiskConfig, result: MarginResult,
                account: int) -> dict[str, Any]:
        """The scenario risk per underlying, recomputed from scratch (scalar reference)."""
        from margin_engine.margin.explain import explain_portfolio

        return explain_portfolio(bound, config, account)


def rows_sigma(bound: BoundBook, cfg: PortfolioConfig, rows: np.ndarray) -> np.ndarray:
    """The instrument ``rows`` x scenarios vol before the shock (``scenario_sigma``'s rows):
    no price in it, so it holds while only prices move."""
    from margin_engine.margin.scenarios import scenario_sigma

    if cfg.vol_dynamics is VolDynamics.STICKY_MONEYNESS:
        return np.ascontiguousarray(scenario_sigma(bound, cfg)[rows])
    return np.repeat(bound.sigma[rows, np.newaxis], len(scenario_table(cfg)), axis=1)


def value_change_rows(bound: BoundBook, cfg: PortfolioConfig, rows: np.ndarray,
                      sigma: np.ndarray | None = None, width: int = 0) -> np.ndarray:
    """``value_change_grid`` for the instrument ``rows`` only (zeros elsewhere): the same
    numbers, from the same compiled pricing loop (``sigma``: ``rows_sigma`` when known;
    ``width``: that many columns, the ones past the scenarios zero)."""
    from margin_engine.margin.scenarios import fill_grid

    table = bound.book.instruments
    scenarios = scenario_table(cfg)
    columns = scenario_columns(cfg)
    out = np.zeros((len(table.instruments), max(width, len(scenarios))))
    if rows.size == 0:
        return out
    if sigma is None:
        sigma = rows_sigma(bound, cfg, rows)
    part = np.empty((rows.size, len(scenarios)))
    fill_grid(table.is_option[rows], table.is_call[rows], table.strike[rows], bound.years[rows],
              np.ascontiguousarray(sigma), bound.base_price[rows], bound.mark[rows], columns,
              cfg, np.ones(rows.size), part)
    part[~bound.live[rows]] = 0.0  # settled: a fixed cash value
    out[rows, :len(scenarios)] = part
    return out


def run_portfolio_kernel(bound: BoundBook, config: RiskConfig, grid: np.ndarray,
                         move_scale: np.ndarray | None = None,
                         previous: MarginResult | None = None,
                         only_underlying: int = -1) -> MarginResult:
    """Aggregate a precomputed instrument x scenario grid into account margins (the grid
    built with the same ``move_scale``)."""
    cfg = config.portfolio
    scenarios = scenario_table(cfg)
    columns = scenario_columns(cfg)
    book, table = bound.book, bound.book.instruments
    n_acct, n_u = book.account_count, len(bound.underlyings)
    im = np.empty(n_acct)
    mm = np.empty(n_acct)
    scan = np.empty((n_acct, n_u))
    cont = np.empty((n_acct, n_u))
    worst = np.empty((n_acct, n_u), dtype=np.int64)
    active = np.empty((n_acct, n_u), dtype=np.bool_)
    max_len = int(np.diff(book.offsets).max()) if n_acct else 0
    prev = previous.per_underlying if previous is not None else None
    prev_scan: np.ndarray = prev["scan_risk"] if prev is not None else scan
    prev_cont: np.ndarray = prev["contingency"] if prev is not None else cont
    prev_worst: np.ndarray = prev["worst_scenario"] if prev is not None else worst
    portfolio_margin_nb(
        unsigned(book.offsets, np.int64), unsigned(book.position_instrument, np.int32),
        bound.quantity, bound.signed_notional, unsigned(table.underlying, np.int32),
        bound.contingency_group, table.is_option & bound.live, bound.index,
        np.ascontiguousarray(grid), columns.weights, columns.moves, columns.linear,
        np.ascontiguousarray(bound.collateral_exposure),
        bound.correlation, cfg.option_contingency_rate, cfg.linear_contingency_rate,
        cfg.max_cross_offset, cfg.maintenance_fraction, max_len,
        np.ones(n_u) if move_scale is None else np.asarray(move_scale, dtype=np.float64),
        im, mm, scan, cont, worst, active,
        only_underlying if previous is not None else -1,
        prev_scan, prev_cont, prev_worst,
    )
    depeg = depeg_charge(bound, config)
    if depeg.any():
        im = im + depeg
        mm = cfg.maintenance_fraction * im
    revalued = coins_of(bound) | frozenset(config.haircuts.stablecoins)
    return MarginResult(
        model="portfolio", initial_margin=im, maintenance_margin=mm, active=active,
        per_underlying={"scan_risk": scan, "contingency": cont, "worst_scenario": worst},
        per_account={"depeg": depeg} if config.haircuts.enabled else {},
        scenarios=scenarios,
        collateral_haircut=collateral_haircuts(bound, config, revalued).deduction,
    )


def depeg_charge(bound: BoundBook, config: RiskConfig) -> np.ndarray:
    """Per account: depeg_weight x the loss of its stablecoins at the depeg price."""
    return collateral_depeg(bound.book.collateral, bound.book.assets,
                            bound.market.asset_prices, config)


def collateral_depeg(collateral: np.ndarray, assets: tuple[str, ...],
                     prices: Mapping[str, float], config: RiskConfig) -> np.ndarray:
    """``depeg_charge`` of the balances ``collateral`` (accounts x ``assets``) at ``prices``:
    sum over stablecoin columns of w x max(amount, 0) x max(0, price - depeg_price)."""
    cfg = config.haircuts
    charge = np.zeros(collateral.shape[0])
    if not cfg.enabled:
        return charge
    for col, key in enumerate(assets):
        asset = key.partition("@")[0]
        if asset in cfg.stablecoins:
            drop = max(0.0, prices[asset] - cfg.depeg_price)
            charge += cfg.depeg_weight * np.maximum(collateral[:, col], 0.0) * drop
    return charge
