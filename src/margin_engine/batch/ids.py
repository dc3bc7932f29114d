"""Account ids across the partitions of a batch: each partition's ids hashed where it is read
(8 bytes an account travel back, not the ids), so the client finds an account that two
partitions both hold (each would be margined apart: its offsets and collateral split) without
reading the book."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit

from margin_engine.book.columnar import TextColumn
from margin_engine.core.errors import InputError

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True)
def fnv1a_nb(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a of each string of an Arrow string array's buffers (``offsets``:
    n + 1 byte offsets into ``data``, UTF-8 bytes)."""
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.uint64)
    for k in range(n):
        h = FNV_OFFSET
        for b in range(offsets[k], offsets[k + 1]):
            h = (h ^ np.uint64(data[b])) * FNV_PRIME
        out[k] = h
    return out


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each account id (equal ids, equal hashes)."""
    import pyarrow as pa

    from margin_engine.io.bulk import text_buffers

    array = ids.arrow if isinstance(ids, TextColumn) else pa.array(list(ids), type=pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = array.cast(pa.string())  # a dictionary of strings
    return fnv1a_nb(*text_buffers(array))


def shared_accounts(hashes: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of the partitions whose hashes hold one value in common (every
    pair of partitions among those holding a value, each pair once, in order); empty when
    every hash is in one partition only."""
    if not hashes:
        return []
    values = np.concatenate(hashes)
    ordered = np.sort(values)
    if not np.any(ordered[1:] == ordered[:-1]):  # the usual case: one sort, no more
        return []
    part = np.repeat(np.arange(len(hashes)), [h.size for h in hashes])
    order = np.argsort(values, kind="stable")
    values, part = values[order], part[order]
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    ends = np.append(starts[1:], values.size)
    pairs: set[tuple[int, int]] = set()
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if b - a > 1:
            holders = sorted(set(part[a:b].tolist()))
            pairs.update((i, j) for k, i in enumerate(holders) for j in holders[k + 1:])
    return sorted(pairs)


def refuse_shared(pairs: list[tuple[int, int]], names: Sequence[str],
                  read_ids: Any) -> None:
    """InputError naming an account two partitions hold (``read_ids(i)``: partition i's
    ids), for the first pair whose ids really meet (a hash may be shared by two ids)."""
    for i, j in pairs:
        common = sorted(set(read_ids(i)) & set(read_ids(j)))
        if common:
            raise InputError(
                f"each account in one partition only: account '{common[0]}' is in both "
                f"{names[i]} and {names[j]} ({len(common)} account(s) shared); it would be "
                "margined twice, its positions and collateral apart", field="account",
                value=common[0])
