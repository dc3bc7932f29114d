"""Compiled liquidation-level search: every account at once, the market bound once.

For one underlying u and a level S of its index (ratio r = S / index_u), the gap
    f(S) = equity(S) - haircut(S) - MM(S)
of an account is evaluated from arrays: u's instruments are revalued at S (perp/future/spot
marks and expiry forwards scale by r, an unmarked base is S itself, options are Black-76 on the
moved forward with their sticky-strike vol, settled instruments keep their cash value), coin
collateral of u is priced at price x r, and the margin model is re-run on the account alone. What
u does not touch (the other underlyings' cells) is taken from today's result.

The search per account mirrors ``liquidation_levels_reference`` step for step: f on the same log
grid of levels (the state of each instrument at each grid level computed once for all accounts
when the book is large), scanned outward from today's index until the closest sign change on
each side (an exact zero on the grid is widened by a hair), then scipy's Brent method (the same
algorithm, compiled) on that bracket with the same tolerances, or with the portfolio model
Newton's steps to the same tolerance (``_newton_step``). Stretches of the grid where f
provably keeps its sign are jumped over, which finds the same brackets with fewer evaluations:
with the shared table, blocks of a fixed halving tree of the side certified by bounds built
from the chords of the instruments' states (``chord_certified``, portfolio model), else
``variation`` (an upper bound of how far f can move). Brent's steps price only the scenarios
that can be the worst there (``candidates``, portfolio model): the same f. One compiled pass
over the accounts (slices of them on several threads: the kernels release the GIL); no market
is rebound.

Models are told apart by the type of their context (a NamedTuple); ``inst_state``, ``gap_at``,
``variation``, ``chord_certified``, ``candidates`` and ``job_rows`` are dispatched on it at
compile time. The functions evaluated per
level are compiled without reference counting (``no_refcount``): they allocate nothing, and an
atomic count per array read from a tuple cost more than their arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import numpy as np
from numba import njit, types
from numba.extending import overload

from margin_engine.core.prefetch import prefetch_row
from margin_engine.margin.portfolio_kernel import TIE_TOLERANCE, first_worst
from margin_engine.margin.sensitivity import no_vega
from margin_engine.pricing.black76 import price_delta_scalar_nb, price_scalar_nb

_F = TypeVar("_F", bound=Callable[..., Any])
_NJIT: Any = njit
# the model-dispatched functions (``@overload``): without reference counting, and inlined by
# LLVM into their caller (a call would pass the book's, the collateral's and the model's tuples
# of arrays by value, hundreds of words, on every evaluation)
NO_REFCOUNT: Any = {"_nrt": False, "forceinline": True}


def no_refcount(fn: _F) -> _F:
    """Compiled by numba without reference counting and inlined where it is called: the
    function allocates nothing, so its array arguments and the arrays of its tuples are read
    without an atomic count each (which costs more than the arithmetic in the search's inner
    loops, and more again when two threads count the same arrays), and a call passes no tuple
    of arrays by value. Called from the search (compiled without reference counting itself),
    it is compiled into it."""
    compiled: _F = _NJIT(cache=True, _nrt=False, inline="always")(fn)
    return compiled


def no_refcount_body(fn: _F) -> _F:
    """Compiled without reference counting, not inlined, releasing the GIL: a loop the
    ``no_refcount`` functions are compiled into (it allocates nothing either)."""
    compiled: _F = _NJIT(cache=True, nogil=True, _nrt=False)(fn)
    return compiled


AUX = 24  # numbers a gap evaluation leaves for the bounds (``aux``)
ZERO_WIDTH = 1e-12  # an exact zero on the grid is bracketed by level x (1 -/+ this)
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class BookArrays(NamedTuple):
    """The bound book, flattened: positions (CSR), instruments, underlyings today."""

    offsets: np.ndarray  # int64, accounts + 1
    inst: np.ndarray  # int32 per position
    account: np.ndarray  # int64 per position
    q: np.ndarray  # quantity per position
    entry: np.ndarray  # entry price as given (coin for inverse options)
    entry_usd: np.ndarray  # today
    signed: np.ndarray  # signed notional today
    und: np.ndarray  # int32 per instrument
    live: np.ndarray
    is_option: np.ndarray  # any option, settled or not
    inverse: np.ndarray
    is_call: np.ndarray
    strike: np.ndarray
    years: np.ndarray
    sigma: np.ndarray
    base: np.ndarray  # today's base price (mark / forward / index)
    base_scaled: np.ndarray  # True: base moves as base x r (a market mark); False: it is S
    mark: np.ndarray  # today's mark
    und_index: np.ndarray  # per underlying, today


class Collateral(NamedTuple):
    """Collateral columns and their haircut parameters under one model."""

    amount: np.ndarray  # accounts x columns
    price: np.ndarray  # per column, today
    coin: np.ndarray  # int64 per column: underlying index of its coin, -1 if none
    haircuts: bool
    fixed: np.ndarray  # volatility (unless revalued) + chain haircut
    liquidity: np.ndarray  # coefficient / sqrt(ADV)
    cap: np.ndarray
    limit: np.ndarray
    stable: np.ndarray  # bool: depegged by the portfolio model
    depeg: bool
    depeg_weight: float
    depeg_price: float


class PortfolioCtx(NamedTuple):
    sigma_s: np.ndarray  # instruments x scenarios: vol before the shock
    moves: np.ndarray
    shocks: np.ndarray
    lin_moves: np.ndarray
    weights: np.ndarray
    ref_days: float
    p_short: float
    p_long: float
    floor: float
    group: np.ndarray  # int64 contingency group per instrument
    level_other: np.ndarray  # accounts x underlyings: scan + contingency today
    direction_other: np.ndarray  # accounts x underlyings: sign of the worst move today
    # the underlyings with a level today per account, ascending (CSR: account a's are
    # other_und[other_offsets[a]:other_offsets[a + 1]])
    other_offsets: np.ndarray  # int64, accounts + 1
    other_und: np.ndarray  # int64
    rho: np.ndarray
    opt_rate: float
    lin_rate: float
    max_offset: float
    mm_fraction: float
    w_max: float  # largest scenario weight
    lin_max: float  # largest |linear move|
    factor: float  # max(1, largest 1 + move) + 1: bound factor of an option's scenario values
    # filled by ``vol_scales_nb`` and ``candidate_constants_nb`` (empty until then):
    vol_scale: np.ndarray  # per instrument: the share of the vol shocks its tenor takes
    slope: np.ndarray  # per scenario: ``_option_slope`` of its move
    curvature: np.ndarray  # instruments x scenarios: the chord bound's curvature factor
    dbase: np.ndarray  # per instrument: d base / d level of its underlying (0 when settled)


class Charges(NamedTuple):
    """Isolated charges: notional tiers per underlying and the short-option rule (the first
    fields of every context that charges positions)."""

    up_to: np.ndarray  # underlyings x tiers (rows padded past ``n_tiers``)
    initial_rate: np.ndarray
    maintenance_rate: np.ndarray
    n_tiers: np.ndarray  # int64 tiers per underlying
    opt_base: float
    opt_floor: float
    opt_maintenance: float


class IsolatedCtx(NamedTuple):
    up_to: np.ndarray
    initial_rate: np.ndarray
    maintenance_rate: np.ndarray
    n_tiers: np.ndarray
    opt_base: float
    opt_floor: float
    opt_maintenance: float
    margin: np.ndarray  # per position: asked USD margin or NaN
    leverage: np.ndarray  # per position: asked leverage or NaN


class CrossCtx(NamedTuple):
    up_to: np.ndarray
    initial_rate: np.ndarray
    maintenance_rate: np.ndarray
    n_tiers: np.ndarray
    opt_base: float
    opt_floor: float
    opt_maintenance: float
    hedge_maintenance: float
    maintenance_cells: np.ndarray  # accounts x underlyings today


class SensitivityCtx(NamedTuple):
    delta_1pct: np.ndarray  # per instrument today
    vega: np.ndarray
    tenor_lo: np.ndarray
    weight_lo: np.ndarray
    rw: np.ndarray
    sigma_u: np.ndarray
    vrw: float
    sf: np.ndarray
    tenor_rho: np.ndarray
    gamma: np.ndarray
    lambda_base: float
    mm_fraction: float


class PositionCtx(NamedTuple):
    """Isolated positions on their own margin: today's margin held follows the collateral."""

    up_to: np.ndarray
    initial_rate: np.ndarray
    maintenance_rate: np.ndarray
    n_tiers: np.ndarray
    opt_base: float
    opt_floor: float
    opt_maintenance: float
    held: np.ndarray  # per position, today
    value_today: np.ndarray  # per account: collateral value today


def state_width(ctx: Any) -> int:
    """Numbers kept per instrument and level (mark first)."""
    if isinstance(ctx, PortfolioCtx):
        return 1 + int(ctx.moves.shape[0])
    if isinstance(ctx, SensitivityCtx):
        return 3
    return 1


# ---------------------------------------------------------------- dispatch stubs


def inst_state(bk: Any, ctx: Any, i: int, s: float, ratio: float, out: Any) -> None:
    """Instrument ``i`` at level ``s`` of its underlying: out[0] = mark, then model numbers."""
    raise NotImplementedError  # compiled only (overloaded below)


def gap_at(bk: Any, cl: Any, ctx: Any, job: int, u: int, s: float, ratio: float, rows: Any,
           k: int, states: Any, work: Any, iwork: Any, aux: Any) -> float:
    """Adjusted equity - MM of a job (account or position) with u at ``s``."""
    raise NotImplementedError


def job_rows(bk: Any, ctx: Any, job: int, u: int, rows: Any) -> int:
    """The position rows of a job that move with u (in book order), and their count."""
    raise NotImplementedError


def _is(ctx: Any, cls: type) -> bool:
    return isinstance(ctx, types.BaseNamedTuple) and getattr(ctx, "instance_class", None) is cls


# ---------------------------------------------------------------- shared pieces


@no_refcount
def _base_at(b: BookArrays, i: int, s: float, ratio: float) -> float:
    return b.base[i] * ratio if b.base_scaled[i] else s


@no_refcount
def _mark_at(b: BookArrays, i: int, s: float, ratio: float) -> float:
    if not b.live[i]:
        return float(b.mark[i])
    base = _base_at(b, i, s, ratio)
    if b.is_option[i]:
        return price_scalar_nb(base, b.strike[i], b.years[i], b.sigma[i], b.is_call[i])
    return base


@no_refcount
def collateral_at(c: Collateral, a: int, u: int, ratio: float, out: np.ndarray) -> None:
    """out = (value, haircut deduction, exposure to u, depeg loss) of account a's collateral
    with u's coin at price x ratio (``book_haircuts`` and ``depeg_charge``, column by column)."""
    value = 0.0
    taken = 0.0
    exposure = 0.0
    depeg = 0.0
    for col in range(c.price.shape[0]):
        moved = c.coin[col] == u
        price = c.price[col] * ratio if moved else c.price[col]
        x = c.amount[a, col]
        value += x * price
        if moved:
            exposure += x * price
        if c.haircuts:
            gross = max(x, 0.0) * price
            r = min(c.fixed[col] + c.liquidity[col] * math.sqrt(gross), c.cap[col])
            taken += gross - min(gross * (1.0 - r), c.limit[col])
        if c.depeg and c.stable[col]:
            depeg += c.depeg_weight * max(x, 0.0) * max(0.0, price - c.depeg_price)
    out[0] = value
    out[1] = taken
    out[2] = exposure
    out[3] = depeg


@no_refcount
def exposures_at(c: Collateral, a: int, u: int, ratio: float, out: np.ndarray) -> None:
    """out[v] = USD value of account a's collateral in underlying v's coin."""
    out[:] = 0.0
    for col in range(c.price.shape[0]):
        v = c.coin[col]
        if v >= 0:
            price = c.price[col] * ratio if v == u else c.price[col]
            out[v] += c.amount[a, col] * price


@no_refcount
def tiered(ch: Any, v: int, notional: float) -> tuple[float, float]:
    """(initial, maintenance) marginal tier charge of |notional| for underlying v."""
    amount = abs(notional)
    initial = 0.0
    maintenance = 0.0
    lower = 0.0
    for t in range(ch.n_tiers[v]):
        portion = min(max(amount, lower), ch.up_to[v, t]) - lower
        initial += ch.initial_rate[v, t] * portion
        maintenance += ch.maintenance_rate[v, t] * portion
        lower = ch.up_to[v, t]
    return initial, maintenance


