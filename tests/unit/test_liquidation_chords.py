"""Chord certificates of the liquidation-level scan (portfolio model, shared state table).

A block of grid levels is passed over when the concave lower bound of the gap built from the
chords of its instruments' states stays above zero; the brackets, hence the levels, must be
exactly those of the scan that evaluates every level (the skip bounds only), with fewer
evaluations. The bound itself is checked level by level against the gap."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from numba import njit

from margin_engine.liquidation import level_kernels as lk
from margin_engine.liquidation import vector_levels
from margin_engine.liquidation.price import GRID, liquidation_levels
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import get_model
from tests.conftest import NO_HAIRCUTS
from tests.unit.level_books import random_level_book


@pytest.mark.parametrize(("seed", "config"), [(11, RiskConfig()), (12, NO_HAIRCUTS),
                                              (13, RiskConfig())])
def test_chord_certificates_find_the_brackets_of_the_scan(monkeypatch: pytest.MonkeyPatch,
                                                          seed: int,
                                                          config: RiskConfig) -> None:
    bound = random_level_book(150, seed=seed)
    monkeypatch.setattr(vector_levels, "TABLE_SHARING", 0.0)  # the shared table for all
    found = {}
    evaluations = {}
    for chords in (True, False):
        monkeypatch.setattr(vector_levels, "CHORDS", chords)
        before = vector_levels.STATS["evaluations"]
        found[chords] = liquidation_levels(bound, "portfolio", config)
        evaluations[chords] = vector_levels.STATS["evaluations"] - before
    for side in ("down", "up"):
        got, want = getattr(found[True], side), getattr(found[False], side)
        assert np.array_equal(got, want, equal_nan=True), side  # bit for bit
    assert np.isfinite(found[True].down).sum() > 20
    assert np.isfinite(found[True].up).sum() > 20
    assert evaluations[True] < 0.8 * evaluations[False]


@njit(cache=False)
def _certified(bk, ctx, rows, k, table_row, chords, nd, ends, pnls):  # type: ignore[no-untyped-def]
    return lk.chord_certified(bk, ctx, rows, k, table_row, chords, nd, ends[0], ends[1],
                              pnls[0], pnls[1])


@njit(cache=False)
def _dense(bk, cl, ctx, a, u, levels, index0, table, table_row, rows, k, work,  # type: ignore[no-untyped-def]
           parts, pnls):
    """parts[j], pnls[j]: the bound's parts of f at every grid level j (``_bound_parts``)."""
    states = np.empty((max(k, 1), table.shape[2]))
    iwork = np.empty(max(k, 1), dtype=np.int64)
    aux = np.zeros(lk.AUX)
    for j in range(levels.shape[0]):
        f = lk._evaluate(bk, cl, ctx, a, u, levels[j], j, index0, table, table_row, rows, k,
                         states, work, iwork, aux)
        lk._bound_parts(f, j, aux, work, parts[j], pnls[j])


@pytest.mark.parametrize("seed", [21, 22])
def test_a_certified_block_keeps_the_sign_of_the_gap_at_its_levels(seed: int) -> None:
    bound = random_level_book(60, seed=seed)
    config = RiskConfig()
    bk, cl, ctx, work_size = vector_levels._portfolio(bound, config, get_model("portfolio"))
    max_rows = vector_levels._max_len(bound)
    j0 = int(np.nonzero(GRID == 1.0)[0][0])
    certified: dict[float, int] = {}
    for u in range(len(bound.underlyings)):
        held = vector_levels._held_by_underlying(bound, None)[u][0]
        if held.size == 0:
            continue
        index = float(bound.index[u])
        levels = index * GRID
        table = np.empty((held.size, levels.size, lk.state_width(ctx)))
        cum = np.empty((held.size, levels.size, 2))
        lk.fill_table_nb(bk, ctx, held, 0, held.size, levels, index, table, cum)
        table_row = np.full(bk.und.shape[0], -1, dtype=np.int64)
        table_row[held] = np.arange(held.size)
        chords, node = vector_levels._chords(ctx, table, levels, j0)
        blocks = lk.chord_tree(j0, 0) + lk.chord_tree(j0, levels.size - 1)
        rows = np.empty(max_rows, dtype=np.int64)
        work = np.empty(work_size + max_rows)
        parts = np.empty((levels.size, lk.PARTS))
        pnls = np.empty((levels.size, ctx.moves.size))
        for a in range(bound.account_count):
            k = lk._account_rows(bk, a, u, rows)
            _dense(bk, cl, ctx, a, u, levels, index, table, table_row, rows, k, work, parts,
                   pnls)
            f, lower = parts[:, 0], parts[:, 1]
            assert np.all(lower <= f + 1e-9 * parts[:, 5])  # the bound is below the gap
            for near, far in blocks:
                ends = np.stack([parts[near], parts[far]])
                if _certified(bk, ctx, rows, k, table_row, chords, node[near, far], ends,
                              np.stack([pnls[near], pnls[far]])):
                    sign = np.sign(ends[0, 0])
                    certified[sign] = certified.get(sign, 0) + 1
                    lo, hi = min(near, far), max(near, far)
                    assert np.all(sign * f[lo:hi + 1] > 0.0), (a, u, near, far)
    assert certified[1.0] > 200  # the certificates do pass blocks over, on both signs
    assert certified[-1.0] > 20


