"""Portfolio scenario grid (SPEC 3.3): each distinct instrument priced once per scenario.

Scenarios in tie-break order: price moves ascending, each with vol down / same / up (weight 1),
then the extended moves with vol up only (weight 1/3).
Vol shock: sigma' = max(floor, sigma_s x (1 + k x (30 / T_days)^p)), T_days = max(1, 365 T),
p = 0.30 when T_days < 30 else 0.13. sigma_s is the vol before the shock: sticky strike (default)
keeps each strike's vol, sigma_s = sigma(T, K); sticky moneyness reads the smile at the moved
index, sigma_s = sigma(T, K / (1 + m)) (the same log-moneyness ln(K / (S (1 + m)))).
Scenario value change per unit of quantity q:
    option:     Black76(F x (1 + m), K, T, sigma') - mark   (F: the option's expiry forward)
    settled (at or past expiry): 0
    delta-one:  base_price x m_lin   (perp/future/spot marks move with the index)
where m_lin = m on the standard grid and, on the extended moves, m clamped to the standard grid's
extreme move of the same sign (SPEC 3.3: only options are re-shocked at -33 % / +50 %; linear
instruments and coin collateral are revalued at -16 % / +16 % there).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from margin_engine.book.bound import BoundBook
from margin_engine.core.types import FloatArray
from margin_engine.margin.config import PortfolioConfig, VolDynamics
from margin_engine.pricing.black76 import price_scalar_nb


@functools.lru_cache(maxsize=64)
def scenario_table(cfg: PortfolioConfig) -> tuple[tuple[float, float, float], ...]:
    """(price move, vol shock k, weight) in tie-break order."""
    grid = [(m, k, 1.0) for m in cfg.price_moves for k in cfg.vol_shocks]
    grid += [(m, cfg.extended_vol_shock, cfg.extended_weight) for m in cfg.extended_moves]
    return tuple(grid)


@functools.lru_cache(maxsize=64)
def linear_moves(cfg: PortfolioConfig) -> tuple[float, ...]:
    """Per scenario, the move applied to linear instruments and coin collateral: the scenario's
    move clamped to [min, max] of the standard grid (identity on the standard grid itself)."""
    low, high = min(cfg.price_moves), max(cfg.price_moves)
    return tuple(min(high, max(low, move)) for move, _, _ in scenario_table(cfg))


class ScenarioColumns(NamedTuple):
    """``scenario_table`` and ``linear_moves`` as arrays (shared: read, never written)."""

    moves: FloatArray
    shocks: FloatArray
    weights: FloatArray
    linear: FloatArray


@functools.lru_cache(maxsize=64)
def scenario_columns(cfg: PortfolioConfig) -> ScenarioColumns:
    table = scenario_table(cfg)
    return ScenarioColumns(moves=np.array([s[0] for s in table]),
                           shocks=np.array([s[1] for s in table]),
                           weights=np.array([s[2] for s in table]),
                           linear=np.array(linear_moves(cfg)))


def scenario_sigma(bound: BoundBook, cfg: PortfolioConfig) -> FloatArray:
    """instruments x scenarios vol before the shock (NaN rows for non-options)."""
    table = bound.book.instruments
    moves = scenario_columns(cfg).moves
    out = np.repeat(bound.sigma[:, np.newaxis], moves.size, axis=1)
    if cfg.vol_dynamics is not VolDynamics.STICKY_MONEYNESS:
        return out
    for u_idx, surface in enumerate(bound.surfaces):
        rows = np.nonzero(table.is_option & bound.live & (table.underlying == u_idx))[0]
        if rows.size and surface is not None:
            for s, move in enumerate(moves):
                out[rows, s] = surface.sigma(bound.market.vol_years(bound.years[rows]),
                                             table.strike[rows] / (1 + move))
    return out


@njit(cache=True, inline="always")
def _grid_row(i: int, is_option: np.ndarray, is_call: np.ndarray, strike: FloatArray,
              years: FloatArray, sigma: FloatArray, base: FloatArray, mark: FloatArray,
              moves: FloatArray, lin_moves: FloatArray, shocks: FloatArray, ref_days: float,
              p_short: float, p_long: float, floor: float, scale: FloatArray,
              out: FloatArray) -> None:
    """Instrument i's value change on every scenario: a delta-one's base x linear move x its
    scale; an option's Black-76 value at the moved base and the shocked vol, less its mark."""
    if not is_option[i]:
        for s in range(moves.shape[0]):
            out[i, s] = base[i] * lin_moves[s] * scale[i]
        return
    t_days = max(1.0, years[i] * 365.0)
    power = p_short if t_days < ref_days else p_long
    vol_scale = (ref_days / t_days) ** power
    for s in range(moves.shape[0]):
        shocked = max(floor, sigma[i, s] * (1.0 + shocks[s] * vol_scale))
        value = price_scalar_nb(base[i] * (1.0 + moves[s] * scale[i]), strike[i],
                                years[i], shocked, is_call[i])
        out[i, s] = value - mark[i]