@no_refcount
def _signed_at(b: BookArrays, p: int, i: int, mark: float) -> float:
    """Signed notional at mark: q x mark, size x contract (inverse perps/futures), 0 settled."""
    if not b.live[i]:
        return 0.0
    if b.inverse[i] and not b.is_option[i]:
        return float(b.signed[p])
    return float(b.q[p] * mark)


@no_refcount
def position_charge(b: BookArrays, ch: Any, p: int, i: int, mark: float, spot: float
                    ) -> tuple[float, float]:
    """Isolated (initial, maintenance) of position p at ``mark`` and index ``spot``."""
    if not b.is_option[i]:
        return tiered(ch, b.und[i], _signed_at(b, p, i, mark))
    q = b.q[p]
    if not (b.live[i] and q < 0.0):
        return 0.0, 0.0
    strike = b.strike[i]
    otm = max(0.0, strike - spot) if b.is_call[i] else max(0.0, spot - strike)
    coins = abs(q)
    rate = max(ch.opt_base - otm / spot, ch.opt_floor)
    return coins * (rate * spot + mark), coins * (ch.opt_maintenance * spot + mark)


@no_refcount
def _entry_usd_at(b: BookArrays, p: int, i: int, moved: bool, s: float) -> float:
    if moved and b.inverse[i] and b.is_option[i]:
        return float(b.entry[p] * s)  # an inverse option's premium is in coin
    return float(b.entry_usd[p])


@no_refcount
def _account_rows(b: BookArrays, a: int, u: int, rows: np.ndarray) -> int:
    k = 0
    for p in range(b.offsets[a], b.offsets[a + 1]):
        if b.und[b.inst[p]] == u:
            rows[k] = p
            k += 1
    return k


@no_refcount
def _unrealised(b: BookArrays, a: int, s: float, rows: np.ndarray, k: int,
                states: np.ndarray) -> float:
    """sum of q x (mark - entry_usd) over the account, u's rows at their moved state."""
    total = 0.0
    kk = 0
    for p in range(b.offsets[a], b.offsets[a + 1]):
        i = b.inst[p]
        if kk < k and rows[kk] == p:
            total += b.q[p] * (states[kk, 0] - _entry_usd_at(b, p, i, True, s))
            kk += 1
        else:
            total += b.q[p] * (b.mark[i] - b.entry_usd[p])
    return total


# ---------------------------------------------------------------- instrument states


@no_refcount
def _option_scenarios(b: BookArrays, ctx: PortfolioCtx, i: int, base: float, c: float,
                      out: np.ndarray, slope: np.ndarray, sloped: bool, chosen: np.ndarray,
                      only_chosen: bool) -> None:
    """out = [mark, value change on each scenario] of live option i on the forward ``base``;
    with ``only_chosen``, the scenarios not chosen are NaN. With ``sloped``, ``slope`` = their
    derivatives in the level, c = d base / d level: c x delta for the mark, c x ((1 + move) x
    the scenario's delta - delta) for a value change (0 where not chosen)."""
    strike, years, call = b.strike[i], b.years[i], b.is_call[i]
    mark, delta = price_delta_scalar_nb(base, strike, years, b.sigma[i], call)
    out[0] = mark
    if sloped:
        slope[0] = c * delta
    for j in range(ctx.moves.shape[0]):
        if only_chosen and not chosen[j]:
            out[1 + j] = math.nan
            if sloped:
                slope[1 + j] = 0.0
            continue
        grown = 1.0 + ctx.moves[j]
        value, moved_delta = price_delta_scalar_nb(base * grown, strike, years,
                                                   _shocked_sigma(ctx, i, j), call)
        out[1 + j] = value - mark
        if sloped:
            slope[1 + j] = c * (grown * moved_delta - delta)


@no_refcount
def _shocked_sigma(ctx: PortfolioCtx, i: int, j: int) -> float:
    """Instrument i's vol on scenario j: its scenario vol shocked by its tenor's share,
    floored."""
    return float(max(ctx.floor, ctx.sigma_s[i, j] * (1.0 + ctx.shocks[j] * ctx.vol_scale[i])))


@overload(inst_state, jit_options=NO_REFCOUNT)
def _inst_state_ov(bk: Any, ctx: Any, i: Any, s: Any, ratio: Any, out: Any) -> Any:
    if _is(ctx, PortfolioCtx):
        def portfolio(bk: Any, ctx: Any, i: Any, s: Any, ratio: Any, out: Any) -> None:
            b = bk
            n_s = ctx.moves.shape[0]
            if not b.live[i]:
                out[0] = b.mark[i]
                for j in range(n_s):
                    out[1 + j] = 0.0
                return
            base = _base_at(b, i, s, ratio)
            if not b.is_option[i]:
                out[0] = base
                for j in range(n_s):
                    out[1 + j] = base * ctx.lin_moves[j]
                return
            _option_scenarios(b, ctx, i, base, 0.0, out, out, False, ctx.moves,
                              False)  # every scenario, no slopes
        return portfolio
    if _is(ctx, SensitivityCtx):
        def sensitivity(bk: Any, ctx: Any, i: Any, s: Any, ratio: Any, out: Any) -> None:
            b = bk
            if not b.live[i]:
                out[0] = b.mark[i]
                out[1] = 0.0
                out[2] = 0.0
                return
            base = _base_at(b, i, s, ratio)
            if not b.is_option[i]:
                out[0] = base
                out[1] = 0.01 * base
                out[2] = 0.0
                return
            f, k, t, sg, c = base, b.strike[i], b.years[i], b.sigma[i], b.is_call[i]
            out[0] = price_scalar_nb(f, k, t, sg, c)
            if t <= 0.0 or sg <= 0.0:
                itm = f > k if c else f < k
                out[1] = 0.01 * f * ((1.0 if c else -1.0) if itm else 0.0)
                out[2] = 0.0
                return
            sq = math.sqrt(t)
            root = sg * sq
            d1 = (math.log(f / k) + 0.5 * root * root) / root
            pdf = _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
            n_d1 = 0.5 * math.erfc(-d1 / _SQRT2)
            out[1] = 0.01 * f * (n_d1 if c else n_d1 - 1.0)
            out[2] = f * pdf * sq
        return sensitivity

    def mark_only(bk: Any, ctx: Any, i: Any, s: Any, ratio: Any, out: Any) -> None:
        out[0] = _mark_at(bk, i, s, ratio)
    return mark_only


@overload(job_rows, jit_options=NO_REFCOUNT)
def _job_rows_ov(bk: Any, ctx: Any, job: Any, u: Any, rows: Any) -> Any:
    if _is(ctx, PositionCtx):
        def one(bk: Any, ctx: Any, job: Any, u: Any, rows: Any) -> int:
            rows[0] = job
            return 1
        return one

    def account(bk: Any, ctx: Any, job: Any, u: Any, rows: Any) -> int:
        return _account_rows(bk, job, u, rows)
    return account


# ---------------------------------------------------------------- gaps per model
# Every gap function has the signature (book, collateral, ctx, job, u, s, ratio, rows, k,
# states, work, iwork, aux) and is inlined at the one place the search evaluates f; ``aux``
# receives what the model's skip bound needs (see ``variation``).


@no_refcount
def _portfolio_gap(b: BookArrays, cl: Collateral, ctx: PortfolioCtx, a: int, u: int, s: float,
                   ratio: float, rows: np.ndarray, k: int, states: np.ndarray,
                   work: np.ndarray, iwork: np.ndarray, aux: np.ndarray) -> float:
    """``portfolio_margin_nb`` for account a with only u's cell recomputed, + depeg."""
    n_s = ctx.moves.shape[0]
    n_u = b.und_index.shape[0]
    collateral_at(cl, a, u, ratio, aux)  # aux[0:4] = value, haircut, exposure, depeg
    pnl = work[0:n_s]
    level = work[n_s:n_s + n_u]
    direction = work[n_s + n_u:n_s + 2 * n_u]
    weighted = work[n_s + 2 * n_u:2 * n_s + 2 * n_u]
    qty = work[2 * n_s + 2 * n_u:]
    groups = iwork
    pnl[:] = 0.0
    has = False
    longs = 0.0
    shorts = 0.0
    gross = 0.0
    n_opt = 0
    for kk in range(k):
        p = rows[kk]
        i = b.inst[p]
        q = b.q[p]
        has = True
        gross += abs(q * states[kk, 0])
        for j in range(n_s):
            pnl[j] += q * states[kk, 1 + j]
        if b.is_option[i] and b.live[i]:
            groups[n_opt] = ctx.group[i]
            qty[n_opt] = q
            n_opt += 1
        else:
            n = _signed_at(b, p, i, states[kk, 0])
            if n > 0.0:
                longs += n
            else:
                shorts -= n
    e = aux[2]
    if e != 0.0:
        has = True
        for j in range(n_s):
            pnl[j] += e * ctx.lin_moves[j]
    if aux[12] != 0.0:  # scenarios left out (``_refined``) can be nobody's worst
        for j in range(n_s):
            if math.isnan(pnl[j]):
                pnl[j] = LEFT_OUT
    # option contingency: net short contracts per group, groups in id order (stable)
    for x in range(1, n_opt):
        g, qx = groups[x], qty[x]
        y = x - 1
        while y >= 0 and groups[y] > g:
            groups[y + 1], qty[y + 1] = groups[y], qty[y]
            y -= 1
        groups[y + 1], qty[y + 1] = g, qx
    opt_cont = 0.0
    short = 0.0
    start = 0
    while start < n_opt:
        net = 0.0
        end = start
        while end < n_opt and groups[end] == groups[start]:
            net += qty[end]
            end += 1
        if net < 0.0:
            opt_cont += -net * ctx.opt_rate * s
            short -= net
        start = end
    # the underlyings the account has a level in today (ascending, ``other_und``) and u in its
    # place: the sums below over them alone, in the order of every underlying, since an
    # underlying without a level adds exact zeros to each (O(k^2) for k of them, not O(n_u^2));
    # ``level`` and ``direction`` hold their terms compactly, position x for underlying hv[x]
    hv = iwork  # (the option groups above are done with)
    n_h = 0
    placed = False
    for x in range(ctx.other_offsets[a], ctx.other_offsets[a + 1]):
        v = ctx.other_und[x]
        if v == u:
            continue
        if not placed and v > u:
            hv[n_h] = u
            n_h += 1
            placed = True
        hv[n_h] = v
        n_h += 1
    if not placed:
        hv[n_h] = u
        n_h += 1
    total = 0.0
    cross = 0.0
    lowest = 0.0  # the exact smallest weighted scenario P&L (no tie rule), for the bound
    best_u = -1  # u's worst scenario (-1: none)
    level_u = 0.0
    for x in range(n_h):
        v = hv[x]
        if v != u:
            level[x] = ctx.level_other[a, v]
            direction[x] = ctx.direction_other[a, v]
            total += level[x]
            cross += (abs(ctx.rho[u, v]) + abs(ctx.rho[v, u])) * 0.5 * level[x] * abs(
                direction[x])
            continue
        if not has:
            level[x] = 0.0
            direction[x] = 0.0
            continue
        for j in range(1, n_s):
            weighted[j] = ctx.weights[j] * pnl[j]
            lowest = min(lowest, weighted[j])
        weighted[0] = ctx.weights[0] * pnl[0]
        lowest = min(lowest, weighted[0])
        best_s = first_worst(weighted, n_s)  # the portfolio model's in-order rule
        best = weighted[best_s]
        best_u = best_s
        risk = max(0.0, -best)
        level[x] = risk + (opt_cont + ctx.lin_rate * min(longs, shorts))
        level_u = level[x]
        m = ctx.moves[best_s]
        direction[x] = 1.0 if m > 0.0 else (-1.0 if m < 0.0 else 0.0)
        total += level[x]
    quad = 0.0
    others = 0.0  # the terms of quad without u
    for x in range(n_h):
        if level[x] == 0.0:
            continue
        v = hv[x]
        quad += level[x] * level[x]
        if v != u:
            others += level[x] * level[x]
        for y in range(n_h):
            if y != x and level[y] != 0.0:
                w2 = hv[y]
                term = ctx.rho[v, w2] * direction[x] * level[x] * direction[y] * level[y]
                quad += term
                if v != u and w2 != u:
                    others += term
    agg = math.sqrt(max(0.0, quad))
    initial = max(agg, (1.0 - ctx.max_offset) * total)
    maintenance = ctx.mm_fraction * (initial + aux[3])
    unrealised = _unrealised(b, a, s, rows, k, states)
    aux[4] = level_u
    aux[5] = agg
    aux[6] = cross
    aux[7] = short
    aux[8] = abs(aux[0]) + aux[1] + maintenance + gross + abs(unrealised) + level_u + 1.0
    # the chord bound's value here (``chord_certified``): u's level without the tie rule and
    # an aggregation that is convex, nondecreasing and 1-Lipschitz in it, above the true one
    bound_level = (max(0.0, -lowest) if has else 0.0) + opt_cont + ctx.lin_rate * min(longs, shorts)
    bound_agg = math.sqrt((bound_level + cross) ** 2 + max(0.0, others - cross * cross))
    bound_initial = max(bound_agg, (1.0 - ctx.max_offset) * (total - level_u + bound_level))
    aux[9] = aux[0] + unrealised - aux[1] - ctx.mm_fraction * (bound_initial + aux[3])
    aux[10] = longs
    aux[11] = shorts
    aux[14] = initial
    aux[15] = opt_cont
    aux[16] = best_u
    aux[17] = total - level_u
    aux[18] = others
    return float(aux[0] + unrealised - aux[1] - maintenance)


