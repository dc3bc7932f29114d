"""Scenario revaluation shared by the scenario-based profiles (Deribit PM, Derive PMRM, OKX PM).

A scenario moves one underlying's price by m (a fraction) and shocks vols:

    sigma' = max(floor, sigma x (1 + k x (30 / T_days)^p)),  T_days floored at 1,
    k = +range_up (UP), 0 (SAME), -range_down (DOWN); p = power_short if T_days < 30 else
    power_long; UP also floors sigma' at ``min_vol_up``.

Per position, USD P&L from the state: live option q x (B76(F (1 + m), K, T, sigma') - mark);
delta-one q x mark x m_lin, where m_lin = m, except on ``options_only`` (extended) scenarios
where delta-one positions move only to the standard range's end of the same sign. Settled
positions are cash (0). Moves are fractions of each underlying's range when ``scaled``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from margin_engine.core.bounds import (
    DAMPENING,
    REFERENCE_DAYS,
    VOL_DOWN,
    VOL_LEVEL,
    VOL_UP,
    bounded,
)
from margin_engine.core.types import BoolArray, FloatArray
from margin_engine.pricing.black76 import price_scalar_nb
from margin_engine.profiles.base import ProfileBook, State


class VolShock(enum.Enum):
    UP = 1
    SAME = 0
    DOWN = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    move: float
    vol: VolShock
    weight: float = 1.0
    scaled: bool = True  # move is a fraction of the underlying's range
    extended: bool = False  # tail scenario (options only unless the profile says otherwise)


@dataclass(frozen=True, slots=True, kw_only=True)
class VolShockParams:
    range_up: float = bounded(VOL_UP)
    range_down: float = bounded(VOL_DOWN)
    power_short: float = bounded(DAMPENING, 0.30)
    power_long: float = bounded(DAMPENING, 0.13)
    reference_days: float = bounded(REFERENCE_DAYS, 30.0)
    floor: float = bounded(VOL_LEVEL, 0.01)
    min_vol_up: float = bounded(VOL_LEVEL, 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Grid:
    scenarios: tuple[Scenario, ...]
    ranges: Mapping[str, float]  # price range per underlying (e.g. BTC 0.16)
    default_range: float
    vol: VolShockParams
    extended_moves_linear: bool = False  # tail scenarios move delta-one positions too

    def range_of(self, underlying: str) -> float:
        return self.ranges.get(underlying, self.default_range)


def standard_buckets(steps: int, vols: tuple[VolShock, ...] = (VolShock.UP, VolShock.SAME,
                                                             VolShock.DOWN)
                     ) -> tuple[Scenario, ...]:
    """2 x steps + 1 evenly spaced moves over [-1, 1] (fractions of the range) x ``vols``."""
    return tuple(Scenario(move=j / steps, vol=v) for j in range(-steps, steps + 1) for v in vols)


def shocked_sigma(sigma: FloatArray, years: FloatArray, shock: VolShock,
                  params: VolShockParams) -> FloatArray:
    if shock is VolShock.SAME:
        return sigma
    days = np.maximum(years * 365.0, 1.0)
    power = np.where(days < params.reference_days, params.power_short, params.power_long)
    scale = (params.reference_days / days) ** power
    k = params.range_up if shock is VolShock.UP else -params.range_down
    out: FloatArray = np.maximum(params.floor, sigma * (1.0 + k * scale))
    if shock is VolShock.UP:
        out = np.maximum(out, params.min_vol_up)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioPnl:
    """USD P&L per position (positions, k, S) and the moves used (positions, S)."""

    pnl: FloatArray
    move: FloatArray  # the move each position saw per scenario (options: m, linear: m_lin)
    option_value: FloatArray  # options: value at the scenario (positions, k, S), else NaN


def revalue(pb: ProfileBook, state: State, grid: Grid) -> ScenarioPnl:
    n_pos, k, n_s = pb.account.shape[0], state.k, len(grid.scenarios)
    ranges = np.array([grid.range_of(u) for u in pb.underlyings])[pb.underlying]
    moves = np.empty((n_pos, n_s))
    lin_moves = np.empty((n_pos, n_s))
    for j, s in enumerate(grid.scenarios):
        m = s.move * ranges if s.scaled else np.full(n_pos, s.move)
        moves[:, j] = m
        if s.extended and not grid.extended_moves_linear:
            lin_moves[:, j] = np.sign(m) * ranges
        else:
            lin_moves[:, j] = m
    pnl = pb.quantity[:, None, None] * state.mark[:, :, None] * lin_moves[:, None, :]
    pnl = np.where(pb.live[:, None, None], pnl, 0.0)
    option_value = np.full((n_pos, k, n_s), np.nan)
    opt = np.nonzero(pb.option)[0]
    if opt.size:
        sigma = np.empty((opt.size, n_s))
        for shock in VolShock:
            cols = [j for j, s in enumerate(grid.scenarios) if s.vol is shock]
            if cols:
                sigma[:, cols] = shocked_sigma(pb.sigma[opt], pb.years[opt], shock,
                                               grid.vol)[:, None]
        value = np.empty((opt.size, k, n_s))
        _scenario_values_nb(np.ascontiguousarray(state.forward[opt]),
                            np.ascontiguousarray(moves[opt]), sigma, pb.strike[opt],
                            pb.years[opt], pb.is_call[opt], value)
        option_value[opt] = value
        pnl[opt] = pb.quantity[opt, None, None] * (value - state.mark[opt][:, :, None])
    lin_used = np.where(pb.option[:, None], moves, lin_moves)
    return ScenarioPnl(pnl=pnl, move=lin_used, option_value=option_value)


@njit(cache=True, parallel=True)
def _scenario_values_nb(forward: FloatArray, moves: FloatArray, sigma: FloatArray,
                        strike: FloatArray, years: FloatArray, is_call: BoolArray,
                        out: FloatArray) -> None:
    """out[i, l, s] = B76(forward[i, l] x (1 + moves[i, s]), strike[i], years[i],
    sigma[i, s]) for every option i, state level l and scenario s."""
    for i in prange(forward.shape[0]):
        for level in range(forward.shape[1]):
            f = forward[i, level]
            for j in range(moves.shape[1]):
                out[i, level, j] = price_scalar_nb(f * (1.0 + moves[i, j]), strike[i],
                                                   years[i], sigma[i, j], is_call[i])


def weights(grid: Grid) -> FloatArray:
    return np.array([s.weight for s in grid.scenarios])


def worst(pnl: FloatArray, grid: Grid) -> tuple[FloatArray, np.ndarray]:
    """(max(0, -min_s w_s P[..., s]), argmin) over the last axis."""
    flat = np.ascontiguousarray(pnl).reshape(-1, pnl.shape[-1])
    loss = np.empty(flat.shape[0])
    at = np.empty(flat.shape[0], dtype=np.int64)
    _worst_nb(flat, weights(grid), loss, at)
    return loss.reshape(pnl.shape[:-1]), at.reshape(pnl.shape[:-1])


@njit(cache=True)
def _worst_nb(pnl: FloatArray, w: FloatArray, loss: FloatArray, at: np.ndarray) -> None:
    """Per row: the first argmin of w x P and max(0, -min) (``np.argmin``'s tie rule)."""
    for r in range(pnl.shape[0]):
        best = pnl[r, 0] * w[0]
        where = 0
        for j in range(1, pnl.shape[1]):
            value = pnl[r, j] * w[j]
            if value < best:
                best = value
                where = j
        loss[r] = max(0.0, -best)
        at[r] = where


def net_short_option_contracts(pb: ProfileBook, mask: BoolArray | None = None) -> FloatArray:
    """Per account and underlying, the sum over (expiry, strike) of net short option coins
    (calls and puts at one strike and expiry net), accounts x underlyings; only the options in
    ``mask`` when given. State-independent: computed once per book."""
    key = "net_short_options" if mask is None else "net_short_options:" + mask.tobytes().hex()
    return pb.remember(key, lambda: _net_short_option_contracts(pb, mask))  # type: ignore[no-any-return]


def _net_short_option_contracts(pb: ProfileBook, mask: BoolArray | None) -> FloatArray:
    out = np.zeros((pb.accounts, len(pb.underlyings)))
    chosen = pb.option if mask is None else pb.option & mask
    rows = np.nonzero(chosen)[0]
    if rows.size == 0:
        return out
    groups = pb.bound.contingency_group[pb.bound.book.position_instrument][rows]
    span = int(groups.max()) + 1
    keys = pb.account[rows].astype(np.int64) * span + groups
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    net = np.zeros(unique.size)
    np.add.at(net, inverse, pb.quantity[rows])
    short = net < 0.0
    np.add.at(out, (unique[short] // span, pb.underlying[rows[first[short]]]), -net[short])
    return out


def offsetting_linear(pb: ProfileBook, state: State) -> FloatArray:
    """Per account, underlying and state: min(long, short) delta-one notional, (a, u, k)."""
    notional = np.where((~pb.option & pb.live)[:, None], pb.quantity[:, None] * state.mark, 0.0)
    longs = pb.cell_sum(np.maximum(notional, 0.0), pb.underlying, len(pb.underlyings))
    shorts = pb.cell_sum(np.maximum(-notional, 0.0), pb.underlying, len(pb.underlyings))
    out: FloatArray = np.minimum(longs, shorts)
    return out


# Fast paths for liquidation searches: one underlying moves, every other is fixed, so an
# account's gap is a constant plus the part that depends on the moved underlying's level
# (its positions' P&L and cells, its coin collateral). The kernels below evaluate that part
# at (account, level) queries over the moved underlying's live positions ("legs") only.


@dataclass(frozen=True, slots=True, kw_only=True)
class Legs:
    """The live positions of one underlying in a book, grouped by account: account a's are
    rows ``start[a]:start[a + 1]`` of every array (the book's order kept).

    ``forward``: option forward (delta-one: mark x forward_ratio) at today's index, USD;
    ``log_strike``: log K (options; 0 elsewhere).
    """

    underlying: int
    start: np.ndarray
    rows: np.ndarray  # rows of the book
    quantity: FloatArray
    size_cs: FloatArray
    mark: FloatArray
    forward: FloatArray
    entry: FloatArray
    option: BoolArray
    inverse: BoolArray
    strike: FloatArray
    log_strike: FloatArray
    years: FloatArray
    sigma: FloatArray
    is_call: BoolArray
    kind: np.ndarray


def legs_of(pb: ProfileBook, u: int) -> Legs:
    """The live positions of underlying ``u`` (once per book and underlying)."""
    return pb.remember(f"legs:{u}", lambda: _legs_of(pb, u))  # type: ignore[no-any-return]


def _legs_of(pb: ProfileBook, u: int) -> Legs:
    rows = np.nonzero(pb.live & (pb.underlying == u))[0]
    start = np.searchsorted(pb.account[rows], np.arange(pb.accounts + 1)).astype(np.int64)
    option = pb.option[rows]
    strike = pb.strike[rows]
    log_strike = np.zeros(rows.size)
    np.log(strike, out=log_strike, where=option & (strike > 0.0))
    return Legs(underlying=u, start=start, rows=rows, quantity=pb.quantity[rows],
                size_cs=pb.size_cs[rows], mark=pb.mark[rows],
                forward=pb.forward_ratio[rows] * pb.index[u], entry=pb.entry_usd[rows],
                option=option, inverse=pb.inverse[rows], strike=strike,
                log_strike=log_strike, years=pb.years[rows], sigma=pb.sigma[rows],
                is_call=pb.is_call[rows], kind=pb.kind[rows])


@dataclass(frozen=True, slots=True, kw_only=True)
class LegScenarios:
    """One grid's scenarios for the legs of one underlying.

    ``root``: per leg and scenario sigma' x sqrt(T) of options (0: priced at intrinsic, as
    when T <= 0 or sigma' <= 0); ``growth`` 1 + m and ``log_growth`` log(1 + m) per scenario
    (options' move); ``lin``: the delta-one move m_lin; ``weight``: w_s.
    """

    root: FloatArray
    growth: FloatArray
    log_growth: FloatArray
    lin: FloatArray
    weight: FloatArray


def leg_scenarios(legs: Legs, grid: Grid, underlying: str) -> LegScenarios:
    r = grid.range_of(underlying)
    moves = np.array([s.move * r if s.scaled else s.move for s in grid.scenarios])
    lin = np.array([np.sign(m) * r if s.extended and not grid.extended_moves_linear else m
                    for s, m in zip(grid.scenarios, moves, strict=True)])
    sigma = np.empty((legs.sigma.size, len(grid.scenarios)))
    for j, s in enumerate(grid.scenarios):
        sigma[:, j] = shocked_sigma(legs.sigma, legs.years, s.vol, grid.vol)
    intrinsic = (legs.years[:, None] <= 0.0) | ~(sigma > 0.0)
    root = np.where(intrinsic, 0.0, sigma * np.sqrt(np.maximum(legs.years, 0.0))[:, None])
    return LegScenarios(root=np.ascontiguousarray(root), growth=1.0 + moves,
                        log_growth=np.log(1.0 + moves), lin=lin, weight=weights(grid))


_HALF_SQRT2 = 1.0 / np.sqrt(2.0)


@njit(cache=True)
def b76_at(forward: float, log_moneyness: float, strike: float, root: float,
           is_call: bool) -> float:
    """Black-76 (r = 0) from log(F / K) and sigma x sqrt(T) = root (root <= 0: intrinsic):
    d1 = (log(F / K) + root^2 / 2) / root, d2 = d1 - root,
    call F N(d1) - K N(d2), put K N(-d2) - F N(-d1)."""
    if root <= 0.0:
        intrinsic = forward - strike if is_call else strike - forward
        return max(intrinsic, 0.0)
    d1 = (log_moneyness + 0.5 * root * root) / root
    d2 = d1 - root
    if is_call:
        return forward * 0.5 * math.erfc(-d1 * _HALF_SQRT2) - strike * 0.5 * math.erfc(
            -d2 * _HALF_SQRT2)
    return strike * 0.5 * math.erfc(d2 * _HALF_SQRT2) - forward * 0.5 * math.erfc(
        d1 * _HALF_SQRT2)


@njit(cache=True)
def leg_mark(forward: float, strike: float, years: float, sigma: float, is_call: bool,
             option: bool, mark: float, ratio: float) -> tuple[float, float]:
    """(forward, mark) of a leg at index ratio ``ratio``: F = F0 x ratio; options
    B76(F, K, T, sigma), delta-one mark0 x ratio."""
    f = forward * ratio
    if option:
        return f, price_scalar_nb(f, strike, years, sigma, is_call)
    return f, mark * ratio


@njit(cache=True)
def option_scenarios(f: float, strike: float, log_strike: float, is_call: bool,
                     root: FloatArray, growth: FloatArray, log_growth: FloatArray,
                     out: FloatArray) -> None:
    """out[s] = B76(F (1 + m_s), K, T, sigma'_s) with log(F (1 + m_s) / K) =
    log F + log(1 + m_s) - log K."""
    log_f = math.log(f) - log_strike
    for s in range(out.shape[0]):
        out[s] = b76_at(f * growth[s], log_f + log_growth[s], strike, root[s], is_call)


@njit(cache=True)
def worst_loss(cell: FloatArray, w: FloatArray) -> float:
    """max(0, -min_s w_s P_s)."""
    best: float = cell[0] * w[0]
    for s in range(1, cell.shape[0]):
        value = cell[s] * w[s]
        if value < best:
            best = value
    return max(0.0, -best)
