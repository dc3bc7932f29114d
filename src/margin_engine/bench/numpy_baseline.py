"""The portfolio model's per-tick aggregation in plain numpy: the baseline of ``bench``.

The same arithmetic as ``portfolio_kernel.tick_margin_nb`` from the same tick state (the grid of
every instrument on every scenario, marks, index levels, collateral prices), written the way a
careful numpy user would: per chunk of accounts, gather each position's scenario row, reduce
the rows of each (account, underlying) cell with ``np.add.reduceat`` over positions sorted by
cell once, worst scenario as the first within 1e-12 of the minimum, contingencies by
``bincount``, the correlation step on whole arrays. The position order by cell is part of the
resolved book (prepared once, like the engine's own arrays). It can differ from the engine only
where several scenarios lie within 1e-12 of each other (the engine scans them in order and keeps
a scenario until one is lower by more than the tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from margin_engine.core.types import FloatArray, IntArray
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.portfolio_kernel import (
    KIND_INVERSE,
    KIND_LINEAR,
    KIND_OPTION,
    TIE_TOLERANCE,
)
from margin_engine.margin.scenarios import linear_moves, scenario_table
from margin_engine.margin.tick import TickBook, TickMarket

CHUNK_POSITIONS = 500_000  # positions per chunk: bounds the gathered rows (chunk x scenarios)


@dataclass(frozen=True, slots=True)
class NumpyLayout:
    """Per chunk of accounts: (first account, last account + 1, position rows sorted by
    (account, underlying), start of each (account, underlying) run, its account within the
    chunk, its underlying)."""

    chunks: tuple[tuple[int, int, IntArray, IntArray, IntArray, IntArray], ...]


def numpy_layout(tick_book: TickBook) -> NumpyLayout:
    book = tick_book.book
    n_u = max(1, len(book.instruments.underlyings))
    und = book.instruments.underlying[book.position_instrument].astype(np.int64)
    account = book.position_account()
    chunks = []
    a0 = 0
    n_acct = book.account_count
    while a0 < n_acct:
        target = book.offsets[a0] + CHUNK_POSITIONS
        a1 = int(np.searchsorted(book.offsets, target, side="right")) - 1
        a1 = min(max(a1, a0 + 1), n_acct)
        p0, p1 = int(book.offsets[a0]), int(book.offsets[a1])
        key = (account[p0:p1] - a0) * n_u + und[p0:p1]
        order = np.argsort(key, kind="stable") + p0
        sorted_key = key[order - p0]
        starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]]) \
            if sorted_key.size else np.zeros(0, dtype=np.int64)
        chunks.append((a0, a1, order, starts, sorted_key[starts] // n_u,
                       sorted_key[starts] % n_u))
        a0 = a1
    return NumpyLayout(chunks=tuple(chunks))


def numpy_margins(tick_book: TickBook, tick: TickMarket, layout: NumpyLayout,
                  config: RiskConfig) -> tuple[FloatArray, FloatArray]:
    """(IM, MM) of every account (no collateral haircuts or depeg: the scenario engine)."""
    cfg = config.portfolio
    scenarios = scenario_table(cfg)
    n_s = len(scenarios)
    weights = np.array([s[2] for s in scenarios])
    moves = np.array([s[0] for s in scenarios])
    lin = np.array(linear_moves(cfg))
    book, bound = tick_book.book, tick.instruments
    table = bound.book.instruments
    n_u = len(bound.underlyings)
    n_acct = book.account_count
    grid = tick.grid[:, :n_s]
    direction_of = np.sign(moves)
    im = np.empty(n_acct)
    # collateral exposure of every account to every underlying: amount x price of its coin
    exposure = np.zeros((n_acct, n_u))
    for col in range(len(book.assets)):
        if tick.coin[col] >= 0:
            exposure[:, tick.coin[col]] += book.collateral[:, col] * tick.prices[col]
    n_groups = int(bound.contingency_group.max()) + 1 if bound.contingency_group.size else 0
    for a0, a1, order, starts, run_account, run_und in layout.chunks:
        n_cells = (a1 - a0) * n_u
        run_cell = run_account * n_u + run_und  # the market may add collateral underlyings
        inst = book.position_instrument[order]
        q = tick_book.quantity[order]
        pnl = np.zeros((n_cells, n_s))
        if order.size:
            pnl[run_cell] = np.add.reduceat(grid[inst] * q[:, np.newaxis], starts, axis=0)
        has = np.zeros(n_cells, dtype=bool)
        has[run_cell] = True
        e = exposure[a0:a1].reshape(-1)
        pnl += e[:, np.newaxis] * lin[np.newaxis, :]
        has |= e != 0.0
        weighted = pnl * weights
        lowest = weighted.min(axis=1)
        near = weighted <= (lowest + TIE_TOLERANCE * np.maximum(1.0, np.abs(lowest)))[:, None]
        best_s = np.argmax(near, axis=1)  # the first scenario within the tolerance of the worst
        risk = np.maximum(0.0, -weighted[np.arange(n_cells), best_s])
        cell = np.repeat(run_cell, np.diff(np.r_[starts, order.size]))
        kind = tick.kind[inst]
        linear = kind != KIND_OPTION
        notional = np.where(kind == KIND_LINEAR, q * bound.mark[inst],
                            np.where(kind == KIND_INVERSE,
                                     book.size[order] * table.contract_size[inst], 0.0))
        longs = np.bincount(cell[linear], np.maximum(notional[linear], 0.0), n_cells)
        shorts = np.bincount(cell[linear], np.maximum(-notional[linear], 0.0), n_cells)
        option = kind == KIND_OPTION
        key = (cell[option] // n_u) * max(n_groups, 1) + bound.contingency_group[inst[option]]
        groups, where = np.unique(key, return_inverse=True)
        net = np.bincount(where, q[option], groups.size)
        group_und = np.zeros(groups.size, dtype=np.int64)
        if groups.size:
            first = np.zeros(groups.size, dtype=np.int64)
            first[where] = np.flatnonzero(option)
            group_und = table.underlying[inst[first]].astype(np.int64)
        group_cell = (groups // max(n_groups, 1)) * n_u + group_und
        short = np.maximum(0.0, -net) * cfg.option_contingency_rate * bound.index[group_und]
        contingency = np.bincount(group_cell, short, n_cells) + \
            cfg.linear_contingency_rate * np.minimum(longs, shorts)
        level = np.where(has, risk + contingency, 0.0).reshape(-1, n_u)
        direction = np.where(has, direction_of[best_s], 0.0).reshape(-1, n_u)
        x = level * direction
        rho = bound.correlation - np.eye(n_u)
        quad = np.sum(level * level, axis=1) + np.einsum("au,uv,av->a", x, rho, x)
        im[a0:a1] = np.maximum(np.sqrt(np.maximum(0.0, quad)),
                               (1.0 - cfg.max_cross_offset) * level.sum(axis=1))
    return im, cfg.maintenance_fraction * im
