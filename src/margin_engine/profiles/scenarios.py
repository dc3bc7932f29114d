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
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from margin_engine.core.types import FloatArray
from margin_engine.pricing.black76 import price as black76_price
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
    range_up: float
    range_down: float
    power_short: float = 0.30
    power_long: float = 0.13
    reference_days: float = 30.0
    floor: float = 0.01
    min_vol_up: float = 0.0


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
        for shock in VolShock:
            cols = [j for j, s in enumerate(grid.scenarios) if s.vol is shock]
            if not cols:
                continue
            sig = shocked_sigma(pb.sigma[opt], pb.years[opt], shock, grid.vol)
            fwd = state.forward[opt][:, :, None] * (1.0 + moves[opt][:, None, cols])
            value = black76_price(fwd, pb.strike[opt, None, None], pb.years[opt, None, None],
                                  sig[:, None, None], pb.is_call[opt, None, None])
            option_value[np.ix_(opt, np.arange(k), np.array(cols, dtype=np.int64))] = value
        pnl[opt] = pb.quantity[opt, None, None] * (option_value[opt]
                                                   - state.mark[opt][:, :, None])
    lin_used = np.where(pb.option[:, None], moves, lin_moves)
    return ScenarioPnl(pnl=pnl, move=lin_used, option_value=option_value)


def weights(grid: Grid) -> FloatArray:
    return np.array([s.weight for s in grid.scenarios])


def worst(pnl: FloatArray, grid: Grid) -> tuple[FloatArray, np.ndarray]:
    """(max(0, -min_s w_s P[..., s]), argmin) over the last axis."""
    weighted = pnl * weights(grid)
    at = np.argmin(weighted, axis=-1)
    loss: FloatArray = np.maximum(0.0, -np.take_along_axis(weighted, at[..., None],
                                                           axis=-1)[..., 0])
    return loss, at


def net_short_option_contracts(pb: ProfileBook) -> FloatArray:
    """Per account and underlying, the sum over (expiry, strike) of net short option coins
    (calls and puts at one strike and expiry net), accounts x underlyings."""
    out = np.zeros((pb.accounts, len(pb.underlyings)))
    groups = pb.bound.contingency_group[pb.bound.book.position_instrument]
    rows = np.nonzero(pb.option)[0]
    if rows.size == 0:
        return out
    keys = pb.account[rows] * (int(groups.max()) + 1) + groups[rows]
    net: dict[int, float] = {}
    for key, q in zip(keys.tolist(), pb.quantity[rows].tolist(), strict=True):
        net[key] = net.get(key, 0.0) + q
    span = int(groups.max()) + 1
    for key, q in net.items():
        if q < 0.0:
            a = key // span
            row = rows[np.nonzero(keys == key)[0][0]]
            out[a, pb.underlying[row]] += -q
    return out


def offsetting_linear(pb: ProfileBook, state: State) -> FloatArray:
    """Per account, underlying and state: min(long, short) delta-one notional, (a, u, k)."""
    notional = np.where((~pb.option & pb.live)[:, None], pb.quantity[:, None] * state.mark, 0.0)
    longs = pb.cell_sum(np.maximum(notional, 0.0), pb.underlying, len(pb.underlyings))
    shorts = pb.cell_sum(np.maximum(-notional, 0.0), pb.underlying, len(pb.underlyings))
    out: FloatArray = np.minimum(longs, shorts)
    return out
