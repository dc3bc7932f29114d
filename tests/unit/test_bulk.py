"""Bulk CSV/Parquet books give the same margins as the JSON book; bad rows are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from margin_engine.book.bound import bind_market
from margin_engine.core.errors import InputError
from margin_engine.io.bulk import read_bulk_book
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import get_model
from tests.conftest import account, bind, market_doc, portfolio_doc

POSITIONS = [("a2", "ETH-PERP", -3.0, 2100.0), ("a1", "BTC-PERP", 1.0, 49000.0),
             ("a1", "BTC-27JUN25-60000-C", -2.0, 800.0)]


def write(tmp_path: Path, suffix: str, rows: list[tuple]) -> Path:
    table = pa.table({"account": [r[0] for r in rows], "instrument": [r[1] for r in rows],
                      "size": [r[2] for r in rows], "entry_price": [r[3] for r in rows]})
    path = tmp_path / f"positions.{suffix}"
    if suffix == "parquet":
        pq.write_table(table, path)
    else:
        import pyarrow.csv as pc

        pc.write_csv(table, path)
    return path


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_bulk_equals_json(tmp_path: Path, suffix: str) -> None:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("account,mode,collateral_USDC,collateral_BTC\na1,portfolio,1000,0.5\n"
                        "a2,cross,2000,0\n")
    book = read_bulk_book(write(tmp_path, suffix, POSITIONS), accounts)
    bulk = bind_market(book, parse_market(market_doc()))
    json_bound = bind(portfolio_doc(
        account("a1", [("BTC-PERP", 1, 49000), ("BTC-27JUN25-60000-C", -2, 800)],
                {"USDC": 1000, "BTC": 0.5}),
        account("a2", [("ETH-PERP", -3, 2100)], {"USDC": 2000}, mode="cross")))
    assert bulk.book.account_ids == ("a1", "a2")
    np.testing.assert_allclose(bulk.equity(), json_bound.equity(), rtol=1e-12)
    for model in ("isolated", "cross", "portfolio"):
        np.testing.assert_allclose(get_model(model).compute(bulk, RiskConfig()).initial_margin,
                                   get_model(model).compute(json_bound,
                                                            RiskConfig()).initial_margin,
                                   rtol=1e-12)


def test_bulk_bad_rows_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"size \(row 2\)"):
        read_bulk_book(write(tmp_path, "parquet", [POSITIONS[0], ("a1", "BTC-PERP", np.nan,
                                                                  1.0)]))
    with pytest.raises(InputError, match="once per account"):
        read_bulk_book(write(tmp_path, "csv", [POSITIONS[1], POSITIONS[1]]))
    with pytest.raises(InputError, match=r"instrument \(row 2\)"):
        read_bulk_book(write(tmp_path, "csv", [POSITIONS[1], ("a1", "BTC-XYZ", 1.0, 1.0)]))


@pytest.mark.parametrize("where", ["positions.csv", "positions.parquet", "accounts.csv"])
def test_true_and_false_are_no_numbers(tmp_path: Path, where: str) -> None:
    """A CSV reader reads true/false cells as a boolean column, which Arrow casts to 1 and 0.
    Before: a size of true was one contract, a collateral amount of false nothing."""
    rows = [("a1", "BTC-PERP", 1.0, 49000.0)]
    if where == "accounts.csv":
        positions = write(tmp_path, "csv", rows)
        accounts = tmp_path / "accounts.csv"
        accounts.write_text("account,mode,collateral_USDC\na1,cross,true\n")
        field = "collateral.USDC"  # (as the JSON book names it)
    else:
        table = pa.table({"account": ["a1", "a1"], "instrument": ["BTC-PERP", "ETH-PERP"],
                          "size": [True, False], "entry_price": [49000.0, 2100.0]})
        positions = tmp_path / where
        if where.endswith(".parquet"):
            pq.write_table(table, positions)
        else:
            positions.write_text("account,instrument,size,entry_price\n"
                                 "a1,BTC-PERP,true,49000\na1,ETH-PERP,false,2100\n")
        accounts, field = None, "size (row 1)"
    with pytest.raises(InputError, match="not true or false") as raised:
        read_bulk_book(positions, accounts)
    assert raised.value.field == field
    assert raised.value.value is True


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("column", ["size", "entry_price"])
def test_an_empty_number_cell_is_called_empty(tmp_path: Path, suffix: str, column: str) -> None:
    """An empty cell of size or entry_price (a CSV ",," or a Parquet null). Before: it was
    read as NaN and refused as 'got nan', a value the file does not hold."""
    rows: list[tuple] = [POSITIONS[1], ("a1", "ETH-PERP", 2.0, 2100.0)]
    rows[1] = (*rows[1][:2], None, 2100.0) if column == "size" else (*rows[1][:3], None)
    with pytest.raises(InputError, match="this cell is empty") as raised:
        read_bulk_book(write(tmp_path, suffix, rows))
    assert raised.value.field == f"{column} (row 2)"
    assert raised.value.account == "a1"
    assert raised.value.value is None
