"""The bulk reader on the bench's file layout (a row group per block of accounts, each with a
dictionary of its own ids, no compression) and on other layouts (one row group with whole
dictionaries, compressed; plain text in several row groups; CSV; extra columns): the same book
and the same margins bit for bit. Account ids are held as Arrow text until a caller reads
them, and compare, index, slice, hash and pickle as the tuple of the same strings."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from margin_engine.bench.run import instrument_names, random_book_columns, write_book_files
from margin_engine.book.columnar import (
    MODES_BY_CODE,
    ColumnarBook,
    TextColumn,
    book_from_columns,
    book_subset,
)
from margin_engine.core.errors import InputError
from margin_engine.demo.market import demo_market_document
from margin_engine.domain.instruments import parse_shorthand
from margin_engine.io import bulk
from margin_engine.io.bulk import read_bulk_book
from margin_engine.io.market_file import parse_market
from margin_engine.margin.tick import TickBook, bind_tick, tick_margins
from tests.conftest import NO_HAIRCUTS
from tests.unit.test_tick_path import assert_same_result


def seeded_book(accounts: int = 240, positions: int = 6) -> ColumnarBook:
    names = instrument_names(120)
    columns = random_book_columns(accounts, positions, names, seed=3)
    instruments = [parse_shorthand(n) for n in names]
    return book_from_columns(
        account_ids=[f"acc-{j:04d}" for j in range(accounts)],
        mode=np.random.default_rng(4).integers(0, 3, accounts).astype(np.int32),
        instruments=[i for i in instruments if i is not None],
        position_account=columns["position_account"],
        position_instrument=columns["position_instrument"],
        size=columns["size"], entry_price=columns["entry_price"],
        assets=("BTC", "USDC"), collateral=columns["collateral"])


def previous_layout(book: ColumnarBook, folder: Path) -> tuple[Path, Path]:
    """One row group, whole dictionaries (every id in the account dictionary), snappy."""
    ids = pa.array(list(book.account_ids), type=pa.string())
    names = pa.array([i.name for i in book.instruments.instruments], type=pa.string())
    positions = pa.table({
        "account": pa.DictionaryArray.from_arrays(
            pa.array(book.position_account().astype(np.int32)), ids),
        "instrument": pa.DictionaryArray.from_arrays(pa.array(book.position_instrument), names),
        "size": book.size, "entry_price": book.entry_price})
    paths = folder / "positions.parquet", folder / "accounts.parquet"
    pq.write_table(positions, paths[0], row_group_size=positions.num_rows,
                   dictionary_pagesize_limit=1 << 30)
    pq.write_table(accounts_table(book), paths[1])
    return paths


def accounts_table(book: ColumnarBook) -> pa.Table:
    return pa.table({"account": list(book.account_ids),
                     "mode": [MODES_BY_CODE[int(c)].value for c in book.mode],
                     **{f"collateral_{a}": book.collateral[:, k]
                        for k, a in enumerate(book.assets)}})


def text_positions(book: ColumnarBook) -> pa.Table:
    """Plain text columns, columns in another order, an extra column."""
    ids = np.array(list(book.account_ids), dtype=object)[book.position_account()]
    names = np.array([i.name for i in book.instruments.instruments],
                     dtype=object)[book.position_instrument]
    return pa.table({"entry_price": book.entry_price, "note": ["x"] * book.position_count,
                     "instrument": names.tolist(), "size": book.size,
                     "account": ids.tolist()})


def margins(book: ColumnarBook) -> object:
    tick_book = TickBook.from_book(book)
    market = parse_market(demo_market_document())
    return tick_margins(tick_book, bind_tick(tick_book, market, NO_HAIRCUTS), NO_HAIRCUTS)


def assert_same_book(got: ColumnarBook, want: ColumnarBook) -> None:
    assert got.account_ids == want.account_ids
    assert tuple(got.account_ids) == tuple(want.account_ids)
    for name in ("mode", "offsets", "size", "entry_price", "collateral"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert got.assets == want.assets
    got_names = [i.name for i in got.instruments.instruments]
    want_names = [i.name for i in want.instruments.instruments]
    assert [got_names[i] for i in got.position_instrument] == \
        [want_names[i] for i in want.position_instrument]


def test_bench_layout_has_row_groups_with_dictionaries_of_their_own(tmp_path: Path) -> None:
    book = seeded_book()
    positions, accounts = write_book_files(book, tmp_path, accounts_per_group=50)
    meta = pq.ParquetFile(positions).metadata
    assert meta.num_row_groups == 5
    assert all(meta.row_group(g).column(c).compression == "UNCOMPRESSED"
               for g in range(5) for c in range(4))
    table = pq.read_table(positions)
    assert pa.types.is_dictionary(table.schema.field("account").type)
    dictionaries = {len(chunk.dictionary) for chunk in table.column("account").chunks}
    assert dictionaries == {50, 40}  # each group's own ids, not all 240
    loaded = read_bulk_book(positions, accounts)
    assert_same_book(loaded, book)
    assert_same_result(margins(loaded), margins(book))


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("layout", ["previous", "text", "csv", "bench-lz4", "one-group"])
def test_every_layout_gives_the_same_book_and_margins(tmp_path: Path, layout: str,
                                                      threaded: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``threaded``: the dictionary codes mapped on several threads, as for a big file."""
    if threaded:
        monkeypatch.setattr(bulk, "THREADED_ROWS", 0)
    book = seeded_book()
    bench = read_bulk_book(*write_book_files(book, tmp_path, accounts_per_group=64))
    folder = tmp_path / layout
    folder.mkdir()
    if layout == "previous":
        paths = previous_layout(book, folder)
    elif layout in ("text", "csv"):
        suffix = "parquet" if layout == "text" else "csv"
        paths = folder / f"positions.{suffix}", folder / f"accounts.{suffix}"
        if layout == "text":
            pq.write_table(text_positions(book), paths[0], row_group_size=100)
            pq.write_table(accounts_table(book), paths[1], row_group_size=70)
        else:
            pa_csv.write_csv(text_positions(book), paths[0])
            pa_csv.write_csv(accounts_table(book), paths[1])
    else:
        paths = write_book_files(book, folder, compression="lz4",
                                 accounts_per_group=64 if layout == "bench-lz4" else 10**6)
    loaded = read_bulk_book(*paths)
    assert_same_book(loaded, book)
    assert_same_book(loaded, bench)
    if layout in ("text", "csv"):  # instruments listed in row order: sums in another order
        got, want = margins(loaded), margins(bench)
        for name in ("initial_margin", "maintenance_margin"):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12)
    else:  # the same instrument table: bit for bit
        assert_same_result(margins(loaded), margins(bench))


