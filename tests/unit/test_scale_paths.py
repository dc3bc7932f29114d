"""The fast paths of the scale work against their plain counterparts: the worst-scenario scan
(minimum first, in-order scan only on a near tie), option groups netted on the fly when an
account holds them in group order, and the bulk reader's dictionary columns (read through the
dictionary, several dictionaries merged, unused entries ignored, bad rows named)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from margin_engine.book.bound import bind_market
from margin_engine.core.errors import InputError
from margin_engine.demo.market import demo_market_document
from margin_engine.io.bulk import read_bulk_book
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.explain import explain_portfolio
from margin_engine.margin.portfolio import PortfolioModel
from margin_engine.margin.portfolio_kernel import TIE_TOLERANCE, _worst_scenario
from margin_engine.margin.tick import TickBook, bind_tick, tick_margins
from tests.conftest import NO_HAIRCUTS
from tests.unit.test_tick_path import assert_same_result


def in_order_scan(row: np.ndarray, weights: np.ndarray) -> int:
    """The rule as written: scan in order, replace the worst b only below b - tol max(1, |b|)."""
    best, best_s = weights[0] * row[0], 0
    for s in range(1, row.size):
        value = weights[s] * row[s]
        if value < best - TIE_TOLERANCE * max(1.0, abs(best)):
            best, best_s = value, s
    return best_s


def test_worst_scenario_equals_the_in_order_scan_with_and_without_near_ties() -> None:
    rng = np.random.default_rng(5)
    weights = np.r_[np.ones(27), np.full(2, 1.0 / 3.0)]
    rows = rng.normal(0.0, 1e4, (4000, 29))
    # near ties: copies of the minimum nudged by fractions of the tolerance, before and after it
    for k in range(0, 4000, 2):
        row = rows[k]
        low = int(np.argmin(row))
        for s in rng.choice(29, 3, replace=False):
            row[s] = row[low] * (1.0 + rng.choice([-0.5, 0.0, 0.5, 2.0]) * TIE_TOLERANCE)
    rows[1] = 0.0  # all equal: the first wins
    rows[3, :] = -1.0
    rows[3, 20] = -1.0 - 0.5e-12  # within the tolerance of an earlier worst: not taken
    seen_ties = 0
    out = np.empty(29)
    for row in rows:
        want = in_order_scan(row, weights)
        seen_ties += want != int(np.argmin(weights * row))
        assert _worst_scenario(row.reshape(1, -1), 0, weights, 29, out) == want
    assert seen_ties > 100  # the near-tie path was exercised, not only the fast one


def _bench_book(accounts: int) -> TickBook:
    from margin_engine.bench.run import _book, instrument_names, random_book_columns

    names = instrument_names(200)
    return TickBook.from_book(_book(names, random_book_columns(accounts, 12, names, 3)))


def _groups_in_order(tick_book: TickBook, groups: np.ndarray, account: int) -> bool:
    book = tick_book.book
    rows = book.position_instrument[book.offsets[account]:book.offsets[account + 1]]
    g = groups[rows][groups[rows] >= 0]  # the option rows, in book order
    return bool(np.all(np.diff(g) >= 0))  # a group's rows next to each other, groups ascending


def test_options_netted_on_the_fly_equal_the_model_and_the_scalar_reference() -> None:
    # positions sorted by instrument: every account's options come in group order, calls and
    # puts of a strike next to each other (the on-the-fly path, nets of two rows included)
    tick_book = _bench_book(300)
    market = parse_market(demo_market_document())
    state = bind_tick(tick_book, market, NO_HAIRCUTS)
    groups = state.instruments.contingency_group
    assert all(_groups_in_order(tick_book, groups, a) for a in range(300))
    got = tick_margins(tick_book, state, NO_HAIRCUTS)
    bound = bind_market(tick_book.book, market)
    assert_same_result(got, PortfolioModel().compute(bound, NO_HAIRCUTS))
    for a in range(0, 300, 10):
        want = explain_portfolio(bound, NO_HAIRCUTS, a)["initial_margin"]
        assert got.initial_margin[a] == pytest.approx(want, rel=1e-12, abs=1e-9)
    paired = sum(int(np.unique(groups[tick_book.book.position_instrument[
        tick_book.book.offsets[a]:tick_book.book.offsets[a + 1]]], return_counts=True)[1]
        .max() > 1) for a in range(300))
    assert paired > 0  # some account holds a call and a put of one strike


def test_accounts_with_groups_out_of_order_take_the_sorted_path() -> None:
    from tests.unit.level_books import random_level_book

    bound = random_level_book(300, seed=31)
    tick_book = TickBook.from_book(bound.book)
    state = bind_tick(tick_book, bound.market, RiskConfig())
    groups = state.instruments.contingency_group
    order = [_groups_in_order(tick_book, groups, a) for a in range(300)]
    assert not all(order)
    assert any(order)
    assert_same_result(tick_margins(tick_book, state, RiskConfig()),
                       PortfolioModel().compute(bound, RiskConfig()))


ROWS = [("a2", "ETH-PERP", -3.0, 2100.0), ("a1", "BTC-PERP", 1.0, 49000.0),
        ("a1", "BTC-27JUN25-60000-C", -2.0, 800.0), ("a3", "BTC-PERP", 2.0, 50000.0)]


def _dictionary_file(path: Path, batches: list[list[tuple]], extra: tuple[str, ...] = ()
                     ) -> Path:
    """One row group per batch, each with a dictionary of its own (plus ``extra`` unused
    names)."""
    writer = None
    for rows in batches:
        accounts = sorted({r[0] for r in rows}, reverse=True)
        names = sorted({r[1] for r in rows}) + list(extra)
        table = pa.table({
            "account": pa.DictionaryArray.from_arrays(
                pa.array([accounts.index(r[0]) for r in rows], type=pa.int32()), accounts),
            "instrument": pa.DictionaryArray.from_arrays(
                pa.array([names.index(r[1]) for r in rows], type=pa.int32()), names),
            "size": [r[2] for r in rows], "entry_price": [r[3] for r in rows]})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    return path


def _plain_file(path: Path, rows: list[tuple]) -> Path:
    pq.write_table(pa.table({"account": [r[0] for r in rows],
                             "instrument": [r[1] for r in rows],
                             "size": [r[2] for r in rows],
                             "entry_price": [r[3] for r in rows]}), path)
    return path


def test_dictionary_columns_give_the_same_book_as_plain_text(tmp_path: Path) -> None:
    plain = read_bulk_book(_plain_file(tmp_path / "plain.parquet", ROWS))
    merged = read_bulk_book(_dictionary_file(tmp_path / "dict.parquet", [ROWS[:2], ROWS[2:]],
                                             extra=("NOT-AN-INSTRUMENT",)))
    assert pq.ParquetFile(tmp_path / "dict.parquet").metadata.num_row_groups == 2
    assert merged.account_ids == plain.account_ids == ("a2", "a1", "a3")
    for name in ("offsets", "size", "entry_price"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(plain, name))
    names = [i.name for i in merged.instruments.instruments]
    plain_names = [i.name for i in plain.instruments.instruments]
    assert [names[i] for i in merged.position_instrument] == \
        [plain_names[i] for i in plain.position_instrument]
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("account,mode,collateral_USDC\na1,portfolio,10\na3,cross,5\n"
                        "a2,cross,1\na4,cross,2\n")
    joined = read_bulk_book(tmp_path / "dict.parquet", accounts)
    assert joined.account_ids == ("a1", "a3", "a2", "a4")
    np.testing.assert_array_equal(np.diff(joined.offsets), [2, 1, 1, 0])


def test_dictionary_columns_refuse_bad_rows_by_name(tmp_path: Path) -> None:
    repeated = _dictionary_file(tmp_path / "repeat.parquet",
                                [ROWS[:2], [("a1", "BTC-PERP", 3.0, 50000.0)]])
    with pytest.raises(InputError, match="once per account") as caught:
        read_bulk_book(repeated)
    assert "BTC-PERP" in str(caught.value)
    assert "a1" in str(caught.value)
    table = pa.table({"account": pa.array(["a1", None]).dictionary_encode(),
                      "instrument": pa.array(["BTC-PERP", "ETH-PERP"]).dictionary_encode(),
                      "size": [1.0, 1.0], "entry_price": [1.0, 1.0]})
    pq.write_table(table, tmp_path / "empty.parquet")
    with pytest.raises(InputError, match=r"row 2 is empty"):
        read_bulk_book(tmp_path / "empty.parquet")
    unknown = _dictionary_file(tmp_path / "unknown.parquet",
                               [[*ROWS[:2], ("a1", "BTC-XYZ", 1.0, 1.0)]])
    with pytest.raises(InputError, match=r"instrument \(row 3\)"):
        read_bulk_book(unknown)
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("account,mode\na1,portfolio\n")
    with pytest.raises(InputError, match="an account listed in") as caught:
        read_bulk_book(_dictionary_file(tmp_path / "d.parquet", [ROWS]), accounts)
    assert "a2" in str(caught.value) or "a3" in str(caught.value)