def test_no_chords_nor_candidates_with_negative_scenario_weights() -> None:
    bound = random_level_book(10, seed=1)
    _, _, ctx, _ = vector_levels._portfolio(bound, RiskConfig(), get_model("portfolio"))
    table = np.zeros((3, GRID.size, lk.state_width(ctx)))
    assert vector_levels._chords(ctx, table, GRID, 90)[0].shape[0] == 3
    negative = ctx._replace(weights=-ctx.weights)
    assert vector_levels._chords(negative, table, GRID, 90)[0].shape[0] == 0
    assert vector_levels._weights_not_negative(ctx)  # Brent's steps leave scenarios out
    assert not vector_levels._weights_not_negative(negative)  # they do not


@pytest.mark.parametrize(("seed", "sharing"), [(31, 0.0), (32, 1e9)])
def test_brent_steps_on_candidate_scenarios_give_the_levels_of_full_steps(
        monkeypatch: pytest.MonkeyPatch, seed: int, sharing: float) -> None:
    """Off the grid, scenarios that cannot be the worst are left out; the levels are the
    same bit for bit (shared table, and the tables kept between calls of small books). Brent
    on both sides: Newton's steps start from the bracket's states the pruning keeps."""
    bound = random_level_book(120, seed=seed)
    monkeypatch.setattr(vector_levels, "TABLE_SHARING", sharing)
    monkeypatch.setattr(vector_levels, "NEWTON", False)
    found = {}
    for prune in (True, False):
        monkeypatch.setattr(vector_levels, "PRUNE", prune)
        vector_levels.STATE_TABLES.clear()
        found[prune] = liquidation_levels(bound, "portfolio", RiskConfig())
    for side in ("down", "up"):
        got, want = getattr(found[True], side), getattr(found[False], side)
        assert np.array_equal(got, want, equal_nan=True), side
    assert np.isfinite(found[True].down).sum() + np.isfinite(found[True].up).sum() > 40


@njit(cache=False)
def _worst_at(bk, ctx, s, index0, rows, k, states, exposure):  # type: ignore[no-untyped-def]
    """The worst scenario at s of the full evaluation (every scenario priced)."""
    n_s = ctx.moves.shape[0]
    for kk in range(k):
        lk.inst_state(bk, ctx, bk.inst[rows[kk]], s, s / index0, states[kk])
    pnl = np.zeros(n_s)
    for kk in range(k):
        for w in range(n_s):
            pnl[w] += bk.q[rows[kk]] * states[kk, 1 + w]
    for w in range(n_s):
        pnl[w] = ctx.weights[w] * (pnl[w] + exposure * ctx.lin_moves[w])
    return np.argmin(pnl)


@njit(cache=False)
def _scratch(ctx, k):  # type: ignore[no-untyped-def]
    """(known states, states, tmp, bounds, chosen, sums): the arrays ``candidates`` and a full
    evaluation of k positions use."""
    width = ctx.moves.shape[0] + 1
    return (np.empty((max(k, 1), width)), np.empty((max(k, 1), width)), np.zeros(lk.AUX),
            np.empty((2, width - 1)), np.empty(width - 1, dtype=np.bool_),
            np.empty((lk.SUMS, width - 1)))


@njit(cache=False)
def _worst_among_candidates(bk, cl, ctx, a, u, levels, index0, rows, k,  # type: ignore[no-untyped-def]
                            steps, out):
    """For grid levels x and points s = x (1 + step): out = (candidates, whether the worst
    scenario of the full evaluation at s is one of them)."""
    known, states, tmp, bounds, chosen, sums = _scratch(ctx, k)
    n = 0
    for j in range(0, levels.shape[0], 7):
        x = levels[j]
        for kk in range(k):
            lk.inst_state(bk, ctx, bk.inst[rows[kk]], x, x / index0, known[kk])
        for step in steps:
            s = x * (1.0 + step)
            lk.collateral_at(cl, a, u, s / index0, tmp)
            count = lk.candidates(bk, ctx, rows, k, s, x, known, tmp[2], bounds, chosen,
                                  math.nan, known, sums, np.zeros(3))
            out[n, 0] = count
            out[n, 1] = chosen[_worst_at(bk, ctx, s, index0, rows, k, states, tmp[2])]
            n += 1
    return n


