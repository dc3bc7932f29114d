"""A book written as a portfolio document (``book.document``): the document parses back to
the book that rides along with it, field by field, for bulk books of every kind the reader
takes (modes, futures and options, asked isolated margins and leverages, collateral
columns no account holds, accounts files in another order than the positions, any script in
the ids, instruments out of name order, 4-byte floats)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from margin_engine.book.columnar import MODES_BY_CODE, ColumnarBook, book_from_portfolio
from margin_engine.book.document import book_document
from margin_engine.domain.instruments import parse_shorthand
from margin_engine.io import json_stream
from margin_engine.io.bulk import read_bulk_book
from margin_engine.io.portfolio_file import parse_portfolio
from tests.unit.level_books import instrument_document, random_level_book
from tests.unit.test_bulk_layouts import (
    accounts_table,
    previous_layout,
    seeded_book,
    text_positions,
)


def independent_document(book: ColumnarBook) -> dict[str, Any]:
    """The portfolio document of ``book``, built here account by account: the instruments
    held whose shorthand does not name them declared."""
    names = [i.name for i in book.instruments.instruments]
    accounts = []
    for a, account in enumerate(book.account_ids):
        positions = []
        for p in range(int(book.offsets[a]), int(book.offsets[a + 1])):
            row = {"instrument": names[int(book.position_instrument[p])],
                   "size": float(book.size[p]), "entry_price": float(book.entry_price[p])}
            for key, column in (("margin", book.position_margin),
                                ("leverage", book.position_leverage)):
                if column is not None and np.isfinite(column[p]):
                    row[key] = float(column[p])
            positions.append(row)
        accounts.append({"id": account, "mode": MODES_BY_CODE[int(book.mode[a])].value,
                         "collateral": {asset: float(book.collateral[a, k])
                                        for k, asset in enumerate(book.assets)
                                        if book.collateral[a, k] != 0.0},
                         "positions": positions})
    document: dict[str, Any] = {"schema": "margin-engine/portfolio/v1", "accounts": accounts}
    held = {book.instruments.instruments[k] for k in set(book.position_instrument.tolist())}
    declared = {i.name: instrument_document(i) for i in held if parse_shorthand(i.name) != i}
    if declared:
        document["instruments"] = declared
    return document


def checked(book: ColumnarBook) -> tuple[dict[str, Any], ColumnarBook]:
    """The document of ``book`` (its text equal to ``json.dumps`` of the document built
    here, keys sorted) and the book that rides along, checked to be the book a restart, a
    replay or the service parses the text to."""
    made = book_document(book)
    document = independent_document(book)
    text = made.text()
    assert text == json.dumps(document, sort_keys=True)
    assert_same_book(made.book, book_from_portfolio(parse_portfolio(json.loads(text))))
    return document, made.book


def assert_same_book(carried: ColumnarBook, expected: ColumnarBook) -> None:
    assert tuple(carried.account_ids) == tuple(expected.account_ids)
    assert carried.instruments.instruments == expected.instruments.instruments
    assert carried.assets == expected.assets
    for name in ("mode", "offsets", "position_instrument", "size", "entry_price", "collateral"):
        got, want = getattr(carried, name), getattr(expected, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name, strict=True)
    for name in ("position_margin", "position_leverage"):
        got, want = getattr(carried, name), getattr(expected, name)
        assert (got is None) == (want is None), name
        if got is not None:
            np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize(("block", "chunk"), [(20_000, 2_000), (7, 5), (1, 1)])
def test_a_seeded_bulk_book_every_mode_and_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                block: int, chunk: int) -> None:
    """Made and encoded in blocks of accounts that do not divide the book."""
    from margin_engine.book import document as module

    monkeypatch.setattr(module, "_BLOCK", block)
    monkeypatch.setattr(json_stream, "CHUNK", chunk)
    positions, accounts = previous_layout(seeded_book(), tmp_path)
    read = read_bulk_book(positions, accounts)
    document, book = checked(read)
    assert len(document["accounts"]) == book.account_count == 240
    assert len({i.kind for i in book.instruments.instruments}) >= 3
    assert len(set(book.mode.tolist())) == 3


def test_a_hostile_bulk_book(tmp_path: Path) -> None:
    """Instruments out of name order, a collateral column nobody holds (ETH) and one column held
    by one account only, asked margins and leverages on isolated rows, an accounts file in
    another order with an account holding nothing, ids in other scripts, float32 sizes."""
    positions = pa.table({
        "account": ["Zürich 账户-7", "b", "b", "a", "Zürich 账户-7"],
        "instrument": ["ETH-PERP", "BTC-27JUN25-60000-C", "BTC-PERP", "BTC-27JUN25", "BTC-PERP"],
        "size": pa.array([1.1, -2.0, 0.3, 5.0, -0.7], pa.float32()),
        "entry_price": [2500.0, 0.05, 60000.0, 61000.0, 59000.5],
        "margin": [None, None, 1500.0, None, None],
        "leverage": [None, None, None, 10.0, 20.0]})
    pq.write_table(positions, tmp_path / "positions.parquet")
    (tmp_path / "accounts.csv").write_text(
        "account,mode,collateral_USDC,collateral_ETH,collateral_BTC\n"
        "empty,cross,250,0,0\n"
        "b,isolated,40000,0,0\n"
        "a,isolated,0,0,1.5\n"
        "Zürich 账户-7,portfolio,100000.25,0,0\n", encoding="utf-8")
    document, book = checked(read_bulk_book(tmp_path / "positions.parquet",
                                            tmp_path / "accounts.csv"))
    assert book.assets == ("BTC", "USDC")  # ETH: no account holds it
    assert book.position_margin is not None
    assert book.position_leverage is not None
    zurich = next(a for a in document["accounts"] if a["id"] == "Zürich 账户-7")
    assert zurich["positions"][0] == {"instrument": "ETH-PERP", "size": 1.1,
                                      "entry_price": 2500.0}  # the decimal written, not 4 bytes
    assert {a["id"]: a["collateral"] for a in document["accounts"]}["a"] == {"BTC": 1.5}


def test_a_book_without_an_accounts_file(tmp_path: Path) -> None:
    (tmp_path / "positions.csv").write_text(
        "account,instrument,size,entry_price\nx,SOL-PERP,-3,150\ny,BTC-PERP,1,50000\n")
    document, _ = checked(read_bulk_book(tmp_path / "positions.csv"))
    assert [a["mode"] for a in document["accounts"]] == ["portfolio", "portfolio"]
    assert [a["collateral"] for a in document["accounts"]] == [{}, {}]


@pytest.mark.parametrize("seed", [5, 6])
def test_a_book_listing_instruments_and_assets_nobody_holds(seed: int) -> None:
    """Any columnar book (a table may list instruments no position uses, and assets no account
    holds): only the held ones reach the document and its book."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    book = seeded_book(accounts=60, positions=4)
    book = replace(book, collateral=book.collateral * (rng.random(book.collateral.shape) < 0.3))
    book.collateral[:, 0] = 0.0
    assert len(book.instruments.instruments) > len(np.unique(book.position_instrument))
    _, carried = checked(book)
    assert carried.assets == book.assets[1:]
    assert len(carried.instruments.instruments) == len(np.unique(book.position_instrument))