@no_refcount
def _isolated_gap(b: BookArrays, cl: Collateral, ctx: IsolatedCtx, a: int, u: int, s: float,
                  ratio: float, rows: np.ndarray, k: int, states: np.ndarray,
                  work: np.ndarray, iwork: np.ndarray, aux: np.ndarray) -> float:
    """``IsolatedModel.compute`` + ``maintenance_gap`` for account a (allocation by IM at
    entry, from the moved collateral value)."""
    collateral_at(cl, a, u, ratio, aux)
    value, taken = aux[0], aux[1]
    kept = 1.0 - (taken / value if value > 0.0 else 0.0)
    start, stop = b.offsets[a], b.offsets[a + 1]
    n = stop - start
    mm = work[0:n]
    weight = work[n:2 * n]
    held = work[2 * n:3 * n]
    pnl = work[3 * n:4 * n]
    asked_sum = 0.0
    weight_sum = 0.0
    mm_sum = 0.0
    pnl_sum = 0.0
    kk = 0
    for x in range(n):
        p = start + x
        i = b.inst[p]
        moved = kk < k and rows[kk] == p
        if moved:
            mark = states[kk, 0]
            spot = s
            kk += 1
        else:
            mark = b.mark[i]
            spot = b.und_index[b.und[i]]
        eu = _entry_usd_at(b, p, i, moved, s)
        q = b.q[p]
        im_m, mm_m = position_charge(b, ctx, p, i, mark, spot)
        if not b.is_option[i]:
            im_e, _ = tiered(ctx, b.und[i], q * eu if b.live[i] else 0.0)
        else:
            im_e = im_m
        h = ctx.margin[p]
        if math.isnan(h) and math.isfinite(ctx.leverage[p]):
            h = abs(q * eu) / ctx.leverage[p]
        asked = math.isfinite(h)
        asked_sum += h if asked else 0.0
        w = 0.0 if asked else im_e
        weight_sum += w
        mm_sum += mm_m
        pnl[x] = q * (mark - eu)
        pnl_sum += pnl[x]
        mm[x] = mm_m
        weight[x] = w
        held[x] = h if asked else math.nan
    share = max(value - asked_sum, 0.0) / weight_sum if weight_sum > 0.0 else 0.0
    worst = math.inf
    for x in range(n):
        if mm[x] > 0.0:
            allocation = held[x] if math.isfinite(held[x]) else weight[x] * share
            worst = min(worst, allocation * kept + pnl[x] - mm[x])
    if math.isfinite(worst):
        return worst
    return float((value + pnl_sum) - taken - mm_sum)


@no_refcount
def _cross_gap(b: BookArrays, cl: Collateral, ctx: CrossCtx, a: int, u: int, s: float,
               ratio: float, rows: np.ndarray, k: int, states: np.ndarray, work: np.ndarray,
               iwork: np.ndarray, aux: np.ndarray) -> float:
    """``CrossModel.compute`` for account a with u's cell recomputed."""
    collateral_at(cl, a, u, ratio, aux)
    net = 0.0
    longs = 0.0
    shorts = 0.0
    cap = 0.0
    options = 0.0
    for kk in range(k):
        p = rows[kk]
        i = b.inst[p]
        mark = states[kk, 0]
        _, mm_p = position_charge(b, ctx, p, i, mark, s)
        if b.is_option[i]:
            options += mm_p
            continue
        n = _signed_at(b, p, i, mark)
        net += n
        longs += max(n, 0.0)
        shorts += max(-n, 0.0)
        cap += mm_p
    _, mm_net = tiered(ctx, u, net)
    cell = min(mm_net + ctx.hedge_maintenance * min(longs, shorts), cap) + options
    maintenance = 0.0
    for v in range(b.und_index.shape[0]):
        maintenance += cell if v == u else ctx.maintenance_cells[a, v]
    equity = aux[0] + _unrealised(b, a, s, rows, k, states)
    return float(equity - aux[1] - maintenance)


@no_refcount
def _sensitivity_gap(b: BookArrays, cl: Collateral, ctx: SensitivityCtx, a: int, u: int,
                     s: float, ratio: float, rows: np.ndarray, k: int, states: np.ndarray,
                     work: np.ndarray, iwork: np.ndarray, aux: np.ndarray) -> float:
    """``sensitivity_margin_nb`` for account a with u's instruments at their moved Greeks."""
    n_u = b.und_index.shape[0]
    n_t = ctx.sf.shape[0]
    collateral_at(cl, a, u, ratio, aux)
    sd = work[0:n_u]
    ws = work[n_u:2 * n_u]
    kv = work[2 * n_u:3 * n_u]
    sv = work[3 * n_u:4 * n_u]
    kc = work[4 * n_u:5 * n_u]
    sc = work[5 * n_u:6 * n_u]
    expo = work[6 * n_u:7 * n_u]
    vv = work[7 * n_u:7 * n_u + n_u * n_t].reshape((n_u, n_t))
    sd[:] = 0.0
    vv[:, :] = 0.0
    kk = 0
    for p in range(b.offsets[a], b.offsets[a + 1]):
        i = b.inst[p]
        v = b.und[i]
        q = b.q[p]
        if kk < k and rows[kk] == p:
            d1, vg = states[kk, 1], states[kk, 2]
            kk += 1
        else:
            d1, vg = ctx.delta_1pct[i], ctx.vega[i]
        sd[v] += q * d1
        if vg != 0.0:
            lo = ctx.tenor_lo[i]
            vv[v, lo] += q * vg * ctx.weight_lo[i]
            if lo + 1 < n_t:
                vv[v, lo + 1] += q * vg * (1.0 - ctx.weight_lo[i])
    exposures_at(cl, a, u, ratio, expo)
    for v in range(n_u):
        sd[v] += 0.01 * expo[v]
    quad = 0.0
    for v in range(n_u):
        ws[v] = ctx.rw[v] * sd[v]
    # (as ``sensitivity_margin_nb``: the underlyings without delta, vega or curvature add
    # exact zeros and are passed over)
    for v in range(n_u):
        if ws[v] == 0.0:
            continue
        for w in range(n_u):
            if ws[w] != 0.0:
                quad += (1.0 if v == w else ctx.gamma[v, w]) * ws[v] * ws[w]
    delta = math.sqrt(max(0.0, quad))
    total_cvr = 0.0
    total_abs = 0.0
    for v in range(n_u):
        if no_vega(vv, v, n_t):
            kv[v], sv[v], kc[v], sc[v] = 0.0, 0.0, 0.0, 0.0
            continue
        kq = 0.0
        cq = 0.0
        sum_vr = 0.0
        sum_cvr = 0.0
        for t in range(n_t):
            vr_t = ctx.vrw * ctx.sigma_u[v] * vv[v, t]
            cv_t = -ctx.sf[t] * ctx.sigma_u[v] * vv[v, t]
            sum_vr += vr_t
            sum_cvr += cv_t
            total_abs += abs(cv_t)
            for t2 in range(n_t):
                vr_2 = ctx.vrw * ctx.sigma_u[v] * vv[v, t2]
                cv_2 = -ctx.sf[t2] * ctx.sigma_u[v] * vv[v, t2]
                r = 1.0 if t == t2 else ctx.tenor_rho[t, t2]
                kq += r * vr_t * vr_2
                cq += r * r * cv_t * cv_2
        kv[v] = math.sqrt(max(0.0, kq))
        sv[v] = max(min(sum_vr, kv[v]), -kv[v])
        kc[v] = math.sqrt(max(0.0, cq))
        sc[v] = max(min(sum_cvr, kc[v]), -kc[v])
        total_cvr += sum_cvr
    vq = 0.0
    cq = 0.0
    for v in range(n_u):
        if kv[v] == 0.0 and kc[v] == 0.0:  # (then sv[v] = sc[v] = 0)
            continue
        vq += kv[v] * kv[v]
        cq += kc[v] * kc[v]
        for w in range(n_u):
            if w != v and (sv[w] != 0.0 or sc[w] != 0.0):
                vq += ctx.gamma[v, w] * sv[v] * sv[w]
                cq += ctx.gamma[v, w] * ctx.gamma[v, w] * sc[v] * sc[w]
    vega_margin = math.sqrt(max(0.0, vq))
    theta = min(total_cvr / total_abs, 0.0) if total_abs > 0.0 else 0.0
    lam = ctx.lambda_base * (1.0 + theta) - theta
    curvature = max(total_cvr + lam * math.sqrt(max(0.0, cq)), 0.0)
    maintenance = ctx.mm_fraction * (delta + vega_margin + curvature)
    equity = aux[0] + _unrealised(b, a, s, rows, k, states)
    return float(equity - aux[1] - maintenance)


@no_refcount
def _position_gap(b: BookArrays, cl: Collateral, ctx: PositionCtx, r: int, u: int, s: float,
                  ratio: float, rows: np.ndarray, k: int, states: np.ndarray,
                  work: np.ndarray, iwork: np.ndarray, aux: np.ndarray) -> float:
    """One isolated position: margin held x (collateral value now / today) x (1 - haircut
    fraction) + its P&L - its MM."""
    a = b.account[r]
    collateral_at(cl, a, u, ratio, aux)
    value, taken = aux[0], aux[1]
    kept = 1.0 - (taken / value if value > 0.0 else 0.0)
    today = ctx.value_today[a]
    follows = value / today if today > 0.0 else 1.0
    i = b.inst[r]
    mark = states[0, 0]
    _, mm_r = position_charge(b, ctx, r, i, mark, s)
    pnl = b.q[r] * (mark - _entry_usd_at(b, r, i, True, s))
    return float(ctx.held[r] * follows * kept + pnl - mm_r)


@overload(gap_at, jit_options=NO_REFCOUNT)
def _gap_at_ov(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, s: Any, ratio: Any, rows: Any,
               k: Any, states: Any, work: Any, iwork: Any, aux: Any) -> Any:
    if _is(ctx, PortfolioCtx):
        def portfolio(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, s: Any, ratio: Any,
                      rows: Any, k: Any, states: Any, work: Any, iwork: Any,
                      aux: Any) -> float:
            return _portfolio_gap(bk, cl, ctx, job, u, s, ratio, rows, k, states, work, iwork,
                                  aux)
        return portfolio
    if _is(ctx, IsolatedCtx):
        def isolated(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, s: Any, ratio: Any,
                     rows: Any, k: Any, states: Any, work: Any, iwork: Any, aux: Any) -> float:
            return _isolated_gap(bk, cl, ctx, job, u, s, ratio, rows, k, states, work, iwork,
                                 aux)
        return isolated
    if _is(ctx, CrossCtx):
        def cross(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, s: Any, ratio: Any,
                  rows: Any, k: Any, states: Any, work: Any, iwork: Any, aux: Any) -> float:
            return _cross_gap(bk, cl, ctx, job, u, s, ratio, rows, k, states, work, iwork, aux)
        return cross
    if _is(ctx, SensitivityCtx):
        def sensitivity(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, s: Any, ratio: Any,
                        rows: Any, k: Any, states: Any, work: Any, iwork: Any,
                        aux: Any) -> float:
            return _sensitivity_gap(bk, cl, ctx, job, u, s, ratio, rows, k, states, work,
                                    iwork, aux)
        return sensitivity

    def position(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, s: Any, ratio: Any,
                 rows: Any, k: Any, states: Any, work: Any, iwork: Any, aux: Any) -> float:
        return _position_gap(bk, cl, ctx, job, u, s, ratio, rows, k, states, work, iwork, aux)
    return position