def test_positions_alone_in_row_groups_list_each_account_once(tmp_path: Path) -> None:
    book = seeded_book(accounts=90)
    positions, _ = write_book_files(book, tmp_path, accounts_per_group=7)
    loaded = read_bulk_book(positions)
    assert loaded.account_ids == book.account_ids
    np.testing.assert_array_equal(loaded.offsets, book.offsets)


def test_account_ids_are_held_as_arrow_text_and_behave_as_a_tuple(tmp_path: Path) -> None:
    book = seeded_book(accounts=30)
    loaded = read_bulk_book(*write_book_files(book, tmp_path, accounts_per_group=8))
    ids = loaded.account_ids
    assert isinstance(ids, TextColumn)
    assert isinstance(ids.arrow, pa.Array)
    want = tuple(f"acc-{j:04d}" for j in range(30))
    assert ids == want
    assert want == ids
    assert ids != want[:-1]
    assert ids != (*want[:-1], "other")
    assert len(ids) == 30
    assert ids[0] == "acc-0000"
    assert ids[-1] == "acc-0029"
    assert ids[3:6] == ("acc-0003", "acc-0004", "acc-0005")
    assert list(ids) == list(want)
    assert "acc-0007" in ids
    assert ids.index("acc-0007") == 7
    assert hash(ids) == hash(want)
    assert pickle.loads(pickle.dumps(ids)) == want
    assert book_subset(loaded, [4, 1]).account_ids == ("acc-0004", "acc-0001")
    assert loaded.locate(int(loaded.offsets[5]) + 1) == ("acc-0005", 1)
    # a book read back from files it was written to: the same ids
    again = tmp_path / "again"
    again.mkdir()
    assert read_bulk_book(*write_book_files(loaded, again)).account_ids == want