def _portfolio_jobs(accounts: int, seed: int) -> Iterator[tuple[Any, ...]]:
    """(book arrays, collateral, portfolio context, account, underlying, index, rows, k) of
    every account and underlying it holds, on a random book."""
    bound = random_level_book(accounts, seed=seed)
    bk, cl, ctx, _ = vector_levels._portfolio(bound, RiskConfig(), get_model("portfolio"))
    rows = np.empty(vector_levels._max_len(bound), dtype=np.int64)
    for u in range(len(bound.underlyings)):
        index = float(bound.index[u])
        for a in range(bound.account_count):
            k = lk._account_rows(bk, a, u, rows)
            if k > 0:
                yield bk, cl, ctx, a, u, index, rows, k


def test_the_worst_scenario_is_always_a_candidate() -> None:
    steps = np.array([-3e-2, -1e-3, -1e-6, 1e-9, 1e-4, 2e-2])
    out = np.empty((GRID.size * steps.size, 2))
    counts = []
    for bk, cl, ctx, a, u, index, rows, k in _portfolio_jobs(40, seed=33):
        n = _worst_among_candidates(bk, cl, ctx, a, u, index * GRID, index, rows, k, steps,
                                    out)
        assert np.all(out[:n, 1] == 1.0)
        counts.append(out[:n, 0])
    counts_all = np.concatenate(counts)
    assert counts_all.min() >= 1
    assert np.median(counts_all) < ctx.moves.size / 2  # most scenarios are left out


@njit(cache=False)
def _worst_between(bk, cl, ctx, a, u, levels, index0, rows, k, out):  # type: ignore[no-untyped-def]
    """For grid steps [xa, xb] and points s inside them: out = (candidates from the nearer
    end alone, candidates from both ends' chords, whether the worst scenario of the full
    evaluation at s is among the latter)."""
    known_a, states, tmp, bounds, chosen, sums = _scratch(ctx, k)
    known_b = np.empty_like(known_a)
    n = 0
    for j in range(0, levels.shape[0] - 1, 2):
        xa, xb = levels[j], levels[j + 1]
        for kk in range(k):
            lk.inst_state(bk, ctx, bk.inst[rows[kk]], xa, xa / index0, known_a[kk])
            lk.inst_state(bk, ctx, bk.inst[rows[kk]], xb, xb / index0, known_b[kk])
        for t in (1e-9, 0.02, 0.3, 0.5, 0.77, 1.0 - 1e-7):
            s = xa + t * (xb - xa)
            lk.collateral_at(cl, a, u, s / index0, tmp)
            near, near_known, far, far_known = (xa, known_a, xb, known_b) if t < 0.5 else \
                (xb, known_b, xa, known_a)
            out[n, 0] = lk.candidates(bk, ctx, rows, k, s, near, near_known, tmp[2], bounds,
                                      chosen, math.nan, near_known, sums, np.zeros(3))
            out[n, 1] = lk.candidates(bk, ctx, rows, k, s, near, near_known, tmp[2], bounds,
                                      chosen, far, far_known, sums, np.zeros(3))
            out[n, 2] = chosen[_worst_at(bk, ctx, s, index0, rows, k, states, tmp[2])]
            n += 1
    return n


@pytest.mark.parametrize("seed", [5, 34])
def test_the_chords_between_two_known_points_keep_the_worst_scenario_and_leave_out_more(
        seed: int) -> None:
    """Between two points where every scenario value is known, a scenario value lies within
    its chord +- (s - xa)(xb - s) / 2 x the bound on its second derivative (Black-76 gammas
    at most 1 / (sqrt(2 pi) F vol sqrt(T))): the worst scenario stays a candidate, and fewer
    scenarios are priced than from the nearer point alone."""
    out = np.empty((GRID.size * 6, 3))
    found = []
    for bk, cl, ctx, a, u, index, rows, k in _portfolio_jobs(60, seed=seed):
        n = _worst_between(bk, cl, ctx, a, u, index * GRID, index, rows, k, out)
        assert np.all(out[:n, 2] == 1.0)
        found.append(out[:n].copy())
    every = np.concatenate(found)
    assert np.all(every[:, 1] <= every[:, 0])  # the chords only narrow the intervals
    assert every[:, 1].mean() < 0.85 * every[:, 0].mean()