# ---------------------------------------------------------------- skip bounds
# Between two grid levels x and y, an upper bound V on |f(L) - f(x)| for every grid level L
# from x to y: when |f(x)| > V (with a margin for rounding) f has f(x)'s sign at all of them,
# so the scan jumps to y without missing a sign change or a zero. The bound uses, per
# instrument, the cumulative variation of its mark and of its scenario values along the grid
# (from the shared table; without one, |d price / d forward| <= 1 for options), and the
# monotone collateral terms at x and y.


def variation(bk: Any, cl: Any, ctx: Any, job: int, u: int, x: int, y: int, levels: Any,
              index0: float, cum: Any, table_row: Any, rows: Any, k: int, aux: Any,
              tmp: Any) -> float:
    """Upper bound of |f(L) - f(x)| over grid levels L between x and y (inf: none known)."""
    raise NotImplementedError


@no_refcount
def _cumulative(bk: BookArrays, i: int, j: int, which: int, levels: np.ndarray, index0: float,
                cum: np.ndarray, table_row: np.ndarray, scenario_factor: float) -> float:
    """Cumulative variation along the grid up to level j of instrument i's mark (which = 0) or
    largest scenario value (which = 1)."""
    if cum.shape[0] > 0:
        return cum[table_row[i], j, which]  # type: ignore[no-any-return]
    if not bk.live[i]:
        return 0.0
    moved = bk.base[i] * levels[j] / index0  # the base moves in proportion to the index
    if which == 0:
        return moved  # type: ignore[no-any-return]
    return moved * scenario_factor  # type: ignore[no-any-return]


@overload(variation, jit_options=NO_REFCOUNT)
def _variation_ov(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, x: Any, y: Any, levels: Any,
                  index0: Any, cum: Any, table_row: Any, rows: Any, k: Any, aux: Any,
                  tmp: Any) -> Any:
    if _is(ctx, PortfolioCtx):
        def portfolio(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, x: Any, y: Any,
                      levels: Any, index0: Any, cum: Any, table_row: Any, rows: Any, k: Any,
                      aux: Any, tmp: Any) -> float:
            return _portfolio_variation(bk, cl, ctx, job, u, x, y, levels, index0, cum,
                                        table_row, rows, k, aux, tmp)
        return portfolio

    def unknown(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, x: Any, y: Any, levels: Any,
                index0: Any, cum: Any, table_row: Any, rows: Any, k: Any, aux: Any,
                tmp: Any) -> float:
        return math.inf
    return unknown


@no_refcount
def _portfolio_variation(b: BookArrays, cl: Collateral, ctx: PortfolioCtx, a: int, u: int,
                         x: int, y: int, levels: np.ndarray, index0: float, cum: np.ndarray,
                         table_row: np.ndarray, rows: np.ndarray, k: int, aux: np.ndarray,
                         tmp: np.ndarray) -> float:
    """V for the portfolio model (aux: f's parts at x, written by ``_portfolio_gap``)."""
    collateral_at(cl, a, u, levels[y] / index0, tmp)
    d_value = abs(tmp[0] - aux[0])
    d_haircut = abs(tmp[1] - aux[1])
    d_exposure = abs(tmp[2] - aux[2])
    d_depeg = abs(tmp[3] - aux[3])
    d_s = abs(levels[y] - levels[x])
    pnl = 0.0
    grid = 0.0
    linear = 0.0
    for kk in range(k):
        p = rows[kk]
        i = b.inst[p]
        aq = abs(b.q[p])
        option = b.is_option[i]
        scen = ctx.factor if option else ctx.lin_max
        dm = abs(_cumulative(b, i, y, 0, levels, index0, cum, table_row, scen)
                 - _cumulative(b, i, x, 0, levels, index0, cum, table_row, scen))
        dt = abs(_cumulative(b, i, y, 1, levels, index0, cum, table_row, scen)
                 - _cumulative(b, i, x, 1, levels, index0, cum, table_row, scen))
        pnl += aq * dm
        if option and b.inverse[i]:
            pnl += abs(b.q[p] * b.entry[p]) * d_s
        grid += aq * dt
        if b.live[i] and not option and not b.inverse[i]:
            linear += aq * dm
    d_level = (ctx.w_max * (grid + d_exposure * ctx.lin_max) + ctx.opt_rate * d_s * aux[7]
               + ctx.lin_rate * linear)
    level, agg, cross = aux[4], aux[5], aux[6]
    d_quad = (2.0 * level + d_level) * (d_level + 2.0 * cross)
    d_agg = math.sqrt(d_quad)
    if agg > 0.0:
        d_agg = min(d_agg, d_quad / agg)
    d_initial = max(d_agg, (1.0 - ctx.max_offset) * d_level)
    return float(d_value + d_haircut + pnl + ctx.mm_fraction * (d_initial + d_depeg))


# ---------------------------------------------------------------- search


@no_refcount
def brent_step(st: np.ndarray, xtol: float, rtol: float) -> bool:
    """One iteration of scipy's ``brentq`` (Zeros/brentq.c) in reverse communication.

    st = [xpre, xcur, xblk, fpre, fcur, fblk, spre, scur] with fcur = f(xcur) just computed.
    Returns True when converged (the root is st[1]); otherwise st[1] is the next point to
    evaluate (store f there in st[4] and call again)."""
    xpre, xcur, xblk, fpre, fcur, fblk, spre, scur = (st[0], st[1], st[2], st[3], st[4],
                                                      st[5], st[6], st[7])
    if fpre != 0.0 and fcur != 0.0 and (math.copysign(1.0, fpre) != math.copysign(1.0, fcur)):
        xblk = xpre
        fblk = fpre
        spre = xcur - xpre
        scur = spre
    if abs(fblk) < abs(fcur):
        xpre = xcur
        xcur = xblk
        xblk = xpre
        fpre = fcur
        fcur = fblk
        fblk = fpre
    delta = (xtol + rtol * abs(xcur)) / 2.0
    sbis = (xblk - xcur) / 2.0
    if fcur == 0.0 or abs(sbis) < delta:
        st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = (xpre, xcur, xblk, fpre, fcur,
                                                                  fblk, spre, scur)
        return True
    if abs(spre) > delta and abs(fcur) < abs(fpre):
        if xpre == xblk:
            stry = -fcur * (xcur - xpre) / (fcur - fpre)
        else:
            dpre = (fpre - fcur) / (xpre - xcur)
            dblk = (fblk - fcur) / (xblk - xcur)
            stry = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
        if 2.0 * abs(stry) < min(abs(spre), 3.0 * abs(sbis) - delta):
            spre = scur
            scur = stry
        else:
            spre = sbis
            scur = sbis
    else:
        spre = sbis
        scur = sbis
    xpre = xcur
    fpre = fcur
    if abs(scur) > delta:
        xcur += scur
    else:
        xcur += delta if sbis > 0.0 else -delta
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = (xpre, xcur, xblk, fpre, fcur,
                                                              fblk, spre, scur)
    return False


@no_refcount
def _brent_start(st: np.ndarray, lo: float, hi: float, f_lo: float, f_hi: float, xtol: float,
                 rtol: float) -> bool:
    """Brent's state on the bracket [lo, hi] and its first step (``brent_step``): True when
    that already converged (the root is st[1]), else st[1] is the first point to evaluate."""
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = (lo, hi, 0.0, f_lo, f_hi, 0.0,
                                                              0.0, 0.0)
    return brent_step(st, xtol, rtol)


@no_refcount
def _evaluate(bk: Any, cl: Any, ctx: Any, job: int, u: int, s: float, j: int, index0: float,
              table: np.ndarray, table_row: np.ndarray, rows: np.ndarray, k: int,
              states: np.ndarray, work: np.ndarray, iwork: np.ndarray,
              aux: np.ndarray) -> float:
    """f at level s; at grid level j >= 0 u's instrument states come from the shared table
    when there is one (the same numbers; an entry still NaN is computed into it first), else
    they are computed."""
    ratio = s / index0
    aux[12] = 0.0
    if j >= 0 and table.shape[0] > 0:
        width = states.shape[1]
        for kk in range(k):
            i = bk.inst[rows[kk]]
            r = table_row[i]
            if math.isnan(table[r, j, 0]):  # a kept table (``StateTables``): filled on use
                inst_state(bk, ctx, i, s, ratio, table[r, j])
            for w in range(width):
                states[kk, w] = table[r, j, w]
    else:
        for kk in range(k):
            inst_state(bk, ctx, bk.inst[rows[kk]], s, ratio, states[kk])
    return gap_at(bk, cl, ctx, job, u, s, ratio, rows, k, states, work, iwork, aux)


# ---------------------------------------------------------------- refinement by candidates
# Brent's steps off the grid re-price u's options on every scenario. Near a point x where all
# scenario values are known (``pool``: the bracket's grid levels, and the steps evaluated in
# full), a scenario value moves by at most max(1, 1 + move) x |change of the option's base|
# (``_option_slope``: (1 + move) x one delta less another, both in [0, 1] or both in [-1, 0]);
# between two such points xa < s < xb it lies within its chord +- (s - xa)(xb - s) / (2 xa) x
# a curvature bound (``candidate_constants_nb``); a delta-one value change is exact. Scenarios
# whose lower bound lies above the smallest upper bound (with a margin far above rounding)
# cannot be the worst nor tie with it, and are left out (NaN, then ``LEFT_OUT`` in the gap).
# The worst scenario, hence f, is the same number as the full evaluation's.

LEFT_OUT = 1e300
CANDIDATE_MARGIN = 1e-9  # relative to the scale of the scenario P&L
POOL = 6  # fully evaluated points kept per root


def candidates(bk: Any, ctx: Any, rows: Any, k: int, s: float, x: float, known: Any,
               exposure: float, bounds: Any, chosen: Any, x2: float, known2: Any, sums: Any,
               key: Any) -> int:
    """chosen[w]: whether scenario w can be the worst at s, from the states ``known`` at x
    and, when x2 is a number on the other side of s, ``known2`` at x2; returns how many
    can. ``sums``, ``key``: the bound's sums over the positions for these points, kept from
    one call to the next (key[2] = 0: none kept)."""
    raise NotImplementedError


@overload(candidates, jit_options=NO_REFCOUNT)
def _candidates_ov(bk: Any, ctx: Any, rows: Any, k: Any, s: Any, x: Any, known: Any,
                   exposure: Any, bounds: Any, chosen: Any, x2: Any, known2: Any, sums: Any,
                   key: Any) -> Any:
    if _is(ctx, PortfolioCtx):
        def portfolio(bk: Any, ctx: Any, rows: Any, k: Any, s: Any, x: Any, known: Any,
                      exposure: Any, bounds: Any, chosen: Any, x2: Any, known2: Any,
                      sums: Any, key: Any) -> int:
            return _portfolio_candidates(bk, ctx, rows, k, s, x, known, exposure, bounds,
                                         chosen, x2, known2, sums, key)
        return portfolio

    def every(bk: Any, ctx: Any, rows: Any, k: Any, s: Any, x: Any, known: Any,
              exposure: Any, bounds: Any, chosen: Any, x2: Any, known2: Any, sums: Any,
              key: Any) -> int:
        chosen[:] = True
        return int(chosen.shape[0])
    return every


SUMS = 7  # rows of ``candidate_sums``