def test_errors_name_the_file_the_column_the_row_and_the_value(tmp_path: Path) -> None:
    book = seeded_book(accounts=20)
    positions, accounts = write_book_files(book, tmp_path, accounts_per_group=6)
    table = pq.read_table(accounts)
    repeated = tmp_path / "repeated.parquet"
    ids = table.column("account").to_pylist()
    ids[13] = ids[4]
    pq.write_table(table.set_column(0, "account", pa.array(ids)), repeated)
    with pytest.raises(InputError, match="a unique account id per row") as caught:
        read_bulk_book(positions, repeated)
    assert "acc-0004" in str(caught.value)
    assert str(repeated) in str(caught.value)
    for blank in ("", " ", "\u3000", "\u00a0\t"):
        bad = tmp_path / "blank.parquet"
        ids = table.column("account").to_pylist()
        ids[2] = blank
        pq.write_table(table.set_column(0, "account", pa.array(ids)), bad)
        with pytest.raises(InputError, match=r"row 3 is empty"):
            read_bulk_book(positions, bad)
    text = text_positions(book)
    names = text.column("account").to_pylist()
    names[8] = "\u2003"
    blank_positions = tmp_path / "blank_positions.parquet"
    pq.write_table(text.set_column(4, "account", pa.array(names)).drop_columns(["note"]),
                   blank_positions, row_group_size=5)
    with pytest.raises(InputError, match=r"row 9 is empty"):
        read_bulk_book(blank_positions)
    missing = tmp_path / "missing.parquet"
    pq.write_table(text.drop_columns(["entry_price"]), missing)
    with pytest.raises(InputError, match="entry_price") as caught:
        read_bulk_book(missing)
    assert "'note'" in str(caught.value)  # every column of the file is listed
    assert str(missing) in str(caught.value)
    sizes = tmp_path / "sizes.parquet"
    values = text.column("size").to_numpy().copy()
    values[11] = np.inf
    pq.write_table(text.set_column(3, "size", pa.array(values)), sizes, row_group_size=4)
    with pytest.raises(InputError, match=r"size \(row 12\)") as caught:
        read_bulk_book(sizes)
    assert repr(text.column("account")[11].as_py()) in str(caught.value)


def test_ids_in_other_scripts_are_kept_as_written(tmp_path: Path) -> None:
    positions = tmp_path / "p.csv"
    positions.write_text("account,instrument,size,entry_price\n"
                         "a 1,BTC-PERP,1,50000\n\u00e9t\u00e9,ETH-PERP,2,2000\n")
    book = read_bulk_book(positions)
    assert book.account_ids == ("a 1", "\u00e9t\u00e9")


@pytest.mark.parametrize(("positions", "accounts", "row", "file"), [
    (" a1", "a1", 1, "p.csv"), ("a1", "a1 ", 2, "a.csv"), ("\u00e9t\u00e9 ", "x", 1, "p.csv")])
def test_ids_with_spaces_at_their_ends_are_refused(tmp_path: Path, positions: str,
                                                   accounts: str, row: int, file: str) -> None:
    """The portfolio reader strips an id's spaces; a bulk book kept them (' a1' in compute,
    'a1' once the monitor's stored document was parsed back by a replay or the service, whose
    routes refuse padded ids): now refused, naming the row, in either file."""
    (tmp_path / "p.csv").write_text(f"account,instrument,size,entry_price\n"
                                    f"{positions},BTC-PERP,1,50000\n")
    (tmp_path / "a.csv").write_text(f"account,mode,collateral_USDC\nz,cross,1\n"
                                    f"{accounts},cross,100\n")
    with pytest.raises(InputError) as info:
        read_bulk_book(tmp_path / "p.csv", tmp_path / "a.csv")
    message = str(info.value)
    assert message.startswith(str(tmp_path / file))
    assert f"'account (row {row})'" in message
    assert "without spaces at its ends; it has spaces at its ends" in message


