"""Fused portfolio-margin kernel: scenario P&L, scan risk, contingencies and aggregation.

One pass over each account's CSR slice of positions (no per-account Python), parallel over
chunks of accounts. For account a and underlying u:
    P_u[s] = sum_p q_p x grid[inst_p, s] + collateral_u x m_lin_s
    (m_lin: the move of linear instruments, clamped at the standard grid's extremes)
    R_u = max(0, -min_s w_s P_u[s]) (first scenario in order wins ties, within 1e-12 relative:
    scanning s in order, a scenario replaces the worst b only if w_s P_u[s] < b - 1e-12 max(1, |b|))
    C_u = opt_rate x index_u x sum_groups max(0, -net_coins) + lin_rate x min(long, short)
    (groups in ascending order, each net summed in position order: netted on the fly when the
    account holds its options in group order, the usual case; else the rows are sorted first)
    L_u = R_u + C_u, d_u = sign(m_worst)
    agg = sqrt(max(0, sum_u L_u^2 + sum_{u != v} rho_uv d_u L_u d_v L_v))
    IM = max(agg, (1 - max_offset) x sum_u L_u), MM = mm_fraction x IM
With ``only_u`` >= 0 (a tick moved that underlying alone) only u's cells are recomputed; the
other underlyings' scan risk, contingency and worst scenario are taken from ``prev_*``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from margin_engine.core.types import FloatArray, IntArray

CHUNK = 2048
TIE_TOLERANCE = 1e-12


def unsigned(indexes: np.ndarray, signed: type[np.signedinteger]) -> np.ndarray:
    """Non-negative indexes (offsets, instrument and underlying numbers) as the unsigned
    integers of the same width, without a copy: numba tests and corrects an array read at a
    signed index for Python's wraparound, and the passes read ten million positions at such
    indexes (about 10 ms of the per-tick pass's 170 on the bench book)."""
    values = np.asarray(indexes, dtype=signed)
    return values.view(f"u{values.dtype.itemsize}")


@njit(cache=True)
def _sort_groups(groups: IntArray, qty: FloatArray, und: IntArray, count: int) -> None:
    """In-place insertion sort of the first ``count`` option rows by group id."""
    for i in range(1, count):
        g, q, u = groups[i], qty[i], und[i]
        j = i - 1
        while j >= 0 and groups[j] > g:
            groups[j + 1], qty[j + 1], und[j + 1] = groups[j], qty[j], und[j]
            j -= 1
        groups[j + 1], qty[j + 1], und[j + 1] = g, q, u


@njit(cache=True, inline="always")
def _option_rows(offsets: IntArray, pos_inst: np.ndarray, pos_q: FloatArray,
                 inst_und: np.ndarray, inst_group: IntArray, is_option: np.ndarray, a: int,
                 only_u: int, groups: IntArray, qty: FloatArray, und: IntArray) -> int:
    """Account a's option rows (of underlying ``only_u`` when >= 0) in position order:
    their groups, quantities and underlyings; how many."""
    n_opt = 0
    for p in range(offsets[a], offsets[a + 1]):
        i = pos_inst[p]
        if is_option[i] and (only_u < 0 or inst_und[i] == only_u):
            groups[n_opt] = inst_group[i]
            qty[n_opt] = pos_q[p]
            und[n_opt] = inst_und[i]
            n_opt += 1
    return n_opt


@njit(cache=True)
def _sorted_option_nets(groups: IntArray, qty: FloatArray, und: IntArray, count: int,
                        opt_rate: float, und_index: FloatArray, opt_cont: FloatArray) -> None:
    """opt_cont[u] = sum over groups g of u (in group order) of opt_rate x index_u x
    max(0, -sum_{p in g} q_p): the option rows sorted by group (stable), then netted."""
    for u in range(opt_cont.shape[0]):
        opt_cont[u] = 0.0
    if count <= 32:
        _sort_groups(groups, qty, und, count)
    else:
        order = np.argsort(groups[:count], kind="mergesort")
        groups[:count] = groups[:count][order]
        qty[:count] = qty[:count][order]
        und[:count] = und[:count][order]
    start = 0
    while start < count:
        net = 0.0
        end = start
        while end < count and groups[end] == groups[start]:
            net += qty[end]
            end += 1
        if net < 0.0:
            u = und[start]
            opt_cont[u] += -net * opt_rate * und_index[u]
        start = end


@njit(cache=True, inline="always")
def _beat(best: float) -> float:
    """What a later scenario must be below to replace the worst ``best``."""
    return best - TIE_TOLERANCE * max(1.0, abs(best))


@njit(cache=True, inline="always")
def _correlated_initial(level: FloatArray, direction: FloatArray, rho: FloatArray, n_u: int,
                        total: float, max_offset: float, held: np.ndarray) -> float:
    """IM from the per-underlying levels L_u (scan risk + contingency) and the directions d_u
    of their worst moves: max(sqrt(max(0, sum_u L_u^2 + sum_{u != v} rho_uv d_u L_u d_v L_v)),
    (1 - max_offset) x sum_u L_u). ``held``: scratch of n_u (``_correlated_of``)."""
    k = 0
    for u in range(n_u):
        if level[u] != 0.0:
            held[k] = u
            k += 1
    return _correlated_of(held, k, level, direction, rho, total, max_offset)


@njit(cache=True, inline="always")
def _correlated_of(held: np.ndarray, k: int, level: FloatArray, direction: FloatArray,
                   rho: FloatArray, total: float, max_offset: float) -> float:
    """``_correlated_initial`` over the underlyings held[:k] (ascending) only: every term of
    the sum with an underlying whose L_u = 0 is an exact zero, and adding zeros to a sum that
    starts at +0 changes no bit, so the sum over the k underlyings an account holds, in the
    same order, is the same number in O(k^2) instead of O(n_u^2) (a venue of hundreds of
    underlyings)."""
    quad = 0.0
    for x in range(k):
        u = held[x]
        quad += level[u] * level[u]
        for y in range(k):
            if y != x:
                v = held[y]
                quad += rho[u, v] * direction[u] * level[u] * direction[v] * level[v]
    agg = math.sqrt(max(0.0, quad))
    return max(agg, (1.0 - max_offset) * total)


@njit(cache=True, inline="always")
def _worst_scenario(pnl: FloatArray, u: int, weights: FloatArray, n_s: int,
                    v: FloatArray) -> int:
    """The worst scenario of row ``u`` under the in-order rule (see the module docstring), with
    v_s = w_s x pnl[u, s] (``v``: scratch of n_s)."""
    for s in range(n_s):
        v[s] = weights[s] * pnl[u, s]
    return first_worst(v, n_s)


@njit(cache=True, inline="always")
def first_worst(v: FloatArray, n_s: int) -> int:
    """The scenario an in-order scan of the weighted P&L v[:n_s] ends at: the first, replaced
    by each later one below beat(its current).

    With m = min_s v_s and f the first s with v_f = m: when m < beat(v_s) for every s != f,
    the in-order scan ends at f (it replaces whatever it holds before f, since m beats it, and
    nothing after f beats m). Otherwise (a near tie) the scan runs in order. Same comparisons,
    same result, without a branch per scenario."""
    m0 = v[0]
    m1, m2, m3 = m0, m0, m0
    s = 1
    while s + 3 < n_s:  # four running minima: no chain of n_s dependent steps
        m0 = min(m0, v[s])
        m1 = min(m1, v[s + 1])
        m2 = min(m2, v[s + 2])
        m3 = min(m3, v[s + 3])
        s += 4
    while s < n_s:
        m0 = min(m0, v[s])
        s += 1
    m = min(min(m0, m1), min(m2, m3))
    first = n_s
    blocked = 0
    for s in range(n_s):
        first = min(first, s if v[s] == m else n_s)
        blocked += v[s] - TIE_TOLERANCE * max(1.0, abs(v[s])) <= m
    if blocked == 1:  # only f itself (beat(m) <= m)
        return first
    best = v[0]
    best_s = 0
    beat = _beat(best)
    for s in range(1, n_s):
        if v[s] < beat:
            best = v[s]
            best_s = s
            beat = _beat(best)
    return best_s


@njit(cache=True, parallel=True)
def portfolio_margin_nb(
    offsets: IntArray, pos_inst: np.ndarray, pos_q: FloatArray, pos_notional: FloatArray,
    inst_und: np.ndarray, inst_group: IntArray, inst_is_option: np.ndarray,
    und_index: FloatArray, grid: FloatArray, weights: FloatArray, moves: FloatArray,
    lin_moves: FloatArray,
    coll_exposure: FloatArray, rho: FloatArray, opt_rate: float, lin_rate: float,
    max_offset: float, mm_fraction: float, max_len: int, move_scale: FloatArray,
    im: FloatArray, mm: FloatArray, scan: FloatArray, cont: FloatArray,
    worst: np.ndarray, active: np.ndarray, only_u: int, prev_scan: FloatArray,
    prev_cont: FloatArray, prev_worst: np.ndarray,
) -> None:
    n_acct = offsets.shape[0] - 1
    n_u = und_index.shape[0]
    n_s = grid.shape[1]
    n_chunks = (n_acct + CHUNK - 1) // CHUNK
    for c in prange(n_chunks):
        pnl = np.empty((n_u, n_s))
        longs = np.empty(n_u)
        shorts = np.empty(n_u)
        opt_cont = np.empty(n_u)
        has = np.empty(n_u, dtype=np.bool_)
        level = np.empty(n_u)
        direction = np.empty(n_u)
        groups = np.empty(max(max_len, 1), dtype=np.int64)
        qty = np.empty(max(max_len, 1))
        und = np.empty(max(max_len, 1), dtype=np.int64)
        weighted = np.empty(n_s)
        held = np.empty(n_u, dtype=np.int64)
        stop = min(n_acct, (c + 1) * CHUNK)
        for a in range(c * CHUNK, stop):
            if only_u >= 0:
                pnl[only_u, :] = 0.0  # the other rows are not read
            else:
                pnl[:, :] = 0.0
            longs[:] = 0.0
            shorts[:] = 0.0
            opt_cont[:] = 0.0
            has[:] = False
            in_order, cur_g, cur_net, cur_u = True, -1, 0.0, 0
            run = 0.0  # opt_cont[cur_u] as it stands, in a register (stored when u changes)
            last_u = -1
            for p in range(offsets[a], offsets[a + 1]):
                i = pos_inst[p]
                u = inst_und[i]
                if only_u >= 0 and u != only_u:
                    continue
                q = pos_q[p]
                if u != last_u:  # (an account's positions run by underlying: few stores)
                    has[u] = True
                    last_u = u
                for s in range(n_s):
                    pnl[u, s] += q * grid[i, s]
                if inst_is_option[i]:
                    g = inst_group[i]
                    if g == cur_g:
                        cur_net += q
                        continue
                    in_order = in_order and g > cur_g
                    # the previous group is complete (groups in order): its net short, if
                    # any, taken without a branch (+0 otherwise, which changes no sum)
                    run += (-cur_net if cur_net < 0.0 else 0.0) * opt_rate * und_index[cur_u]
                    if u != cur_u:
                        opt_cont[cur_u] = run
                        run = opt_cont[u]
                    cur_g, cur_net, cur_u = g, q, u
                else:
                    n = pos_notional[p]
                    if n > 0.0:
                        longs[u] += n
                    else:
                        shorts[u] -= n
            for u in range(n_u):
                if only_u >= 0 and u != only_u:
                    continue
                e = coll_exposure[a, u]
                if e != 0.0:
                    has[u] = True
                    for s in range(n_s):
                        pnl[u, s] += e * lin_moves[s] * move_scale[u]
            if in_order:
                if cur_net < 0.0:
                    run += -cur_net * opt_rate * und_index[cur_u]
                opt_cont[cur_u] = run
            else:  # rare: the account's option rows again, sorted by group
                n_opt = _option_rows(offsets, pos_inst, pos_q, inst_und, inst_group,
                                     inst_is_option, a, only_u, groups, qty, und)
                _sorted_option_nets(groups, qty, und, n_opt, opt_rate, und_index, opt_cont)
            total = 0.0
            for u in range(n_u):
                if only_u >= 0 and u != only_u:
                    s_prev = prev_worst[a, u]
                    active[a, u] = s_prev >= 0
                    scan[a, u] = prev_scan[a, u]
                    cont[a, u] = prev_cont[a, u]
                    worst[a, u] = s_prev
                    if s_prev < 0:
                        level[u] = 0.0
                        direction[u] = 0.0
                        continue
                    level[u] = prev_scan[a, u] + prev_cont[a, u]
                    m = moves[s_prev]
                    direction[u] = 1.0 if m > 0.0 else (-1.0 if m < 0.0 else 0.0)
                    total += level[u]
                    continue
                active[a, u] = has[u]
                if not has[u]:
                    scan[a, u] = 0.0
                    cont[a, u] = 0.0
                    worst[a, u] = -1
                    level[u] = 0.0
                    direction[u] = 0.0
                    continue
                best_s = _worst_scenario(pnl, u, weights, n_s, weighted)
                risk = max(0.0, -(weights[best_s] * pnl[u, best_s]))
                contingency = opt_cont[u] + lin_rate * min(longs[u], shorts[u])
                scan[a, u] = risk
                cont[a, u] = contingency
                worst[a, u] = best_s
                level[u] = risk + contingency
                m = moves[best_s]
                direction[u] = 1.0 if m > 0.0 else (-1.0 if m < 0.0 else 0.0)
                total += level[u]
            initial = _correlated_initial(level, direction, rho, n_u, total, max_offset, held)
            im[a] = initial
            mm[a] = mm_fraction * initial


# ---------------------------------------------------------------- the per-tick pass
# What a tick changes is per instrument (its mark and its scenario values) and per underlying
# (its index) and per collateral asset (its price); what it does not is the resolved book (CSR
# offsets, int32 instrument per position, float64 quantity and size, collateral amounts). The
# pass below reads only those: signed notionals and collateral exposures are formed on the fly
# (q x mark, size x contract size for inverse perps and futures, amount x price), so a tick
# writes no per-position array. Same arithmetic, in the same order, as ``portfolio_margin_nb``
# on a bound book (the results are equal bit for bit).

KIND_LINEAR, KIND_INVERSE, KIND_OPTION, KIND_SETTLED = 0, 1, 2, 3
TICK_CHUNK = 1024


@njit(cache=True, parallel=True)
def tick_margin_nb(
    offsets: IntArray, pos_inst: np.ndarray, pos_q: FloatArray, pos_size: FloatArray,
    inst_und: np.ndarray, inst_group: np.ndarray, inst_kind: np.ndarray,
    inst_contract: FloatArray, inst_mark: FloatArray, und_index: FloatArray, grid: FloatArray,
    n_s: int, weights: FloatArray, moves: FloatArray, lin_moves: FloatArray,
    coll_amount: FloatArray, coll_price: FloatArray, coll_und: np.ndarray, rho: FloatArray,
    opt_rate: float, lin_rate: float, max_offset: float, mm_fraction: float, max_len: int,
    detail: bool, im: FloatArray, mm: FloatArray, scan: FloatArray, cont: FloatArray,
    worst: np.ndarray, active: np.ndarray,
) -> None:
    """IM and MM of every account (and, with ``detail``, its per-underlying scan risk,
    contingency, worst scenario and activity) from the per-instrument state of one tick.

    ``grid`` is instruments x S (S >= n_s, padded with zeros so the scenario loop runs over
    whole vectors); ``inst_kind``: KIND_LINEAR (linear delta-one or the option rows' own
    kind is irrelevant), KIND_INVERSE (inverse perpetual/future: notional = size x contract),
    KIND_OPTION (live option), KIND_SETTLED (no notional, no contingency)."""
    n_acct = offsets.shape[0] - 1
    n_u = und_index.shape[0]
    width = grid.shape[1]
    n_cols = coll_price.shape[0]
    n_chunks = (n_acct + TICK_CHUNK - 1) // TICK_CHUNK
    live_option = inst_kind == KIND_OPTION
    for c in prange(n_chunks):
        # per-underlying rows start zeroed and only the rows an account touched are zeroed
        # again after it (``touched``, ascending): an account holding k of n_u underlyings
        # costs O(k) here, not O(n_u) (a venue of hundreds of underlyings)
        pnl = np.zeros((n_u, width))
        longs = np.zeros(n_u)
        shorts = np.zeros(n_u)
        opt_cont = np.zeros(n_u)
        exposure = np.zeros(n_u)
        has = np.zeros(n_u, dtype=np.bool_)
        level = np.empty(n_u)  # (written for each touched underlying before it is read)
        direction = np.empty(n_u)
        touched = np.empty(n_u, dtype=np.int64)
        size = max(max_len, 1)
        groups = np.empty(size, dtype=np.int64)
        qty = np.empty(size)
        und = np.empty(size, dtype=np.int64)
        weighted = np.empty(width)
        for a in range(c * TICK_CHUNK, min(n_acct, (c + 1) * TICK_CHUNK)):
            n_t = 0
            in_order, cur_g, cur_net, cur_u = True, -1, 0.0, 0
            run = 0.0  # opt_cont[cur_u] as it stands, in a register (stored when u changes)
            last_u = -1
            for p in range(offsets[a], offsets[a + 1]):
                i = pos_inst[p]
                u = inst_und[i]
                q = pos_q[p]
                if u != last_u:  # (an account's positions run by underlying: few stores)
                    if not has[u]:
                        has[u] = True
                        n_t = _touch(touched, n_t, u)
                    last_u = u
                for s in range(width):
                    pnl[u, s] += q * grid[i, s]
                kind = inst_kind[i]
                if kind == KIND_OPTION:
                    g = inst_group[i]
                    if g == cur_g:
                        cur_net += q
                        continue
                    in_order = in_order and g > cur_g
                    # the previous group is complete (groups in order): its net short, if
                    # any, taken without a branch (+0 otherwise, which changes no sum)
                    run += (-cur_net if cur_net < 0.0 else 0.0) * opt_rate * und_index[cur_u]
                    if u != cur_u:
                        opt_cont[cur_u] = run
                        run = opt_cont[u]
                    cur_g, cur_net, cur_u = g, q, u
                else:
                    if kind == KIND_LINEAR:
                        n = q * inst_mark[i]
                    elif kind == KIND_INVERSE:
                        n = pos_size[p] * inst_contract[i]
                    else:
                        n = 0.0
                    if n > 0.0:
                        longs[u] += n
                    else:
                        shorts[u] -= n
            # the USD value of the account's coin collateral of each underlying, its columns
            # summed in column order; then, once an underlying, its linear scenario P&L
            for col in range(n_cols):
                u = coll_und[col]
                if u >= 0:
                    exposure[u] += coll_amount[a, col] * coll_price[col]
            for col in range(n_cols):
                u = coll_und[col]
                if u >= 0 and exposure[u] != 0.0:
                    e = exposure[u]
                    exposure[u] = 0.0  # (added once: another column of u sees 0)
                    if not has[u]:
                        has[u] = True
                        n_t = _touch(touched, n_t, u)
                    for s in range(n_s):
                        pnl[u, s] += e * lin_moves[s] * 1.0
            if in_order:
                if cur_net < 0.0:
                    run += -cur_net * opt_rate * und_index[cur_u]
                opt_cont[cur_u] = run
            else:  # rare: the account's option rows again, sorted by group
                n_opt = _option_rows(offsets, pos_inst, pos_q, inst_und, inst_group,
                                     live_option, a, -1, groups, qty, und)
                _sorted_option_nets(groups, qty, und, n_opt, opt_rate, und_index, opt_cont)
            total = 0.0
            if detail:
                for u in range(n_u):
                    active[a, u] = has[u]
                    if not has[u]:
                        scan[a, u] = 0.0
                        cont[a, u] = 0.0
                        worst[a, u] = -1
            for x in range(n_t):
                u = touched[x]
                best_s = _worst_scenario(pnl, u, weights, n_s, weighted)
                risk = max(0.0, -(weights[best_s] * pnl[u, best_s]))
                contingency = opt_cont[u] + lin_rate * min(longs[u], shorts[u])
                if detail:
                    scan[a, u] = risk
                    cont[a, u] = contingency
                    worst[a, u] = best_s
                level[u] = risk + contingency
                m = moves[best_s]
                direction[u] = 1.0 if m > 0.0 else (-1.0 if m < 0.0 else 0.0)
                total += level[u]
            initial = _correlated_of(touched, n_t, level, direction, rho, total, max_offset)
            im[a] = initial
            mm[a] = mm_fraction * initial
            for x in range(n_t):  # the touched rows zeroed for the next account
                u = touched[x]
                for s in range(width):
                    pnl[u, s] = 0.0
                longs[u] = 0.0
                shorts[u] = 0.0
                opt_cont[u] = 0.0
                has[u] = False
            if not in_order:  # (``_sorted_option_nets`` set every underlying's entry)
                for u in range(n_u):
                    opt_cont[u] = 0.0


@njit(cache=True, inline="always")
def _touch(touched: np.ndarray, n_t: int, u: int) -> int:
    """Insert u into the ascending touched[:n_t] (an account's few underlyings); the count."""
    x = n_t
    while x > 0 and touched[x - 1] > u:
        touched[x] = touched[x - 1]
        x -= 1
    touched[x] = u
    return n_t + 1


@njit(cache=True, parallel=True)
def stream_read_nb(pos_inst: np.ndarray, pos_q: FloatArray) -> float:
    """One streaming read of the position arrays the per-tick pass reads (the memory-bandwidth
    floor of any pass over them): sum of q + instrument index."""
    total = 0.0
    for p in prange(pos_q.shape[0]):
        total += pos_q[p] + pos_inst[p]
    return total



# ---------------------------------------------------------------- one underlying moved
# A monitor slice after a move of underlying u alone: what does not move with prices is
# indexed once (``option_terms_nb``, the long / short split of u's delta-one positions), so
# the pass below only accumulates u's scenario P&L, reads u's notionals at the new marks and
# aggregates with the other underlyings' last cells (``portfolio_margin_nb`` with only_u = u:
# the same arithmetic in the same order, so the same numbers bit for bit).


@njit(cache=True)
def option_terms_nb(u_offsets: IntArray, u_inst: np.ndarray, u_q: FloatArray,
                    inst_option: np.ndarray, inst_group: np.ndarray, opt_rate: float,
                    max_len: int) -> tuple[IntArray, FloatArray]:
    """Per account, -net x opt_rate of each option group of its positions with a net short
    (net = sum of q over the group in position order), groups in ascending order: the option
    contingency is then sum_g term_g x index_u, added in that order."""
    n_acct = u_offsets.shape[0] - 1
    counts = np.zeros(n_acct + 1, dtype=np.int64)
    terms = np.empty(max(u_q.shape[0], 1))
    groups = np.empty(max(max_len, 1), dtype=np.int64)
    qty = np.empty(max(max_len, 1))
    und = np.zeros(max(max_len, 1), dtype=np.int64)
    n_terms = 0
    for a in range(n_acct):
        n_opt = 0
        for p in range(u_offsets[a], u_offsets[a + 1]):
            i = u_inst[p]
            if inst_option[i]:
                groups[n_opt] = inst_group[i]
                qty[n_opt] = u_q[p]
                n_opt += 1
        _sort_groups(groups, qty, und, n_opt)  # stable: position order within a group
        start = 0
        while start < n_opt:
            net = 0.0
            end = start
            while end < n_opt and groups[end] == groups[start]:
                net += qty[end]
                end += 1
            if net < 0.0:
                terms[n_terms] = -net * opt_rate
                n_terms += 1
            start = end
        counts[a + 1] = n_terms
    return counts, terms[:n_terms].copy()


@njit(cache=True, parallel=True)
def slice_margin_nb(
    u: int, inst_und: np.ndarray, inst_kind: np.ndarray, inst_mark: FloatArray,
    opt_offsets: IntArray, opt_terms: FloatArray, und_index: FloatArray, grid: FloatArray,
    n_s: int, weights: FloatArray, moves: FloatArray, lin_moves: FloatArray,
    exposure: FloatArray, rho: FloatArray, lin_rate: float, max_offset: float,
    mm_fraction: float, pos_offsets: IntArray, pos_inst: np.ndarray, pos_q: FloatArray,
    pos_entry_usd: FloatArray, pos_fixed: FloatArray, im: FloatArray, mm: FloatArray,
    scan: FloatArray, cont: FloatArray, worst: np.ndarray, active: np.ndarray,
    upnl: FloatArray, shared_rows: IntArray, known: np.ndarray, shared_scan: FloatArray,
    shared_cont: FloatArray, shared_worst: np.ndarray, share: bool,
) -> None:
    """IM and MM of every account after a move of u alone (the other underlyings' cells of
    ``scan``, ``cont``, ``worst`` are the last ones, read and kept; u's are rewritten), and
    the unrealised P&L sum_p q_p (mark_i(p) - entry_usd_p) over every position.

    With ``share``, account a is row shared_rows[a] of the tables of the latest cells of
    every account (``shared_*``, ``known``): its other underlyings' known cells are taken
    from there first, and all its cells are written back and known after (what a copy of the
    whole slice's cells each way before and after the pass did, in the same pass).

    One pass over each account's positions in book order: every position adds to the
    unrealised P&L; u's add q x grid row to u's scenario P&L and, delta-one ones, their notional
    (q x mark linear, ``pos_fixed`` inverse: size x contract size) to the longs or the shorts
    by its sign (the same sums, in the same order, as over u's positions alone).
    ``grid``: instruments x S (S >= n_s, zero padded; u's rows filled); ``exposure``: e_a,u."""
    n_acct = pos_offsets.shape[0] - 1
    n_u = und_index.shape[0]
    width = grid.shape[1]
    index_u = und_index[u]
    n_chunks = (n_acct + TICK_CHUNK - 1) // TICK_CHUNK
    for c in prange(n_chunks):
        pnl = np.zeros((n_u, width))
        row = np.zeros(width)
        level = np.empty(n_u)
        direction = np.empty(n_u)
        weighted = np.empty(width)
        held_u = np.empty(n_u, dtype=np.int64)
        for a in range(c * TICK_CHUNK, min(n_acct, (c + 1) * TICK_CHUNK)):
            total_pnl = 0.0
            for s in range(width):
                row[s] = 0.0
            held = False
            longs = 0.0
            shorts = 0.0
            for p in range(pos_offsets[a], pos_offsets[a + 1]):
                i = pos_inst[p]
                q = pos_q[p]
                total_pnl += q * (inst_mark[i] - pos_entry_usd[p])
                if inst_und[i] != u:
                    continue
                held = True
                for s in range(width):
                    row[s] += q * grid[i, s]
                kind = inst_kind[i]
                if kind in (KIND_LINEAR, KIND_INVERSE):
                    n = q * inst_mark[i] if kind == KIND_LINEAR else pos_fixed[p]
                    if n > 0.0:
                        longs += n
                    elif n < 0.0:
                        shorts -= n
            upnl[a] = total_pnl
            e = exposure[a]
            has = held or e != 0.0
            if e != 0.0:
                for s in range(n_s):
                    row[s] += e * lin_moves[s] * 1.0
            opt_cont = 0.0
            for k in range(opt_offsets[a], opt_offsets[a + 1]):
                opt_cont += opt_terms[k] * index_u
            if share:
                g = shared_rows[a]
                for v in range(n_u):
                    if v != u and known[g, v]:
                        scan[a, v] = shared_scan[g, v]
                        cont[a, v] = shared_cont[g, v]
                        worst[a, v] = shared_worst[g, v]
            total = 0.0
            for v in range(n_u):
                if v != u:
                    s_prev = worst[a, v]
                    active[a, v] = s_prev >= 0
                    if s_prev < 0:
                        level[v] = 0.0
                        direction[v] = 0.0
                        continue
                    level[v] = scan[a, v] + cont[a, v]
                    m = moves[s_prev]
                    direction[v] = 1.0 if m > 0.0 else (-1.0 if m < 0.0 else 0.0)
                    total += level[v]
                    continue
                active[a, u] = has
                if not has:
                    scan[a, u] = 0.0
                    cont[a, u] = 0.0
                    worst[a, u] = -1
                    level[u] = 0.0
                    direction[u] = 0.0
                    continue
                for s in range(width):
                    pnl[u, s] = row[s]
                best_s = _worst_scenario(pnl, u, weights, n_s, weighted)
                risk = max(0.0, -(weights[best_s] * pnl[u, best_s]))
                contingency = opt_cont + lin_rate * min(longs, shorts)
                scan[a, u] = risk
                cont[a, u] = contingency
                worst[a, u] = best_s
                level[u] = risk + contingency
                m = moves[best_s]
                direction[u] = 1.0 if m > 0.0 else (-1.0 if m < 0.0 else 0.0)
                total += level[u]
            initial = _correlated_initial(level, direction, rho, n_u, total, max_offset, held_u)
            im[a] = initial
            mm[a] = mm_fraction * initial
            if share:
                g = shared_rows[a]
                for v in range(n_u):
                    shared_scan[g, v] = scan[a, v]
                    shared_cont[g, v] = cont[a, v]
                    shared_worst[g, v] = worst[a, v]
                    known[g, v] = True