@no_refcount
def _portfolio_candidates(b: BookArrays, ctx: PortfolioCtx, rows: np.ndarray, k: int,
                          s: float, x: float, known: np.ndarray, exposure: float,
                          bounds: np.ndarray, chosen: np.ndarray, x2: float,
                          known2: np.ndarray, sums: np.ndarray, key: np.ndarray) -> int:
    """Per scenario w, bounds of the P&L at s: the value at the nearer known point +- the
    distance x the option slopes (``_option_slope``), and between two known points xa < s <
    xb also the chord +- (s - xa)(xb - s) / (2 xa) x the curvature sum (``candidate_sums``),
    the tighter of the two; delta-one positions and the coin exposure exactly."""
    n_s = ctx.moves.shape[0]
    two = (x < s < x2) or (x2 < s < x)  # x2 NaN: one point only
    xa, xb = (min(x, x2), max(x, x2)) if two else (x, -1.0)
    if not (key[2] == 1.0 and key[0] == xa and key[1] == xb):
        if two and x2 < x:
            candidate_sums(b, ctx, rows, k, known2, known, True, sums)
        else:
            candidate_sums(b, ctx, rows, k, known, known2, two, sums)
        key[0], key[1], key[2] = xa, xb, 1.0
    lo = bounds[0]
    hi = bounds[1]
    near_b = two and abs(s - xb) < abs(s - xa)
    dist = abs(s - xb) if near_b else abs(s - xa)
    t = (s - xa) / (xb - xa) if two else 0.0
    bend = (s - xa) * (xb - s) / (2.0 * xa) if two else 0.0
    scale = 1.0 + sums[5, 0] + dist * sums[5, 1]
    for w in range(n_s):
        near = sums[0, w] + sums[1, w] if near_b else sums[0, w]
        lo[w] = near - dist * sums[3, w]
        hi[w] = near + dist * sums[3, w]
        if two and sums[2, w] < math.inf:
            chord = sums[0, w] + t * sums[1, w]
            lo[w] = max(lo[w], chord - bend * sums[2, w])
            hi[w] = min(hi[w], chord + bend * sums[2, w])
        linear = s * sums[4, w] + exposure * ctx.lin_moves[w]
        lo[w] += linear
        hi[w] += linear
    ceiling = math.inf
    for w in range(n_s):
        ceiling = min(ceiling, ctx.weights[w] * hi[w])
    ceiling += CANDIDATE_MARGIN * scale
    count = 0
    for w in range(n_s):
        chosen[w] = ctx.weights[w] * lo[w] <= ceiling
        if chosen[w]:
            count += 1
    return count


@no_refcount
def candidate_sums(b: BookArrays, ctx: PortfolioCtx, rows: np.ndarray, k: int,
                   known_a: np.ndarray, known_b: np.ndarray, two: bool,
                   sums: np.ndarray) -> None:
    """Sums over the positions for scenario values V_w known at xa (and at xb > xa with
    ``two``), c being d base / d level (``ctx.dbase``):
    0: sum q V_w(xa) over options and settled positions; 1: sum q (V_w(xb) - V_w(xa));
    2: sum |q| x ``ctx.curvature`` (x (s - xa)(xb - s) / (2 xa): how far sum q V_w(s) can lie
    from its chord); 3: sum over live options of |q| c x ``_option_slope`` (the P&L's slope
    in the level); 4: sum over live delta-one positions of q c x linear move (exact: base x
    move); 5: [sum |q| (|mark| + sum_w |V_w|) at xa, sum |q| c] (the P&L's scale); 6: its
    terms per scenario, sum |q| |V_w|."""
    n_s = ctx.moves.shape[0]
    for r in range(SUMS):
        for w in range(n_s):
            sums[r, w] = 0.0
    # the scale's scenario terms summed per scenario (row 6), then across: a chain of one
    # addition per position and scenario took more than the rest of the sums (the scale
    # sets a margin, so the order of its additions does not matter)
    scale = 0.0
    scale_slope = 0.0  # sums[5, 1]
    for kk in range(k):
        p = rows[kk]
        i = b.inst[p]
        q = b.q[p]
        aq = abs(q)
        live = b.live[i]
        c = ctx.dbase[i]
        scale += aq * abs(known_a[kk, 0])
        scale_slope += aq * c
        for w in range(n_s):
            sums[6, w] += aq * abs(known_a[kk, 1 + w])
        if live and not b.is_option[i]:
            for w in range(n_s):
                sums[4, w] += q * c * ctx.lin_moves[w]
            continue
        for w in range(n_s):
            sums[0, w] += q * known_a[kk, 1 + w]
        if two:
            for w in range(n_s):
                sums[1, w] += q * (known_b[kk, 1 + w] - known_a[kk, 1 + w])
        if live:  # a settled position's value change is 0 at every level
            for w in range(n_s):
                sums[2, w] += aq * ctx.curvature[i, w]
                sums[3, w] += aq * c * ctx.slope[w]
    for w in range(n_s):
        scale += sums[6, w]
    sums[5, 0] = scale
    sums[5, 1] = scale_slope


@njit(cache=True)
def vol_scales_nb(years: np.ndarray, ctx: Any) -> np.ndarray:
    """``PortfolioCtx.vol_scale``: per instrument (reference days / days to expiry) ** power,
    the share of a scenario's vol shock an option of this tenor takes (days at least 1; the
    short power below the reference tenor, the long one from it)."""
    out = np.empty(years.shape[0])
    for i in range(years.shape[0]):
        t_days = max(1.0, years[i] * 365.0)
        power = ctx.p_short if t_days < ctx.ref_days else ctx.p_long
        out[i] = (ctx.ref_days / t_days) ** power
    return out


@njit(cache=True)
def candidate_constants_nb(bk: Any, ctx: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slope, curvature, dbase) of ``PortfolioCtx`` (its ``vol_scale`` filled):
    per scenario ``_option_slope`` of its move;
    instruments x scenarios, for a live option c / sqrt(2 pi T) x ((1 + move) / scenario vol
    + 1 / vol), which x (s - xa)(xb - s) / (2 xa) bounds how far its scenario value change
    lies from its chord between levels xa < s < xb (|d2 / ds2| <= c^2 ((1 + move)^2 Gamma_w +
    Gamma), a Black-76 gamma at forward F being at most 1 / (sqrt(2 pi) F vol sqrt T), F >= c
    xa (1 + move)), inf when it has no such bound (at or past expiry, a zero vol, a move of
    -100 % or more), 0 for the other instruments;
    per instrument c = d base / d level: base / index for a mark that moves with the index, 1
    for the index itself, 0 when settled."""
    n_s = ctx.moves.shape[0]
    n_i = bk.live.shape[0]
    slope = np.empty(n_s)
    for w in range(n_s):
        slope[w] = _option_slope(ctx.moves[w])
    dbase = np.zeros(n_i)
    curvature = np.zeros((n_i, n_s))
    for i in range(n_i):
        if not bk.live[i]:
            continue
        dbase[i] = bk.base[i] / bk.und_index[bk.und[i]] if bk.base_scaled[i] else 1.0
        if not bk.is_option[i]:
            continue
        curved = bk.years[i] > 0.0 and bk.sigma[i] > 0.0
        for w in range(n_s):
            grown = 1.0 + ctx.moves[w]
            shocked = _shocked_sigma(ctx, i, w) if curved else 0.0
            if curved and grown > 0.0 and shocked > 0.0:
                curvature[i, w] = (dbase[i] * _INV_SQRT_2PI / math.sqrt(bk.years[i])
                                   * (grown / shocked + 1.0 / bk.sigma[i]))
            else:
                curvature[i, w] = math.inf
    return slope, curvature, dbase


@no_refcount
def _option_slope(move: float) -> float:
    """Largest |d (V(F (1 + move)) - V(F)) / dF| of a Black-76 price V: (1 + move) x one delta
    less another, each delta in [0, 1] (calls) or [-1, 0] (puts)."""
    grown = 1.0 + move
    return max(1.0, grown) if grown >= 0.0 else 1.0 - grown


def chosen_state(bk: Any, ctx: Any, i: int, s: float, ratio: float, out: Any, chosen: Any,
                 only_chosen: bool, slope: Any, sloped: bool) -> None:
    """``inst_state``, with ``only_chosen`` for the chosen scenarios only (the others NaN);
    with ``sloped``, ``slope`` = the state's derivatives in the level s (the portfolio model;
    NaN for the others)."""
    raise NotImplementedError


@overload(chosen_state, jit_options=NO_REFCOUNT)
def _chosen_state_ov(bk: Any, ctx: Any, i: Any, s: Any, ratio: Any, out: Any, chosen: Any,
                     only_chosen: Any, slope: Any, sloped: Any) -> Any:
    if _is(ctx, PortfolioCtx):
        def portfolio(bk: Any, ctx: Any, i: Any, s: Any, ratio: Any, out: Any, chosen: Any,
                      only_chosen: Any, slope: Any, sloped: Any) -> None:
            c = ctx.dbase[i]  # 0 when settled
            if not (bk.live[i] and bk.is_option[i]):
                inst_state(bk, ctx, i, s, ratio, out)  # base, base x linear moves
                if sloped:
                    slope[0] = c
                    for j in range(ctx.moves.shape[0]):
                        slope[1 + j] = c * ctx.lin_moves[j]
                return
            _option_scenarios(bk, ctx, i, _base_at(bk, i, s, ratio), c, out, slope, sloped,
                              chosen, only_chosen)
        return portfolio

    def every(bk: Any, ctx: Any, i: Any, s: Any, ratio: Any, out: Any, chosen: Any,
              only_chosen: Any, slope: Any, sloped: Any) -> None:
        inst_state(bk, ctx, i, s, ratio, out)
        if sloped:
            for w in range(slope.shape[0]):
                slope[w] = math.nan
    return every


@no_refcount
def _refined(bk: Any, cl: Any, ctx: Any, job: int, u: int, s: float, index0: float,
             rows: np.ndarray, k: int, states: np.ndarray, work: np.ndarray,
             iwork: np.ndarray, aux: np.ndarray, pool_x: np.ndarray, pool: np.ndarray,
             n_pool: int, bounds: np.ndarray, chosen: np.ndarray, tmp: np.ndarray,
             sums: np.ndarray, key: np.ndarray, slopes: np.ndarray, sloped: bool) -> int:
    """f at the off-grid level s into aux[13] (its states in ``states``, with ``sloped``
    their derivatives in ``slopes``), the scenarios that cannot be the worst left out when
    the closest fully known points of ``pool`` allow it (``sums``, ``key``: see
    ``candidates``); returns the pool's new size (a full evaluation is added to it)."""
    ratio = s / index0
    nearest = 0
    for m in range(1, n_pool):
        if abs(pool_x[m] - s) < abs(pool_x[nearest] - s):
            nearest = m
    other = -1  # the nearest on the other side of s
    for m in range(n_pool):
        if (pool_x[m] - s) * (pool_x[nearest] - s) < 0.0 and (
                other < 0 or abs(pool_x[m] - s) < abs(pool_x[other] - s)):
            other = m
    collateral_at(cl, job, u, ratio, tmp)
    count = candidates(bk, ctx, rows, k, s, pool_x[nearest], pool[nearest], tmp[2], bounds,
                       chosen, pool_x[other] if other >= 0 else math.nan, pool[max(other, 0)],
                       sums, key)
    if 2 * count > chosen.shape[0]:  # too many: evaluate in full and keep it
        aux[13] = _full(bk, cl, ctx, job, u, s, ratio, rows, k, states, work, iwork, aux,
                        chosen, slopes, sloped)
        slot = n_pool if n_pool < pool_x.shape[0] else _farthest(pool_x, n_pool, s)
        pool_x[slot] = s
        for kk in range(k):
            for w in range(states.shape[1]):
                pool[slot, kk, w] = states[kk, w]
        return min(n_pool + 1, int(pool_x.shape[0]))
    for kk in range(k):
        chosen_state(bk, ctx, bk.inst[rows[kk]], s, ratio, states[kk], chosen, True,
                     slopes[kk], sloped)
    aux[12] = 1.0
    aux[13] = gap_at(bk, cl, ctx, job, u, s, ratio, rows, k, states, work, iwork, aux)
    aux[12] = 0.0
    return n_pool