def test_asset_names_with_spaces_at_their_ends_are_refused(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("account,instrument,size,entry_price\na,BTC-PERP,1,5e4\n")
    (tmp_path / "a.csv").write_text("account,mode,collateral_USDC \na,cross,100\n")
    with pytest.raises(InputError, match="'collateral_USDC '.*without spaces at its ends"):
        read_bulk_book(tmp_path / "p.csv", tmp_path / "a.csv")


def test_the_row_checks_in_pieces_report_each_checks_first_row() -> None:
    """The rows are checked in parallel pieces; each check still names its first failing row
    (a straight scan of the same rows is the reference), whichever piece it lies in."""
    from margin_engine.io.row_checks import CHECKS, PIECE, first_bad_rows_nb

    n = 3 * PIECE + 17
    rng = np.random.default_rng(4)
    size = rng.normal(size=n)
    entry = rng.uniform(1.0, 2.0, size=n)
    inst = rng.integers(0, 3, size=n).astype(np.int32)
    is_option = np.array([False, True, False])
    margin = np.full(n, np.nan)
    size[[PIECE + 5, 2 * PIECE + 1, 3 * PIECE + 3]] = np.nan  # check 0 in pieces 1, 2, 3
    entry[[3 * PIECE + 16, 2 * PIECE - 1]] = 1e300  # check 3 at the end of piece 1 and in 3
    margin[[0, PIECE]] = -1.0  # check 5 on the very first row
    first = first_bad_rows_nb(size, entry, margin, np.zeros(0), inst, is_option, 1e15)
    want = np.full(CHECKS, -1)
    for k, bad in ((0, ~np.isfinite(size)), (3, entry > 1e15), (5, margin < 0.0)):
        want[k] = np.nonzero(bad)[0][0]
    assert first.tolist() == want.tolist()
    assert first.tolist()[:4] == [PIECE + 5, -1, -1, 2 * PIECE - 1]
    one = first_bad_rows_nb(size[:1], entry[:1], margin[:1], np.zeros(0), inst[:1], is_option,
                            1e15)
    assert one[5] == 0
    assert one[0] == -1
    empty = first_bad_rows_nb(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0),
                              np.zeros(0, np.int32), is_option, 1e15)
    assert empty.tolist() == [-1] * CHECKS


def test_a_bad_positions_file_is_reported_before_a_bad_accounts_file(tmp_path: Path) -> None:
    """The accounts file is read alongside the positions; the positions' error still comes
    first, and an accounts error alone is reported as before."""
    book = seeded_book(accounts=20)
    positions, accounts = write_book_files(book, tmp_path, accounts_per_group=6)
    table = pq.read_table(accounts)
    ids = table.column("account").to_pylist()
    ids[7] = ids[2]
    repeated = tmp_path / "repeated.parquet"
    pq.write_table(table.set_column(0, "account", pa.array(ids)), repeated)
    text = text_positions(book).drop_columns(["note"])
    values = text.column("size").to_numpy().copy()
    values[5] = np.nan
    sizes = tmp_path / "sizes.parquet"
    pq.write_table(text.set_column(text.schema.get_field_index("size"), "size",
                                   pa.array(values)), sizes)
    with pytest.raises(InputError, match=r"size \(row 6\)"):
        read_bulk_book(sizes, repeated)
    with pytest.raises(InputError, match="a unique account id per row"):
        read_bulk_book(positions, repeated)
    assert read_bulk_book(positions, accounts).account_ids == book.account_ids


def test_numbers_written_in_four_bytes_are_read_as_the_decimals_they_name(
        tmp_path: Path) -> None:
    """A writer that keeps sizes, prices and balances as 4-byte floats: 1.1 is
    stored as 1.10000002384185791015625. It was read as that (equity 105,480.00011920929
    where the same book in 8-byte floats has 105,480); each value is now read as the shortest
    decimal that names it, so the book equals the one written with those decimals."""
    decimals = {"size": [1.1, -2.5, 0.3], "entry_price": [60_000.0, 2_500.5, 61_234.57]}
    ids = ["a", "a", "b"]
    instruments = ["BTC-PERP", "ETH-PERP", "BTC-PERP"]
    paths = {}
    for label, kind in (("wide", pa.float64()), ("narrow", pa.float32())):
        positions = pa.table({"account": ids, "instrument": instruments,
                              **{k: pa.array(v, kind) for k, v in decimals.items()}})
        accounts = pa.table({"account": ["a", "b"], "mode": ["portfolio", "cross"],
                             "collateral_USDC": pa.array([1000.1, 20.3], kind)})
        paths[label] = (tmp_path / f"{label}-p.parquet", tmp_path / f"{label}-a.parquet")
        pq.write_table(positions, paths[label][0])
        pq.write_table(accounts, paths[label][1])
    wide, narrow = (read_bulk_book(*paths[k]) for k in ("wide", "narrow"))
    assert narrow.size.tolist() == decimals["size"]
    assert narrow.entry_price.tolist() == decimals["entry_price"]
    assert narrow.collateral.tolist() == wide.collateral.tolist() == [[1000.1], [20.3]]
    assert narrow.size.tolist() == wide.size.tolist()
