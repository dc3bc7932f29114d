"""Fused per-position binding kernels (one pass over the position arrays, no temporaries)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from margin_engine.core.types import BoolArray, FloatArray, IntArray


@njit(cache=True)
def position_arrays_nb(inst: np.ndarray, size: FloatArray, entry: FloatArray,
                       contract_size: FloatArray, inverse: BoolArray, is_option: BoolArray,
                       spot: FloatArray, mark: FloatArray, quantity: FloatArray,
                       entry_usd: FloatArray, signed_notional: FloatArray,
                       gross_notional: FloatArray) -> None:
    """q, entry in USD, signed notional at mark and gross notional at index (see bound.py)."""
    for p in range(inst.shape[0]):
        i = inst[p]
        size_cs = size[p] * contract_size[i]
        if inverse[i] and not is_option[i]:
            quantity[p] = size_cs / entry[p]
            entry_usd[p] = entry[p]
            signed_notional[p] = size_cs
            gross_notional[p] = abs(size_cs)
        else:
            quantity[p] = size_cs
            entry_usd[p] = entry[p] * spot[i] if inverse[i] else entry[p]
            signed_notional[p] = size_cs * mark[i]
            gross_notional[p] = abs(size_cs) * spot[i]


@njit(cache=True, parallel=True)
def quantity_nb(inst: np.ndarray, size: FloatArray, entry: FloatArray,
                contract_size: FloatArray, inverse: BoolArray, is_option: BoolArray
                ) -> FloatArray:
    """q per position: size x contract size, in coin for an inverse delta-one contract
    (/ entry price), as ``position_arrays_nb``."""
    quantity = np.empty(inst.shape[0])
    for p in prange(inst.shape[0]):
        i = inst[p]
        size_cs = size[p] * contract_size[i]
        quantity[p] = size_cs / entry[p] if inverse[i] and not is_option[i] else size_cs
    return quantity


@njit(cache=True)
def unrealised_pnl_nb(offsets: IntArray, inst: np.ndarray, quantity: FloatArray,
                      mark: FloatArray, entry_usd: FloatArray) -> FloatArray:
    """Per account sum of q x (mark - entry_usd) over its CSR slice of positions."""
    out = np.zeros(offsets.shape[0] - 1)
    for a in range(offsets.shape[0] - 1):
        total = 0.0
        for p in range(offsets[a], offsets[a + 1]):
            total += quantity[p] * (mark[inst[p]] - entry_usd[p])
        out[a] = total
    return out


@njit(cache=True)
def instrument_counts_nb(inst: np.ndarray, n_inst: int) -> IntArray:
    """How many position rows hold each instrument (``np.bincount`` without its int64 copy
    of the rows: on a large book that copy is fresh memory the first time, page by page)."""
    out = np.zeros(n_inst, dtype=np.int64)
    for p in range(inst.shape[0]):
        out[inst[p]] += 1
    return out


@njit(cache=True)
def rows_holding_nb(amounts: FloatArray, columns: np.ndarray) -> IntArray:
    """The rows a (in order) with amounts[a, c] != 0 in some column c where columns[c]
    (accounts x assets balances: the accounts holding any of those assets). Without a
    branch per row: which accounts hold an asset follows no pattern."""
    held = np.zeros(amounts.shape[0], dtype=np.bool_)
    count = 0
    for a in range(amounts.shape[0]):
        h = False
        for c in range(amounts.shape[1]):
            h |= columns[c] & (amounts[a, c] != 0.0)
        held[a] = h
        count += h
    out = np.empty(count + 1, dtype=np.int64)  # a row past the end for the last writes
    k = 0
    for a in range(amounts.shape[0]):
        out[k] = a
        k += held[a]
    return out[:count]


@njit(cache=True)
def position_account_nb(offsets: IntArray) -> IntArray:
    """Account index of every position row from CSR offsets."""
    out = np.empty(offsets[-1], dtype=np.int64)
    for a in range(offsets.shape[0] - 1):
        out[offsets[a]:offsets[a + 1]] = a
    return out


@njit(cache=True, parallel=True)
def first_repeat_nb(offsets: IntArray, inst: np.ndarray, n_inst: int) -> int:
    """The first position row (in book order) whose instrument the account already holds, or
    -1: the accounts in pieces of ``ACCOUNT_PIECE`` checked in parallel, each in one pass
    (``seen[i]`` = the last account seen holding instrument i); the first piece that finds
    one gives it."""
    n_acct = offsets.shape[0] - 1
    pieces = max(1, (n_acct + ACCOUNT_PIECE - 1) // ACCOUNT_PIECE)
    found = np.full(pieces, -1, dtype=np.int64)
    for c in prange(pieces):
        seen = np.full(max(n_inst, 1), -1, dtype=np.int64)
        for a in range(c * ACCOUNT_PIECE, min(n_acct, (c + 1) * ACCOUNT_PIECE)):
            for p in range(offsets[a], offsets[a + 1]):
                i = inst[p]
                if seen[i] == a and found[c] < 0:
                    found[c] = p
                seen[i] = a
    for c in range(pieces):
        if found[c] >= 0:
            return int(found[c])
    return -1


ACCOUNT_PIECE = 65_536  # accounts a piece of ``first_repeat_nb``


GROUPED, UNGROUPED, OUT_OF_RANGE = 0, 1, 2


@njit(cache=True)
def grouped_offsets_nb(account: np.ndarray, n_accounts: int) -> tuple[IntArray, int]:
    """(CSR offsets (n_accounts + 1), GROUPED) of position rows grouped by account in
    ascending order, in one pass; UNGROUPED when a row's account is below the previous row's
    (the caller sorts then), OUT_OF_RANGE when one lies outside [0, n_accounts)."""
    offsets = np.zeros(n_accounts + 1, dtype=np.int64)
    previous = 0
    status = GROUPED
    for p in range(account.shape[0]):
        a = account[p]
        if a < 0 or a >= n_accounts:
            return offsets, OUT_OF_RANGE
        if a < previous:
            status = UNGROUPED
        previous = a
        offsets[a + 1] += 1
    for a in range(n_accounts):
        offsets[a + 1] += offsets[a]
    return offsets, status


@njit(cache=True)
def held_by_underlying_nb(inst: np.ndarray, underlying: IntArray, n_u: int
                          ) -> tuple[IntArray, IntArray, IntArray]:
    """The instruments the rows ``inst`` hold, by underlying: (instruments, in ascending
    order within each underlying; starts, n_u + 1 offsets of each underlying's run;
    positions, rows per underlying)."""
    n_inst = underlying.shape[0]
    counts = instrument_counts_nb(inst, n_inst)
    starts = np.zeros(n_u + 1, dtype=np.int64)
    positions = np.zeros(n_u, dtype=np.int64)
    for i in range(n_inst):
        if counts[i] > 0:
            starts[underlying[i] + 1] += 1
            positions[underlying[i]] += counts[i]
    for u in range(n_u):
        starts[u + 1] += starts[u]
    held = np.empty(starts[n_u], dtype=np.int64)
    filled = starts[:n_u].copy()
    for i in range(n_inst):
        if counts[i] > 0:
            u = underlying[i]
            held[filled[u]] = i
            filled[u] += 1
    return held, starts, positions


@njit(cache=True)
def longest_row_nb(offsets: np.ndarray) -> int:
    """max(diff(offsets)): the most rows of one CSR row (0 when there are none)."""
    longest = 0
    for a in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[a + 1] - offsets[a])
    return longest