@no_refcount
def _full(bk: Any, cl: Any, ctx: Any, job: int, u: int, s: float, ratio: float,
          rows: np.ndarray, k: int, states: np.ndarray, work: np.ndarray, iwork: np.ndarray,
          aux: np.ndarray, chosen: np.ndarray, slopes: np.ndarray, sloped: bool) -> float:
    """f at s from u's instrument states there on every scenario (and with ``sloped``
    their derivatives in ``slopes``)."""
    aux[12] = 0.0
    for kk in range(k):
        chosen_state(bk, ctx, bk.inst[rows[kk]], s, ratio, states[kk], chosen, False,
                     slopes[kk], sloped)
    return gap_at(bk, cl, ctx, job, u, s, ratio, rows, k, states, work, iwork, aux)


@no_refcount
def _farthest(pool_x: np.ndarray, n_pool: int, s: float) -> int:
    far = 0
    for m in range(1, n_pool):
        if abs(pool_x[m] - s) > abs(pool_x[far] - s):
            far = m
    return far


@njit(cache=True, nogil=True)
def search_levels_nb(bk: Any, cl: Any, ctx: Any, jobs: np.ndarray, start: int, stop: int,
                     u: int, index0: float, levels: np.ndarray, j0: int, table: np.ndarray,
                     table_row: np.ndarray, cum: np.ndarray, xtol: float, rtol: float,
                     max_rows: int, work_size: int, exposure: np.ndarray, down: np.ndarray,
                     up: np.ndarray, evaluations: np.ndarray, chords: np.ndarray,
                     node: np.ndarray, prune: bool, newton: bool) -> None:
    """For jobs[start:stop], the root of f closest below (``down``) and above (``up``) today's
    index on the grid ``levels`` (ascending, levels[j0] = index0), NaN where f has none or the
    job holds nothing in u (no row and, when ``exposure`` (accounts x underlyings) is given,
    no coin of u); ``evaluations``: f evaluations per job; ``chords`` and ``node``: the
    chord deviations of the table's instruments (``chord_deviations_nb``; empty: none);
    ``prune``: Brent's steps leave out the scenarios that cannot be the worst (``_refined``;
    the portfolio model only); ``newton``: a bracket is refined by Newton's steps first
    (``_newton_step``; the portfolio model only).
    Releases the GIL: callers run slices of the jobs on several threads."""
    width = state_width_nb(ctx)
    size = max(max_rows, 1)
    scenarios = max(width - 1, 1)
    scratch = Scratch(
        rows=np.empty(size, dtype=np.uint32), ahead=np.empty(size, dtype=np.uint32),
        states=np.empty((size, width)), slopes=np.zeros((size, width)),
        shifted=np.empty((size, width)), nt=np.zeros(7), ends=np.empty((4, scenarios)),
        work=np.empty(work_size), work0=np.empty(work_size),
        iwork=np.empty(max(size, bk.und_index.shape[0] + 1), dtype=np.int64),
        aux=np.zeros(AUX), aux0=np.zeros(AUX),
        tmp=np.zeros(AUX), st=np.empty(8), cparts=np.empty((2 + 32, PARTS)),
        cpnls=np.empty((2 + 32, scenarios)), cslots=np.empty(2 + 32, dtype=np.int64),
        pool_x=np.empty(POOL),
        pool=np.empty((POOL, size, width)), bounds=np.empty((2, scenarios)),
        chosen=np.empty(scenarios, dtype=np.bool_), sums=np.empty((SUMS, scenarios)),
        key=np.zeros(3))
    _search_chunk(bk, cl, ctx, jobs, start, stop, u, index0, levels, j0, table, table_row, cum,
                  xtol, rtol, exposure, down, up, evaluations, chords, node, prune, newton,
                  scratch)


class Scratch(NamedTuple):
    """The search's working arrays (allocated by the caller: the search itself is compiled
    without reference counting, so the functions it calls are read in place)."""

    rows: np.ndarray  # the job's rows in u
    ahead: np.ndarray  # the next job's
    states: np.ndarray  # their instrument states at the level evaluated
    slopes: np.ndarray  # ... their derivatives in the level (Newton's steps)
    shifted: np.ndarray  # ... the states moved along them (``_slope_by_shift``)
    nt: np.ndarray  # Newton's state: [lo, hi, f(lo), f(hi), last step, steps, next point]
    ends: np.ndarray  # the scenarios' bounds at the bracket's ends (``continuous_between``)
    work: np.ndarray  # the gap's work space
    work0: np.ndarray  # ... at today's index
    iwork: np.ndarray
    aux: np.ndarray  # what the gap leaves for the bounds
    aux0: np.ndarray  # ... at today's index
    tmp: np.ndarray
    st: np.ndarray  # Brent's state
    cparts: np.ndarray  # the chord bracket's block ends (their bound parts)
    cpnls: np.ndarray  # ... their scenario P&L
    cslots: np.ndarray  # ... which rows are free, which are far ends to visit
    pool_x: np.ndarray  # levels fully evaluated near the root
    pool: np.ndarray  # ... their states
    bounds: np.ndarray  # the candidates' bounds
    chosen: np.ndarray  # the candidate scenarios
    sums: np.ndarray  # ``candidate_sums``
    key: np.ndarray  # the bracket the sums are for


SCAN, ZERO_LO, ZERO_HI, SOLVE, DONE, NEWTON_SOLVE = 0, 1, 2, 3, 4, 5
SKIP_MARGIN = 1e-9  # relative slack on the skip bound (rounding of f and of the bound)


@no_refcount_body
def _search_chunk(bk: Any, cl: Any, ctx: Any, jobs: np.ndarray, start: int, stop: int, u: int,
                  index0: float, levels: np.ndarray, j0: int, table: np.ndarray,
                  table_row: np.ndarray, cum: np.ndarray, xtol: float, rtol: float,
                  exposure: np.ndarray, down: np.ndarray, up: np.ndarray,
                  evaluations: np.ndarray, chords: np.ndarray, node: np.ndarray, prune: bool,
                  newton: bool, scratch: Scratch) -> None:
    """The search as a state machine around one evaluation of f per step: scan (down from
    the index, then up), an exact zero widened by a hair, Brent. Without reference counting:
    the arrays of the book, the context and ``scratch`` are read in place."""
    n_lv = levels.shape[0]
    rows, states, work, work0, iwork = (scratch.rows, scratch.states, scratch.work,
                                        scratch.work0, scratch.iwork)
    aux, aux0, tmp, st = scratch.aux, scratch.aux0, scratch.tmp, scratch.st
    cparts, cpnls, pool_x, pool = scratch.cparts, scratch.cpnls, scratch.pool_x, scratch.pool
    bounds, chosen, sums, key = scratch.bounds, scratch.chosen, scratch.sums, scratch.key
    slopes, nt = scratch.slopes, scratch.nt
    width = states.shape[1]
    n_pool = 0
    for x in range(start, stop):
        job = jobs[x]
        k = job_rows(bk, ctx, job, u, rows)
        if x + 1 < stop and table.shape[0] > 0:  # the next job's first levels, on their way
            ahead = job_rows(bk, ctx, jobs[x + 1], u, scratch.ahead)
            for j_first in (j0, 0, n_lv - 1):
                _prefetch_level(bk, table, table_row, scratch.ahead, ahead, j_first)
        down[x] = math.nan
        up[x] = math.nan
        evaluations[x] = 0
        if k == 0 and (exposure.shape[0] == 0 or exposure[job, u] == 0.0):
            continue  # nothing of u in the account
        count = 0
        side = -1  # scanning down first, then up
        phase = SCAN
        j = j0  # the grid level being evaluated (-1: off the grid)
        s = levels[j0]
        f0 = 0.0
        f_prev = 0.0
        j_prev = j0
        skip = True
        zero = 0.0
        f_zero_lo = 0.0
        root = math.nan
        f = 0.0
        reuse = False
        while phase != DONE:
            if reuse:  # the up side starts from f at the index, known
                f = f0
                reuse = False
            elif phase in (SOLVE, NEWTON_SOLVE) and n_pool > 0:  # (Newton: always a pool)
                n_pool = _refined(bk, cl, ctx, job, u, s, index0, rows, k, states, work, iwork,
                                  aux, pool_x, pool, n_pool, bounds, chosen, tmp, sums, key,
                                  slopes, phase == NEWTON_SOLVE)
                f = aux[13]
                count += 1
            else:
                f = _evaluate(bk, cl, ctx, job, u, s, j, index0, table, table_row, rows, k,
                              states, work, iwork, aux)
                count += 1
            if phase == SCAN:
                chord_none = False
                if j == j0:
                    f0 = f
                    for w in range(aux.shape[0]):
                        aux0[w] = aux[w]
                    for w in range(work.shape[0]):
                        work0[w] = work[w]
                    if chords.shape[0] > 0 and f != 0.0:
                        # the side's closest bracket by certified blocks (or none)
                        end = 0 if side < 0 else n_lv - 1
                        found, f_prev, f, used = _chord_bracket(
                            bk, cl, ctx, job, u, j0, end, f, levels, index0, table, table_row,
                            rows, k, states, work, iwork, aux, chords, node, cparts, cpnls,
                            scratch.cslots)
                        count += used
                        if found < 0:
                            chord_none = True
                        else:
                            j = found
                            j_prev = found - side
                            s = levels[j]
                if chord_none:
                    root = math.nan
                else:
                    zero_here = f == 0.0 and (side < 0 or j != j0)
                    crossed = j != j0 and f * f_prev < 0.0
                    if (zero_here or crossed) and abs(j - j_prev) > 1:
                        # cannot happen (the skip bound): redo the stretch one level at a time
                        skip = False
                        j = j_prev + side
                        s = levels[j]
                        continue
                    if zero_here:
                        n_pool = 0
                        phase = ZERO_LO
                        zero = levels[j]
                        s = zero * (1.0 - ZERO_WIDTH)
                        j = -1
                        continue
                    if crossed:
                        lo, hi = (levels[j], levels[j_prev]) if side < 0 else (levels[j_prev],
                                                                               levels[j])
                        f_lo, f_hi = (f, f_prev) if side < 0 else (f_prev, f)
                        n_pool = 0
                        key[2] = 0.0  # another root: the candidates' sums are not these
                        if prune and table.shape[0] > 0:  # the bracket's states are known
                            for m in range(2):
                                jj = j if m == 0 else j_prev
                                pool_x[m] = levels[jj]
                                for kk in range(k):
                                    r = table_row[bk.inst[rows[kk]]]
                                    for w in range(width):
                                        pool[m, kk, w] = table[r, jj, w]
                            n_pool = 2
                        if newton and n_pool == 2 and hi - lo > xtol + rtol * hi and \
                                continuous_between(bk, cl, ctx, job, u, rows, k, index0,
                                                   pool_x, pool, sums, key, tmp,
                                                   scratch.ends):
                            # the secant first, then Newton's steps (``_newton_step``)
                            nt[0], nt[1], nt[2], nt[3], nt[4], nt[5] = (lo, hi, f_lo, f_hi,
                                                                        0.0, 0.0)
                            s = lo - f_lo * (hi - lo) / (f_hi - f_lo)
                            if not lo < s < hi:
                                s = 0.5 * (lo + hi)
                            phase = NEWTON_SOLVE
                            j = -1
                            continue
                        phase = SOLVE
                        if not _brent_start(st, lo, hi, f_lo, f_hi, xtol, rtol):
                            s = st[1]
                            j = -1
                            continue
                        root = st[1]
                    else:
                        end = 0 if side < 0 else n_lv - 1
                        if j != end:
                            f_prev = f
                            j_prev = j
                            j = j + side
                            if skip and f != 0.0:
                                j = _skip_to(bk, cl, ctx, job, u, j_prev, side, end, abs(f),
                                             levels, index0, cum, table_row, rows, k, aux, tmp)
                            s = levels[j]
                            continue
                        root = math.nan
            elif phase == ZERO_LO:
                f_zero_lo = f
                phase = ZERO_HI
                s = zero * (1.0 + ZERO_WIDTH)
                continue
            elif phase == ZERO_HI:
                lo, hi = zero * (1.0 - ZERO_WIDTH), zero * (1.0 + ZERO_WIDTH)
                if f_zero_lo == 0.0:
                    root = lo
                elif f == 0.0:
                    root = hi
                elif math.copysign(1.0, f_zero_lo) == math.copysign(1.0, f):
                    root = zero  # f touches zero without crossing: the grid level itself
                else:
                    phase = SOLVE
                    if not _brent_start(st, lo, hi, f_zero_lo, f, xtol, rtol):
                        s = st[1]
                        j = -1
                        continue
                    root = st[1]
            elif phase == NEWTON_SOLVE:
                slope = _slope_by_shift(bk, cl, ctx, job, u, s, index0, rows, k, states,
                                        slopes, scratch.shifted, work, iwork, aux, f)
                nxt = _newton_step(nt, s, f, slope, xtol + rtol * abs(s))
                if nxt == NEWTON_DONE:
                    root = nt[6]
                elif nxt == NEWTON_ON:
                    s = nt[6]
                    continue
                else:  # Brent on what is left of the bracket
                    phase = SOLVE
                    if not _brent_start(st, nt[0], nt[1], nt[2], nt[3], xtol, rtol):
                        s = st[1]
                        continue
                    root = st[1]
            else:  # SOLVE
                st[4] = f
                if not brent_step(st, xtol, rtol):
                    s = st[1]
                    continue
                root = st[1]
            # a side is done: record it, then scan up from the index (f0 known)
            if side < 0:
                down[x] = root
                side = 1
                phase = SCAN
                skip = True
                root = math.nan
                for w in range(aux.shape[0]):
                    aux[w] = aux0[w]
                for w in range(work.shape[0]):
                    work[w] = work0[w]
                j = j0
                j_prev = j0
                s = levels[j0]
                reuse = True
            else:
                up[x] = root
                phase = DONE
        evaluations[x] = count


