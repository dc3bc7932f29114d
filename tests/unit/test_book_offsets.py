"""Books built from position columns: offsets and row order from the one-pass grouping
kernel, against numpy's stable sort and bincount; per-position quantities from the fused
kernel against the numpy formula."""

from __future__ import annotations

import numpy as np
import pytest

from margin_engine.book.columnar import book_from_columns
from margin_engine.book.kernels import (
    held_by_underlying_nb,
    instrument_counts_nb,
    longest_row_nb,
    quantity_nb,
    rows_holding_nb,
)
from margin_engine.domain.instruments import parse_shorthand

NAMES = ["BTC-PERP", "ETH-PERP", "BTC-27JUN25", "BTC-27JUN25-70000-C", "ETH-26SEP25-2500-P"]


def _book(account: np.ndarray, n_accounts: int, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    n = account.size
    instruments = [parse_shorthand(n) for n in NAMES]
    return book_from_columns(
        account_ids=[f"a{k}" for k in range(n_accounts)],
        mode=np.zeros(n_accounts, dtype=np.int32),
        instruments=[i for i in instruments if i is not None],
        position_account=account, position_instrument=rng.integers(0, len(NAMES), n).astype(
            np.int32), size=np.arange(n, dtype=np.float64) + 1.0,
        entry_price=rng.uniform(1.0, 2.0, n))


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_offsets_and_order_equal_a_stable_sort(grouped: bool, dtype: type) -> None:
    rng = np.random.default_rng(3)
    n_accounts = 50
    account = rng.integers(0, n_accounts, 400).astype(dtype)
    if grouped:
        account.sort()
    book = _book(account, n_accounts)
    order = np.argsort(account, kind="stable")
    expected = np.zeros(n_accounts + 1, dtype=np.int64)
    expected[1:] = np.cumsum(np.bincount(account, minlength=n_accounts))
    assert book.offsets.tolist() == expected.tolist()
    # sizes are the row numbers: the stable order keeps each account's rows in file order
    assert book.size.tolist() == (order + 1.0).tolist()


@pytest.mark.parametrize("bad", [-1, 7])
def test_an_account_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        _book(np.array([0, 1, bad, 3]), 7)


def test_quantity_kernel_equals_the_numpy_formula() -> None:
    rng = np.random.default_rng(5)
    n_inst, n = 40, 5000
    inst = rng.integers(0, n_inst, n).astype(np.int32)
    size = rng.normal(0.0, 10.0, n)
    entry = rng.uniform(100.0, 70000.0, n)
    contract = rng.choice([1.0, 10.0, 100.0, 0.01], n_inst)
    inverse = rng.random(n_inst) < 0.5
    option = rng.random(n_inst) < 0.4
    size_cs = size * contract[inst]
    inverse_linear = (inverse & ~option)[inst]
    expected = np.divide(size_cs, entry, out=size_cs.copy(), where=inverse_linear)
    got = quantity_nb(inst, size, entry, contract, inverse, option)
    assert np.array_equal(got, expected)
    assert inverse_linear.any()
    assert (~inverse_linear).any()


def test_the_first_repeated_instrument_is_found_in_book_order_across_pieces() -> None:
    """Accounts are checked in parallel pieces; the row named is still the first repeat in
    book order (a straight scan is the reference), or -1 when none."""
    from margin_engine.book.kernels import ACCOUNT_PIECE, first_repeat_nb

    n_acct = 3 * ACCOUNT_PIECE + 5
    offsets = np.arange(n_acct + 1, dtype=np.int64) * 3
    rng = np.random.default_rng(8)
    inst = np.concatenate([rng.choice(50, size=3, replace=False) for _ in range(n_acct)])
    inst = inst.astype(np.int32)
    assert first_repeat_nb(offsets, inst, 50) == -1
    for accounts in ([2 * ACCOUNT_PIECE + 9, ACCOUNT_PIECE + 1], [n_acct - 1], [0, 5]):
        repeated = inst.copy()
        for a in accounts:
            repeated[3 * a + 2] = repeated[3 * a]
        want = next(p for p in range(repeated.size)
                    if repeated[p] in repeated[3 * (p // 3):p])
        assert first_repeat_nb(offsets, repeated, 50) == want == 3 * min(accounts) + 2


@pytest.mark.parametrize("rows", [0, 1, 10_000])
def test_instrument_counts_are_numpys_bincount(rows: int) -> None:
    inst = np.random.default_rng(rows).integers(0, 7, rows).astype(np.int32)
    counts = instrument_counts_nb(inst, 9)
    assert np.array_equal(counts, np.bincount(inst, minlength=9))
    assert counts[7:].sum() == 0
    assert counts.sum() == rows


@pytest.mark.parametrize("rows", [0, 1, 5_000])
def test_instruments_held_by_underlying_are_the_counted_ones_in_order(rows: int) -> None:
    rng = np.random.default_rng(rows)
    underlying = rng.integers(0, 3, 40).astype(np.int64)
    inst = rng.integers(0, 40, rows).astype(np.int32)
    held, starts, positions = held_by_underlying_nb(inst, underlying, 4)
    counts = np.bincount(inst, minlength=40)
    for u in range(4):
        want = np.nonzero((counts > 0) & (underlying == u))[0]
        assert np.array_equal(held[starts[u]:starts[u + 1]], want)
        assert positions[u] == counts[want].sum()
    assert starts[0] == 0
    assert starts[-1] == held.size


@pytest.mark.parametrize("lengths", [[], [0], [3], [2, 0, 7, 7, 1]])
def test_the_longest_row_is_the_largest_difference_of_the_offsets(lengths: list[int]) -> None:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    assert longest_row_nb(offsets) == max(lengths, default=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contingency_groups_are_numbered_by_first_row(seed: int) -> None:
    """Options of one underlying, expiry and strike share a group, numbered in the order of
    their first instrument row (the order the passes net them in): the vectorised numbering
    against a dictionary filled row by row, on shuffled instrument tables with calls and puts
    of shared strikes, delta-one rows between them and equal strikes on other expiries."""
    from margin_engine.book.bound import _contingency_groups

    names = [f"{u}-{e}-{k}-{r}" for u in ("BTC", "ETH") for e in ("27JUN25", "26SEP25")
             for k in (2500, 3000, 70000) for r in ("C", "P")]
    names += ["BTC-PERP", "ETH-PERP", "BTC-27JUN25", "ETH-26SEP25"]
    rng = np.random.default_rng(seed)
    names = [names[k] for k in rng.permutation(len(names))]
    instruments = [parse_shorthand(n) for n in names]
    book = book_from_columns(
        account_ids=["a"], mode=np.zeros(1, dtype=np.int32),
        instruments=[i for i in instruments if i is not None],
        position_account=np.zeros(len(names), dtype=np.int64),
        position_instrument=np.arange(len(names), dtype=np.int32), size=np.ones(len(names)),
        entry_price=np.ones(len(names)))
    table = book.instruments
    want = np.full(len(table.instruments), -1, dtype=np.int64)
    keys: dict[tuple[int, int, float], int] = {}
    for row in range(len(table.instruments)):
        if table.is_option[row]:
            key = (int(table.underlying[row]), int(table.expiry_ns[row]),
                   float(table.strike[row]))
            want[row] = keys.setdefault(key, len(keys))
    got = _contingency_groups(book)
    np.testing.assert_array_equal(got, want)
    assert len(keys) == 12  # calls and puts paired
    assert (got >= 0).sum() == 24


@pytest.mark.parametrize("seed", range(4))
def test_rows_holding_are_the_rows_with_a_balance_in_the_columns(seed: int) -> None:
    """Rows with a non-zero (NaN included) amount in a chosen column, in order, as numpy
    finds them; none, one and every row among the cases."""
    rng = np.random.default_rng(seed)
    for rows in (0, 1, 2, 33, 500):
        columns = int(rng.integers(1, 5))
        amounts = rng.choice([0.0, 1.5, -2.0, np.nan], size=(rows, columns),
                             p=[0.6, 0.2, 0.1, 0.1])
        for chosen in (rng.random(columns) < 0.5, np.ones(columns, dtype=np.bool_)):
            want = np.nonzero((amounts[:, chosen] != 0.0).any(axis=1))[0]
            assert np.array_equal(rows_holding_nb(amounts, chosen), want)
