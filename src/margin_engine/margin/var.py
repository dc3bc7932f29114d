"""`var` (SPEC 3.5): filtered historical simulation VaR / expected shortfall.

History: daily UTC closes of every underlying, aligned on common days; log returns r_t.
EWMA filter: s2_t = lambda s2_{t-1} + (1 - lambda) r_{t-1}^2 (seeded with the first 30 days'
variance), z_t = r_t / s_t, today's vol s_now from the last return. Scenario returns rescale
to today: r*_t = z_t s_now, summed over overlapping h-day windows (MPOR h): R = sum r*, and
the price move is m = exp(R) - 1, the same date's move for every underlying (joint). Where a
DVOL history exists, the implied vols of that underlying move by DVOL_t / DVOL_{t-h} - 1.
Every position is fully revalued on each scenario (options by Black-76, sticky strike), and
coin collateral moves with its underlying.

Measure over the N most recent scenarios, with k = ceil(N (1 - c)) worst P&Ls:
VaR = -(k-th worst P&L), ES = -mean(k worst P&Ls). APC (EMIR RTS 153/2013 art. 28):
``buffer``: IM = (1 + 25 %) x measure; ``stressed_weight``: IM = 75 % x measure + 25 % x the
measure on unfiltered scenarios from the most volatile window of history; ``floor``: IM =
max(measure, measure on unfiltered scenarios over the last 10 years). MM = 0.8 x IM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

from margin_engine.book.bound import BoundBook
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.data.prices import PriceSeries
from margin_engine.margin.calibration import daily_closes
from margin_engine.margin.common import active_cells, coins_of, collateral_haircuts
from margin_engine.margin.config import ApcRule, RiskConfig, TailMeasure, VarConfig
from margin_engine.margin.protocol import MarginResult, ModelDefaults
from margin_engine.pricing.black76 import price_scalar_nb

CHUNK = 1024
SEED_DAYS = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class VarHistory:
    """Aligned daily history: days (ns), log returns (days-1 x underlyings), DVOL levels."""

    underlyings: tuple[str, ...]
    days_ns: IntArray
    closes: FloatArray  # days x underlyings
    dvol: FloatArray  # days x underlyings, NaN where no DVOL

    @staticmethod
    def from_series(prices: Mapping[str, PriceSeries],
                    dvol: Mapping[str, PriceSeries] | None = None) -> VarHistory:
        if not prices:
            raise InputError("at least one --history UNDERLYING=FILE", field="--history")
        names = tuple(sorted(prices))
        daily = {u: daily_closes(prices[u]) for u in names}
        common = daily[names[0]][0]
        for u in names[1:]:
            common = np.intersect1d(common, daily[u][0])
        if common.size < SEED_DAYS + 10:
            raise InputError(f"at least {SEED_DAYS + 10} common days of history",
                             field="--history", value=f"{common.size} days")
        closes = np.column_stack([daily[u][1][np.searchsorted(daily[u][0], common)]
                                  for u in names])
        vols = np.full(closes.shape, np.nan)
        for j, u in enumerate(names):
            if dvol and u in dvol:
                days, levels = daily_closes(dvol[u])
                at = np.searchsorted(days, common)
                ok = (at < days.size) & (days[np.minimum(at, days.size - 1)] == common)
                vols[ok, j] = levels[at[ok]]
        return VarHistory(underlyings=names, days_ns=common, closes=closes, dvol=vols)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioSet:
    moves: FloatArray  # underlyings x scenarios, relative price moves
    vol_shocks: FloatArray  # underlyings x scenarios, relative implied-vol moves
    end_days_ns: IntArray  # the last day of each scenario's window


def ewma_filter(log_returns: FloatArray, lam: float) -> tuple[FloatArray, FloatArray]:
    """(standardised returns z_t, today's vol s_now) per column, causal (s_t uses r_<t)."""
    var = np.empty_like(log_returns)
    var[0] = np.var(log_returns[:SEED_DAYS], axis=0, ddof=1)
    _ewma_recursion_nb(np.ascontiguousarray(log_returns), lam, var)
    now = np.sqrt(lam * var[-1] + (1 - lam) * log_returns[-1] ** 2)
    return log_returns / np.sqrt(var), now


@njit(cache=True)
def _ewma_recursion_nb(log_returns: FloatArray, lam: float, var: FloatArray) -> None:
    """var[t] = lam var[t-1] + (1 - lam) r[t-1]^2 for t >= 1 (var[0] given), per column."""
    for t in range(1, log_returns.shape[0]):
        for j in range(log_returns.shape[1]):
            r = log_returns[t - 1, j]
            var[t, j] = lam * var[t - 1, j] + (1 - lam) * (r * r)


def _windows(values: FloatArray, h: int) -> FloatArray:
    """Overlapping h-day sums along axis 0."""
    c = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    result: FloatArray = c[h:] - c[:-h]
    return result


def scenario_sets(history: VarHistory, cfg: VarConfig, wanted: tuple[str, ...]
                  ) -> dict[str, ScenarioSet]:
    """Filtered scenarios, and the unfiltered stressed / floor sets the APC options need."""
    missing = [u for u in wanted if u not in history.underlyings]
    if missing:
        raise InputError(f"history for every underlying of the book (have "
                         f"{list(history.underlyings)})", field="--history", value=missing[0])
    cols = [history.underlyings.index(u) for u in wanted]
    h = int(cfg.mpor_days)
    log_returns = np.diff(np.log(history.closes[:, cols]), axis=0)
    z, now = ewma_filter(log_returns, cfg.ewma_lambda)
    filtered = _windows(z[SEED_DAYS:] * now, h)
    raw = _windows(log_returns, h)
    dvol = history.dvol[:, cols]
    shocks_all = np.nan_to_num(dvol[h:] / dvol[:-h] - 1.0, nan=0.0)  # aligned to window ends
    end_days = history.days_ns[h:]  # window over returns t-h+1..t ends on day t
    count = int(cfg.scenarios)

    def make(sums: FloatArray, offset: int, take: slice) -> ScenarioSet:
        ends = end_days[offset:][take]
        shocks = shocks_all[offset:][take]
        return ScenarioSet(moves=np.ascontiguousarray(np.expm1(sums[take]).T),
                           vol_shocks=np.ascontiguousarray(shocks.T), end_days_ns=ends)

    sets = {"current": make(filtered, SEED_DAYS, slice(-count, None))}
    window = int(cfg.stressed_window_days)
    if raw.shape[0] > window:
        vol = np.sqrt(_windows(log_returns**2, window).sum(axis=1))
        start = int(np.argmax(vol))
        sets["stressed"] = make(raw[start:start + window], 0, slice(None))
    else:
        sets["stressed"] = make(raw, 0, slice(None))
    floor_days = int(cfg.floor_years * 365)
    sets["floor"] = make(raw, 0, slice(-floor_days, None))
    return sets


@njit(cache=True)
def _var_grid_nb(is_option: np.ndarray, is_call: np.ndarray, strike: FloatArray,
                 years: FloatArray, sigma: FloatArray, base: FloatArray, mark: FloatArray,
                 und: np.ndarray, moves: FloatArray, shocks: FloatArray, vol_floor: float,
                 out: FloatArray) -> None:
    for i in range(is_option.shape[0]):
        u = und[i]
        for s in range(moves.shape[1]):
            m = moves[u, s]
            if not is_option[i]:
                out[i, s] = base[i] * m
            else:
                vol = max(vol_floor, sigma[i] * (1.0 + shocks[u, s]))
                out[i, s] = price_scalar_nb(base[i] * (1.0 + m), strike[i], years[i], vol,
                                            is_call[i]) - mark[i]


@njit(cache=True, parallel=True)
def _tail_nb(offsets: IntArray, pos_inst: np.ndarray, pos_q: FloatArray, grid: FloatArray,
             coll: FloatArray, moves: FloatArray, k: int, var_out: FloatArray,
             es_out: FloatArray, worst_out: IntArray) -> None:
    n_acct = offsets.shape[0] - 1
    n_s = grid.shape[1]
    n_u = moves.shape[0]
    n_chunks = (n_acct + CHUNK - 1) // CHUNK
    for c in prange(n_chunks):
        pnl = np.empty(n_s)
        for a in range(c * CHUNK, min(n_acct, (c + 1) * CHUNK)):
            pnl[:] = 0.0
            for p in range(offsets[a], offsets[a + 1]):
                i = pos_inst[p]
                q = pos_q[p]
                for s in range(n_s):
                    pnl[s] += q * grid[i, s]
            for u in range(n_u):
                e = coll[a, u]
                if e != 0.0:
                    for s in range(n_s):
                        pnl[s] += e * moves[u, s]
            worst_out[a] = np.argmin(pnl)
            part = np.partition(pnl, k - 1)
            var_out[a] = max(0.0, -float(part[k - 1]))
            es_out[a] = max(0.0, -float(np.mean(part[:k])))


def tail_measures(bound: BoundBook, scenarios: ScenarioSet,
                  cfg: VarConfig) -> tuple[FloatArray, FloatArray, IntArray]:
    """(VaR, ES, index of the worst scenario) per account on one scenario set, whose rows
    follow the bound book's underlyings."""
    table, book = bound.book.instruments, bound.book
    n_inst, n_s = len(table.instruments), scenarios.moves.shape[1]
    moves, shocks = scenarios.moves, scenarios.vol_shocks
    grid = np.empty((n_inst, n_s))
    _var_grid_nb(table.is_option, table.is_call, table.strike, bound.years, bound.sigma,
                 bound.base_price, bound.mark, table.underlying, moves, shocks, cfg.vol_floor,
                 grid)
    grid[~bound.live] = 0.0  # settled: a fixed cash value
    k = max(1, math.ceil(n_s * (1 - cfg.confidence) - 1e-9))
    var = np.empty(book.account_count)
    es = np.empty(book.account_count)
    worst = np.empty(book.account_count, dtype=np.int64)
    _tail_nb(book.offsets, book.position_instrument, bound.quantity, grid,
             np.ascontiguousarray(bound.collateral_exposure), moves, k, var, es, worst)
    return var, es, worst


class VarModel(ModelDefaults):
    name = "var"
    revalues_coins = True
    needs_history = True

    def __init__(self, history: VarHistory) -> None:
        self.history = history

    def compute(self, bound: BoundBook, config: RiskConfig) -> MarginResult:
        cfg = config.var
        wanted = bound.underlyings
        sets = scenario_sets(self.history, cfg, wanted)
        var, es, worst = tail_measures(bound, sets["current"], cfg)
        by_es = cfg.measure is TailMeasure.ES
        measure = es if by_es else var
        components = {"var": var, "es": es}
        if cfg.apc is ApcRule.BUFFER:
            initial = (1 + cfg.apc_buffer) * measure
        elif cfg.apc in (ApcRule.STRESSED_WEIGHT, ApcRule.FLOOR):
            stressed = cfg.apc is ApcRule.STRESSED_WEIGHT
            other_var, other_es, _ = tail_measures(
                bound, sets["stressed" if stressed else "floor"], cfg)
            other = other_es if by_es else other_var
            components[f"{cfg.apc.value}_measure"] = other
            initial = ((1 - cfg.stressed_weight) * measure + cfg.stressed_weight * other
                       if stressed else np.maximum(measure, other))
        else:
            initial = measure.copy()
        ends = sets["current"].end_days_ns
        components["worst_scenario_day"] = (ends[worst] // 86_400_000_000_000).astype(
            np.float64)
        return MarginResult(
            model=self.name, initial_margin=initial,
            maintenance_margin=cfg.maintenance_fraction * initial,
            active=active_cells(bound) | (bound.collateral_exposure != 0.0),
            per_account=components,
            collateral_haircut=collateral_haircuts(bound, config, coins_of(bound)).deduction,
        )

    def explain(self, bound: BoundBook, config: RiskConfig, result: MarginResult,
                account: int) -> dict[str, Any]:
        """The measures and the worst scenario day of the account."""
        from margin_engine.margin.explain import explain_var

        return explain_var(bound, result, account)

    def describe(self) -> dict[str, str]:
        return {"first_day": ns_to_iso(int(self.history.days_ns[0])),
                "last_day": ns_to_iso(int(self.history.days_ns[-1]))}