# ---------------------------------------------------------------- Newton's steps
# A bracket's off-grid evaluations price u's options with their deltas (the same normal tail),
# so each gives f and its slope: Newton's method converges quadratically where Brent's
# interpolations need about four evaluations a root, the last one a step of the tolerance to
# close the bracket. The slope of f is taken by moving u's instrument states along their
# derivatives by a relative NEWTON_SHIFT and evaluating the rest of f (collateral, haircuts,
# contingencies, the aggregation) exactly there, so no model's formula is differentiated by
# hand. A root is taken when the step is within Brent's tolerance, or when the error the last
# step leaves, estimated from the last two (quadratic convergence: e ~ step^3 / last step^2),
# is; the bracket is kept and any step out of it, a slope that is no number or zero, or
# NEWTON_STEPS steps, hand what is left of the bracket to Brent.

NEWTON_SHIFT = 1e-7  # relative move of the level for f's slope
NEWTON_STEPS = 6
NEWTON_ON, NEWTON_DONE, NEWTON_BRENT = 0, 1, 2


@no_refcount
def _slope_by_shift(bk: Any, cl: Any, ctx: Any, job: int, u: int, s: float, index0: float,
                    rows: np.ndarray, k: int, states: np.ndarray, slopes: np.ndarray,
                    shifted: np.ndarray, work: np.ndarray, iwork: np.ndarray, aux: np.ndarray,
                    f: float) -> float:
    """df/ds at s (f there, its states and their slopes known): (f(s + h) - f) / h, u's states
    at s + h moved along their slopes, h = NEWTON_SHIFT x s (scenarios left out stay out)."""
    t = s * (1.0 + NEWTON_SHIFT)
    h = t - s
    for kk in range(k):
        for w in range(states.shape[1]):
            shifted[kk, w] = states[kk, w] + h * slopes[kk, w]
    aux[12] = 1.0
    moved = gap_at(bk, cl, ctx, job, u, t, t / index0, rows, k, shifted, work, iwork, aux)
    aux[12] = 0.0
    return (moved - f) / h


def continuous_between(bk: Any, cl: Any, ctx: Any, job: int, u: int, rows: Any, k: int,
                       index0: float, pool_x: Any, pool: Any, sums: Any, key: Any,
                       tmp: Any, ends: Any) -> bool:
    """Whether f is provably continuous between the bracket's grid levels pool_x[0] and
    pool_x[1] (their states in ``pool``), which Newton's steps need to find Brent's root: f
    jumps where u's worst scenario turns to a move of another direction (the correlation term
    takes the direction's sign), and a bracket holding such a jump can hold several sign
    changes, of which Brent and Newton may take different ones. False for the models without
    the bound."""
    raise NotImplementedError


@overload(continuous_between, jit_options=NO_REFCOUNT)
def _continuous_between_ov(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, rows: Any, k: Any,
                           index0: Any, pool_x: Any, pool: Any, sums: Any, key: Any,
                           tmp: Any, ends: Any) -> Any:
    if _is(ctx, PortfolioCtx):
        def portfolio(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, rows: Any, k: Any,
                      index0: Any, pool_x: Any, pool: Any, sums: Any, key: Any,
                      tmp: Any, ends: Any) -> bool:
            return _one_direction(bk, cl, ctx, job, u, rows, k, index0, pool_x, pool, sums,
                                  key, tmp, ends)
        return portfolio

    def other(bk: Any, cl: Any, ctx: Any, job: Any, u: Any, rows: Any, k: Any, index0: Any,
              pool_x: Any, pool: Any, sums: Any, key: Any, tmp: Any, ends: Any) -> bool:
        return False
    return other


@no_refcount
def _one_direction(b: BookArrays, cl: Collateral, ctx: PortfolioCtx, a: int, u: int,
                   rows: np.ndarray, k: int, index0: float, pool_x: np.ndarray,
                   pool: np.ndarray, sums: np.ndarray, key: np.ndarray, tmp: np.ndarray,
                   ends: np.ndarray) -> bool:
    """``continuous_between`` for the portfolio model: true when no other underlying's cell
    meets u's in the correlation term, or when for one direction D (the sign of a scenario's
    move) a scenario r of direction D lies below every scenario of another direction at
    every level of the bracket, by the bounds of ``_portfolio_candidates`` over the whole
    bracket: each scenario's weighted P&L within its chord +- (xb - xa)^2 / (8 xa) x its
    curvature sum (``candidate_sums``; the delta-one and coin parts exact and, like the chord,
    affine in the level, so a difference of two bounds is smallest at an end)."""
    n_s = ctx.moves.shape[0]
    meets = False
    for v in range(b.und_index.shape[0]):
        if v != u and ctx.level_other[a, v] * ctx.direction_other[a, v] * (
                abs(ctx.rho[u, v]) + abs(ctx.rho[v, u])) != 0.0:
            meets = True
    if not meets:
        return True
    m_a = 0 if pool_x[0] < pool_x[1] else 1
    xa, xb = pool_x[m_a], pool_x[1 - m_a]
    candidate_sums(b, ctx, rows, k, pool[m_a], pool[1 - m_a], True, sums)
    key[0], key[1], key[2] = xa, xb, 1.0  # the first Newton step's candidates reuse them
    bend = (xb - xa) * (xb - xa) / (8.0 * xa)
    collateral_at(cl, a, u, xa / index0, tmp)
    e_a = tmp[2]
    collateral_at(cl, a, u, xb / index0, tmp)
    e_b = tmp[2]
    scale = (1.0 + sums[5, 0] + (xb - xa) * sums[5, 1]) * max(1.0, ctx.w_max)
    margin = (CANDIDATE_MARGIN + TIE_TOLERANCE) * scale
    # ends[2 e]: scenario w's weighted lower bound at end e, ends[2 e + 1] its upper bound
    for w in range(n_s):
        for end in range(2):
            value = sums[0, w] + xa * sums[4, w] + e_a * ctx.lin_moves[w] if end == 0 else \
                sums[0, w] + sums[1, w] + xb * sums[4, w] + e_b * ctx.lin_moves[w]
            ends[2 * end, w] = ctx.weights[w] * (value - bend * sums[2, w])
            ends[2 * end + 1, w] = ctx.weights[w] * (value + bend * sums[2, w])
    for direction in (-1.0, 0.0, 1.0):
        r = -1  # the scenario of this direction with the lowest upper bounds
        for w in range(n_s):
            if _direction(ctx.moves[w]) == direction and (
                    r < 0 or ends[1, w] + ends[3, w] < ends[1, r] + ends[3, r]):
                r = w
        if r < 0:
            continue
        below = True
        for w in range(n_s):
            if _direction(ctx.moves[w]) != direction and not (
                    ends[0, w] > ends[1, r] + margin and ends[2, w] > ends[3, r] + margin):
                below = False
                break
        if below:
            return True
    return False


@no_refcount
def _direction(move: float) -> float:
    return 1.0 if move > 0.0 else (-1.0 if move < 0.0 else 0.0)


@no_refcount
def _newton_step(nt: np.ndarray, x: float, f: float, slope: float, tol: float) -> int:
    """After f and its slope at x inside the bracket [nt[0], nt[1]]: the bracket kept on the
    side of x where f changes sign, Newton's next point x - f / slope in nt[6]. Returns
    NEWTON_DONE (nt[6] is the root: f is 0 at x, the step is within ``tol``, or so is the
    error it is estimated to leave), NEWTON_ON (evaluate f at nt[6]) or NEWTON_BRENT."""
    if f == 0.0:
        nt[6] = x
        return NEWTON_DONE
    if (f > 0.0) == (nt[2] > 0.0):
        nt[0], nt[2] = x, f
    else:
        nt[1], nt[3] = x, f
    if not (math.isfinite(slope) and slope != 0.0):
        return NEWTON_BRENT
    nxt = x - f / slope
    step = abs(nxt - x)
    if step <= tol:  # (x may be an end of the bracket now: the root is kept inside it)
        nt[6] = min(max(nxt, nt[0]), nt[1])
        return NEWTON_DONE
    if not nt[0] < nxt < nt[1]:
        return NEWTON_BRENT
    last = nt[4]
    nt[6] = nxt
    if last > 0.0 and step * step * step <= tol * last * last:
        return NEWTON_DONE
    if nt[5] >= NEWTON_STEPS:
        return NEWTON_BRENT
    nt[4] = step
    nt[5] += 1.0
    return NEWTON_ON


# ---------------------------------------------------------------- chord certificates
# Over a block of grid levels [x, y] the portfolio gap is bounded by functions of the level
# built from the chords of its instruments' states between x and y: collateral, marks,
# scenario P&L, contingencies and longs/shorts are affine in the level there, and what the
# chords miss is the states' largest deviations from them at the block's levels
# (``chord_deviations_nb``) weighted by |q|, min(longs, shorts) above its chord, the haircut's
# and the depeg's changes (both grow with the level).
# * f > 0 at both ends: u's scan risk max(0, -min_w w_w P_w) is convex in the level, the
#   aggregation bound (``aux[9]``) convex, nondecreasing and 1-Lipschitz in it, so the lower
#   bound is concave: smallest at an end.
# * f < 0 at both ends: u's level is at least -w* P_w* (+ contingencies) for one scenario w*
#   (the worst at either end), and the IM at least (1 - max offset) x the levels' total and,
#   when the other underlyings' own terms allow it, u's level - their cross term: affine
#   lower bounds, so the upper bounds of f are affine: largest at an end.
# When the bound keeps f's sign at both ends, f has that sign at every grid level of the
# block: no zero and no sign change, the same brackets as the scan level by level.

PARTS = 14  # [f, lower bound, longs, shorts, haircut, scale, level, IM, option contingency,
#             depeg, worst scenario, other levels' total, cross, other terms of the quad]


def chord_certified(bk: Any, ctx: Any, rows: Any, k: int, table_row: Any, chords: Any,
                    nd: int, near: Any, far: Any, pnl_near: Any, pnl_far: Any) -> bool:
    """Whether f keeps the sign it has at both ends at every grid level of block ``nd``
    (``near``, ``far``: the parts of f at its two ends (``PARTS``); ``pnl_near``,
    ``pnl_far``: the scenario P&L there)."""
    raise NotImplementedError


@overload(chord_certified, jit_options=NO_REFCOUNT)
def _chord_certified_ov(bk: Any, ctx: Any, rows: Any, k: Any, table_row: Any, chords: Any,
                        nd: Any, near: Any, far: Any, pnl_near: Any, pnl_far: Any) -> Any:
    if _is(ctx, PortfolioCtx):
        def portfolio(bk: Any, ctx: Any, rows: Any, k: Any, table_row: Any, chords: Any,
                      nd: Any, near: Any, far: Any, pnl_near: Any, pnl_far: Any) -> bool:
            return _portfolio_certified(bk, ctx, rows, k, table_row, chords, nd, near, far,
                                        pnl_near, pnl_far)
        return portfolio

    def none(bk: Any, ctx: Any, rows: Any, k: Any, table_row: Any, chords: Any, nd: Any,
             near: Any, far: Any, pnl_near: Any, pnl_far: Any) -> bool:
        return False
    return none