@njit(cache=True)
def _grid_nb(is_option: np.ndarray, is_call: np.ndarray, strike: FloatArray, years: FloatArray,
             sigma: FloatArray, base: FloatArray, mark: FloatArray, moves: FloatArray,
             lin_moves: FloatArray, shocks: FloatArray, ref_days: float, p_short: float,
             p_long: float, floor: float, scale: FloatArray, out: FloatArray) -> None:
    for i in range(is_option.shape[0]):
        _grid_row(i, is_option, is_call, strike, years, sigma, base, mark, moves, lin_moves,
                  shocks, ref_days, p_short, p_long, floor, scale, out)


@njit(cache=True, parallel=True)
def _grid_parallel_nb(is_option: np.ndarray, is_call: np.ndarray, strike: FloatArray,
                      years: FloatArray, sigma: FloatArray, base: FloatArray, mark: FloatArray,
                      moves: FloatArray, lin_moves: FloatArray, shocks: FloatArray,
                      ref_days: float, p_short: float, p_long: float, floor: float,
                      scale: FloatArray, out: FloatArray) -> None:
    for i in prange(is_option.shape[0]):
        _grid_row(i, is_option, is_call, strike, years, sigma, base, mark, moves, lin_moves,
                  shocks, ref_days, p_short, p_long, floor, scale, out)


PARALLEL_GRID = 256  # instruments from which the grid is priced on every thread (below, the
# threads' start-up costs more than it saves: a what-if's few instruments stay on one)


def fill_grid(is_option: np.ndarray, is_call: np.ndarray, strike: FloatArray,
              years: FloatArray, sigma: FloatArray, base: FloatArray, mark: FloatArray,
              columns: ScenarioColumns, cfg: PortfolioConfig, scale: FloatArray,
              out: FloatArray) -> None:
    """out[i, s] = instrument i's value change per unit on scenario s (``_grid_row``), the
    same numbers on one thread or on all."""
    kernel = _grid_parallel_nb if is_option.shape[0] >= PARALLEL_GRID else _grid_nb
    kernel(is_option, is_call, strike, years, sigma, base, mark, columns.moves,
           columns.linear, columns.shocks, cfg.vol_shock_reference_days,
           cfg.vol_shock_power_short, cfg.vol_shock_power_long, cfg.vol_floor, scale, out)


def value_change_grid(bound: BoundBook, cfg: PortfolioConfig,
                      move_scale: FloatArray | None = None) -> FloatArray:
    """instruments x scenarios USD value change per unit of position quantity; ``move_scale``
    (per underlying) multiplies the price moves, e.g. to a forecast price range."""
    table = bound.book.instruments
    scenarios = scenario_table(cfg)
    columns = scenario_columns(cfg)
    out = np.empty((len(table.instruments), len(scenarios)))
    fill_grid(table.is_option, table.is_call, table.strike, bound.years,
              np.ascontiguousarray(scenario_sigma(bound, cfg)), bound.base_price, bound.mark,
              columns, cfg, _instrument_scale(bound, move_scale), out)
    out[~bound.live] = 0.0  # settled: a fixed cash value
    return out


def _instrument_scale(bound: BoundBook, move_scale: FloatArray | None) -> FloatArray:
    table = bound.book.instruments
    if move_scale is None:
        return np.ones(len(table.instruments))
    result: FloatArray = np.asarray(move_scale, dtype=np.float64)[table.underlying]
    return result


def vol_shock_scale(years: float, cfg: PortfolioConfig) -> float:
    """(30 / T_days)^p for one expiry (scalar helper for explanations)."""
    t_days = max(1.0, years * 365.0)
    power = cfg.vol_shock_power_short if t_days < cfg.vol_shock_reference_days else \
        cfg.vol_shock_power_long
    return math.pow(cfg.vol_shock_reference_days / t_days, power)