def test_a_book_with_declared_instruments_and_a_book_folder(tmp_path: Path) -> None:
    """Inverse perps, futures and options and contract sizes that no shorthand names are
    declared in the document (a book folder declares them in its instruments.json); asked
    isolated margins and leverages; six collateral assets."""
    from margin_engine.batch.book import read_bulk_path, write_partitioned_book
    from tests.unit.level_books import declared_instruments_document

    book = random_level_book(300, seed=41).book
    document, carried = checked(book)
    assert len(document["instruments"]) >= 4
    assert {i.settlement.name for i in carried.instruments.instruments} == {"LINEAR", "INVERSE"}
    write_partitioned_book(random_level_book(300, seed=41, asked_margins=False).book,
                           tmp_path / "book", 3, declared_instruments_document())
    document, carried = checked(read_bulk_path(tmp_path / "book"))
    assert carried.account_count == 300
    assert document["instruments"]


def test_the_digest_names_the_book_not_its_files(tmp_path: Path) -> None:
    """The monitor's fingerprint of a bulk book is its digest (a restart need not write the
    text again): the same book from Parquet and from CSV, its accounts file's columns in
    another order, has the same digest; any one change to what the text holds changes it."""
    from dataclasses import replace

    book = read_bulk_book(*previous_layout(seeded_book(), tmp_path))
    digest = book_document(book).digest()
    (tmp_path / "p.csv").write_text(text_positions(book).to_pandas().to_csv(index=False))
    accounts = accounts_table(book)
    accounts.select(list(reversed(accounts.column_names))).to_pandas().to_csv(
        tmp_path / "a.csv", index=False)
    assert book_document(read_bulk_book(tmp_path / "p.csv", tmp_path / "a.csv")).digest() \
        == digest

    def changed(**fields: Any) -> str:
        return book_document(replace(book, **fields)).digest()

    size = book.size.copy()
    size[7] = np.nextafter(size[7], np.inf)
    collateral = book.collateral.copy()
    collateral[3, 1] += 1e-9
    mode = book.mode.copy()
    mode[0] = (mode[0] + 1) % 3
    ids = list(book.account_ids)
    ids[5] = ids[5] + "x"
    margin = np.full(book.position_count, np.nan)
    margin[2] = 100.0
    entry = book.entry_price.copy()
    entry[0] = -0.0 if entry[0] == 0.0 else entry[0] * (1 + 2**-52)
    digests = {changed(size=size), changed(collateral=collateral), changed(mode=mode),
               changed(account_ids=tuple(ids)), changed(position_margin=margin),
               changed(entry_price=entry), changed(assets=tuple(reversed(book.assets)))}
    assert len(digests) == 7
    assert digest not in digests