@no_refcount
def _portfolio_certified(b: BookArrays, ctx: PortfolioCtx, rows: np.ndarray, k: int,
                         table_row: np.ndarray, chords: np.ndarray, nd: int,
                         x: np.ndarray, y: np.ndarray, pnl_x: np.ndarray,
                         pnl_y: np.ndarray) -> bool:
    mm = ctx.mm_fraction
    dev = 0.0
    for kk in range(k):
        p = rows[kk]
        r = table_row[b.inst[p]]
        dev += abs(b.q[p]) * (chords[r, nd, 0] * (1.0 + mm * ctx.lin_rate)
                              + mm * ctx.w_max * chords[r, nd, 1])
    longs_x, shorts_x, longs_y, shorts_y = x[2], x[3], y[2], y[3]
    gap_x, gap_y = longs_x - shorts_x, longs_y - shorts_y
    if gap_x * gap_y < 0.0:  # min(longs, shorts) bends where they cross
        t = gap_x / (gap_x - gap_y)
        low_x, low_y = min(longs_x, shorts_x), min(longs_y, shorts_y)
        dev += mm * ctx.lin_rate * max(0.0, longs_x + t * (longs_y - longs_x)
                                       - (low_x + t * (low_y - low_x)))
    dev += abs(y[4] - x[4]) + mm * abs(y[9] - x[9])
    slack = dev * (1.0 + SKIP_MARGIN) + SKIP_MARGIN * max(x[5], y[5])
    if x[0] > 0.0 and y[0] > 0.0:
        return bool(min(x[1], y[1]) > slack)
    if not (x[0] < 0.0 and y[0] < 0.0):
        return False
    best = math.inf
    for side in range(2):
        w = int(x[10]) if side == 0 else int(y[10])
        if w < 0:
            continue
        for form in range(2):
            if form == 1 and x[13] < x[12] * x[12]:
                continue  # the IM >= level - cross needs the other terms >= cross^2
            top = max(_upper_at(ctx, x, pnl_x[w], w, form), _upper_at(ctx, y, pnl_y[w], w, form))
            best = min(best, top)
    return bool(best < -slack)


@no_refcount
def _upper_at(ctx: PortfolioCtx, e: np.ndarray, pnl: float, w: int, form: int) -> float:
    """At a block end with parts ``e``: f's upper bound there with scenario w's P&L ``pnl``
    as u's level, the IM bounded below by (1 - max offset) x the levels' total (form 0) or
    by u's level less the cross term (form 1)."""
    level = -ctx.weights[w] * pnl + e[8] + ctx.lin_rate * min(e[2], e[3])
    low = (1.0 - ctx.max_offset) * (level + e[11]) if form == 0 else level - e[12]
    return float(e[0] + ctx.mm_fraction * (e[7] - low))


@no_refcount
def _bound_parts(f: float, level: int, aux: np.ndarray, work: np.ndarray, out: np.ndarray,
                 pnl: np.ndarray) -> None:
    out[0] = f
    out[1] = aux[9]
    out[2] = aux[10]
    out[3] = aux[11]
    out[4] = aux[1]
    out[5] = aux[8]
    out[6] = level
    out[7] = aux[14]
    out[8] = aux[15]
    out[9] = aux[3]
    out[10] = aux[16]
    out[11] = aux[17]
    out[12] = aux[6]
    out[13] = aux[18]
    for w in range(min(pnl.shape[0], work.shape[0])):
        pnl[w] = work[w]


@no_refcount
def _chord_bracket(bk: Any, cl: Any, ctx: Any, job: int, u: int, j0: int, end: int, f0: float,
                   levels: np.ndarray, index0: float, table: np.ndarray,
                   table_row: np.ndarray, rows: np.ndarray, k: int, states: np.ndarray,
                   work: np.ndarray, iwork: np.ndarray, aux: np.ndarray, chords: np.ndarray,
                   node: np.ndarray, parts: np.ndarray, pnls: np.ndarray,
                   slots: np.ndarray) -> tuple[int, float, float, int]:
    """The closest grid level from j0 towards ``end`` where f (!= 0 at j0; ``aux`` and
    ``work``: its parts there) is zero or has changed sign, as (level, f at the level before
    it, f there, evaluations); level -1 when there is none. Blocks of the fixed halving tree
    of [j0, end] (``chord_tree``) are taken nearest first: certified blocks are passed over,
    the others halved, down to adjacent levels. ``parts`` and ``pnls``: rows for the block
    ends' bound parts and scenario P&L, referred to by number, not copied (``slots``: the
    free rows first, the far ends still to visit at the end)."""
    used = 0
    if j0 == end:
        return -1, 0.0, 0.0, used
    n_slots = parts.shape[0]
    for m in range(n_slots):
        slots[m] = m
    free = n_slots  # slots[:free] are free; slots[n_slots - depth:] the far ends to visit
    sign = 1.0 if f0 > 0.0 else -1.0
    free -= 1
    near = slots[free]
    _bound_parts(f0, j0, aux, work, parts[near], pnls[near])
    y = end
    _prefetch_level(bk, table, table_row, rows, k, (j0 + end) // 2)
    f = _evaluate(bk, cl, ctx, job, u, levels[y], y, index0, table, table_row, rows, k,
                  states, work, iwork, aux)
    used += 1
    free -= 1
    far = slots[free]
    _bound_parts(f, y, aux, work, parts[far], pnls[far])
    depth = 0
    while True:
        x = int(parts[near, 6])
        advance = sign * parts[far, 0] > 0.0 and chord_certified(
            bk, ctx, rows, k, table_row, chords, node[x, y], parts[near], parts[far],
            pnls[near], pnls[far])
        if not advance and abs(y - x) == 1:
            if sign * parts[far, 0] <= 0.0:
                return y, parts[near, 0], parts[far, 0], used
            advance = True
        if advance:
            slots[free] = near  # the block is passed: its near end is not needed again
            free += 1
            near = far
            if depth == 0:
                return -1, 0.0, 0.0, used
            far = slots[n_slots - depth]
            depth -= 1
            y = int(parts[far, 6])
            continue
        depth += 1
        slots[n_slots - depth] = far
        last = y
        y = (x + y) // 2
        # the next level evaluated is the middle of [x, y] or of [y, last]: on its way
        _prefetch_level(bk, table, table_row, rows, k, (x + y) // 2)
        _prefetch_level(bk, table, table_row, rows, k, (y + last) // 2)
        f = _evaluate(bk, cl, ctx, job, u, levels[y], y, index0, table, table_row, rows, k,
                      states, work, iwork, aux)
        used += 1
        free -= 1
        far = slots[free]
        _bound_parts(f, y, aux, work, parts[far], pnls[far])


@no_refcount
def _prefetch_level(bk: Any, table: np.ndarray, table_row: np.ndarray, rows: np.ndarray,
                    k: int, j: int) -> None:
    """Start loading the table rows of the job's instruments at grid level j."""
    for kk in range(k):
        prefetch_row(table, table_row[bk.inst[rows[kk]]], j)


def chord_tree(j0: int, end: int) -> list[tuple[int, int]]:
    """The blocks (near, far) ``_chord_bracket`` can visit: [j0, end] halved at
    (near + far) // 2 down to adjacent levels."""
    blocks: list[tuple[int, int]] = []
    pending = [(j0, end)]
    while pending:
        near, far = pending.pop()
        if near == far:
            continue
        blocks.append((near, far))
        if abs(far - near) > 1:
            middle = (near + far) // 2
            pending += [(near, middle), (middle, far)]
    return blocks


@no_refcount_body
def chord_deviations_nb(table: np.ndarray, levels: np.ndarray, near: np.ndarray,
                        far: np.ndarray, start: int, stop: int, out: np.ndarray) -> None:
    """For table rows [start, stop) and every block b (grid levels between near[b] and far[b]):
    out[r, b, 0] = the largest |mark - its chord| at the block's levels, out[r, b, 1] the
    same over the scenario values. Releases the GIL."""
    width = table.shape[2]
    for r in range(start, stop):
        for b in range(near.shape[0]):
            lo, hi = min(near[b], far[b]), max(near[b], far[b])
            span = levels[hi] - levels[lo]
            d_mark = 0.0
            d_scen = 0.0
            for j in range(lo + 1, hi):
                t = (levels[j] - levels[lo]) / span
                for w in range(width):
                    chord = table[r, lo, w] + t * (table[r, hi, w] - table[r, lo, w])
                    d = abs(table[r, j, w] - chord)
                    if w == 0:
                        d_mark = max(d_mark, d)
                    else:
                        d_scen = max(d_scen, d)
            out[r, b, 0] = d_mark
            out[r, b, 1] = d_scen


@no_refcount
def _skip_to(bk: Any, cl: Any, ctx: Any, job: int, u: int, x: int, side: int, end: int,
             margin: float, levels: np.ndarray, index0: float, cum: np.ndarray,
             table_row: np.ndarray, rows: np.ndarray, k: int, aux: np.ndarray,
             tmp: np.ndarray) -> int:
    """The farthest grid level from x towards ``end`` up to which f provably keeps its sign
    (at least the next level): the one after next, then ``end`` itself when their bounds
    allow, else bisection between the last good and the first bad level (the bound grows
    with the distance from x; a model without a bound stops at the first test)."""
    limit = margin - SKIP_MARGIN * aux[8]
    best = x + side
    if limit <= 0.0 or best == end:
        return best
    for y in (best + side, end):
        if variation(bk, cl, ctx, job, u, x, y, levels, index0, cum, table_row, rows, k, aux,
                     tmp) * (1.0 + SKIP_MARGIN) >= limit:
            break
        best = y
        if y == end:
            return end
    bad = end if best != x + side or best + side == end else best + side
    while abs(bad - best) > 1:
        y = (best + bad) // 2
        bound = variation(bk, cl, ctx, job, u, x, y, levels, index0, cum, table_row, rows, k,
                          aux, tmp)
        if bound * (1.0 + SKIP_MARGIN) < limit:
            best = y
        else:
            bad = y
    return best


def state_width_nb(ctx: Any) -> int:
    raise NotImplementedError


@overload(state_width_nb)
def _state_width_ov(ctx: Any) -> Any:
    if _is(ctx, PortfolioCtx):
        def portfolio(ctx: Any) -> int:
            return 1 + ctx.moves.shape[0]  # type: ignore[no-any-return]
        return portfolio
    if _is(ctx, SensitivityCtx):
        def sensitivity(ctx: Any) -> int:
            return 3
        return sensitivity

    def one(ctx: Any) -> int:
        return 1
    return one


@no_refcount_body
def fill_table_nb(bk: Any, ctx: Any, instruments: np.ndarray, start: int, stop: int,
                  levels: np.ndarray, index0: float, table: np.ndarray, cum: np.ndarray) -> None:
    """For r in [start, stop): table[r, j, :] = state of instrument instruments[r] at grid
    level j; cum[r, j, 0 / 1] = sum over grid steps below j of |change of its mark| / of its
    largest scenario change. Releases the GIL."""
    for r in range(start, stop):
        _fill_row(bk, ctx, instruments[r], levels, index0, table[r], cum[r])


@no_refcount
def _fill_row(bk: Any, ctx: Any, i: int, levels: np.ndarray, index0: float, out: np.ndarray,
              cum: np.ndarray) -> None:
    width = out.shape[1]
    for j in range(levels.shape[0]):
        s = levels[j]
        inst_state(bk, ctx, i, s, s / index0, out[j])
    cum[0, 0] = 0.0
    cum[0, 1] = 0.0
    for j in range(1, levels.shape[0]):
        step = 0.0
        for w in range(1, width):
            step = max(step, abs(out[j, w] - out[j - 1, w]))
        cum[j, 0] = cum[j - 1, 0] + abs(out[j, 0] - out[j - 1, 0])
        cum[j, 1] = cum[j - 1, 1] + step
