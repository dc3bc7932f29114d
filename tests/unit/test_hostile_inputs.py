"""Hostile values found in real files are refused with one line naming where, what and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from margin_engine.core.errors import InputError
from margin_engine.io.bulk import read_bulk_book
from margin_engine.io.market_file import load_market, parse_market
from margin_engine.io.portfolio_file import load_portfolio, parse_portfolio
from tests.conftest import account, market_doc, portfolio_doc

POSITIONS = "account,instrument,size,entry_price\na1,BTC-PERP,1,50000\na2,ETH-PERP,-2,2000\n"


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InputError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def csv_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# 1. NaN / infinity in a collateral column of a bulk accounts file


@pytest.mark.parametrize("cell", ["nan", "NaN", "NAN", "inf", "-Infinity"])
def test_bulk_collateral_nan_or_infinity_is_refused(tmp_path: Path, cell: str) -> None:
    accounts = csv_file(tmp_path, "accounts.csv", "account,mode,collateral_USDC\n"
                        f"a1,portfolio,1000\na2,cross,{cell}\n")
    msg = refused(read_bulk_book, csv_file(tmp_path, "p.csv", POSITIONS), accounts)
    assert "account 'a2'" in msg
    assert "'collateral.USDC'" in msg
    assert any(f"got {shown}" in msg for shown in ("nan", "inf", "-inf", repr(cell)))


def test_bulk_collateral_nan_in_parquet_is_refused_and_empty_cell_is_zero(
        tmp_path: Path) -> None:
    path = tmp_path / "accounts.parquet"
    pq.write_table(pa.table({"account": ["a1", "a2"], "mode": ["portfolio", "cross"],
                             "collateral_USDC": [1000.0, float("nan")]}), path)
    msg = refused(read_bulk_book, csv_file(tmp_path, "p.csv", POSITIONS), path)
    assert "account 'a2'" in msg
    assert "'collateral.USDC'" in msg
    assert "got nan" in msg
    empty = csv_file(tmp_path, "empty.csv", "account,mode,collateral_USDC,collateral_BTC\n"
                     "a1,portfolio,1000,\na2,cross,,2\n")
    book = read_bulk_book(csv_file(tmp_path, "p.csv", POSITIONS), empty)
    assert book.collateral.tolist() == [[1000.0, 0.0], [0.0, 2.0]]


# 2. entry price 0 or negative in a bulk positions file


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_bulk_zero_entry_price_is_refused_like_json(tmp_path: Path, suffix: str) -> None:
    table = pa.table({"account": ["a1", "a1"], "instrument": ["BTC-27JUN25-60000-C", "BTC-PERP"],
                      "size": [1.0, 1.0], "entry_price": [0.0, 0.0]})
    path = tmp_path / f"p.{suffix}"
    if suffix == "parquet":
        pq.write_table(table, path)
    else:
        import pyarrow.csv as pa_csv

        pa_csv.write_csv(table, path)
    msg = refused(read_bulk_book, path)
    json_msg = refused(parse_portfolio, portfolio_doc(account("a1", [("BTC-PERP", 1, 0)])))
    expected = "an entry price > 0 for a spot, perpetual or future"
    assert expected in msg
    assert expected in json_msg
    assert "account 'a1'" in msg
    assert "'entry_price (row 2)'" in msg
    assert "got 0.0" in msg


def test_bulk_negative_entry_price_is_refused(tmp_path: Path) -> None:
    msg = refused(read_bulk_book, csv_file(tmp_path, "p.csv", "account,instrument,size,"
                                           "entry_price\na1,BTC-PERP,1,-5\n"))
    assert "'entry_price (row 1)'" in msg
    assert "got -5.0" in msg
    assert ">= 0" in msg


# 3. magnitudes beyond 1e15


@pytest.mark.parametrize(("field", "value"), [("size", "1e308"), ("size", -1e308),
                                              ("entry_price", "1e16"), ("collateral", "1e308")])
def test_json_portfolio_huge_numbers_are_refused(field: str, value: Any) -> None:
    doc = portfolio_doc(account("a1", [("BTC-PERP", 1, 50000)]))
    if field == "collateral":
        doc["accounts"][0]["collateral"] = {"USDC": value}
        field = "collateral.USDC"
    else:
        doc["accounts"][0]["positions"][0][field] = value
    msg = refused(parse_portfolio, doc)
    assert "account 'a1'" in msg
    assert f"'{field}'" in msg
    assert f"got {value!r}" in msg if isinstance(value, str) else "got -1e+308" in msg
    assert "magnitude <= 1e+15" in msg


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("size", float("nan"), "a finite number"), ("size", float("inf"), "a finite number"),
    ("size", -1e16, "magnitude <= 1e+15"), ("size", True, "a finite number"),
    ("entry_price", float("nan"), "a finite number"), ("entry_price", -0.5, ">= 0"),
    ("entry_price", 1e15 * (1 + 2**-52), "magnitude <= 1e+15"),
    ("entry_price", float("-inf"), "a finite number"), ("entry_price", 0.0, "entry price > 0"),
    ("entry_price", -0.0, "entry price > 0")])
def test_parsed_floats_out_of_bounds_are_refused(field: str, value: Any, expected: str) -> None:
    """The numbers of a document parsed by ``json.loads`` (the monitor's stored setup, the
    service's bodies) are Python floats, taken as they are when within the bounds: NaN,
    infinities, a float an ulp over the bound, a bool, a negative or zero entry price of a perp
    are still refused, named."""
    doc = portfolio_doc(account("a1", [("BTC-PERP", 1.0, 50000.0)]))
    doc["accounts"][0]["positions"][0][field] = value
    msg = refused(parse_portfolio, doc)
    assert f"'{field}'" in msg
    assert expected in msg
    assert "account 'a1'" in msg


@pytest.mark.parametrize(("size", "entry"), [(1e15, 1e15), (-1e15, 5e-324), (-0.0, 1.0)])
def test_parsed_floats_on_the_bounds_are_taken_as_they_are(size: float, entry: float) -> None:
    doc = portfolio_doc(account("a1", [("BTC-PERP", size, entry)]))
    (position,) = parse_portfolio(doc).accounts[0].positions
    assert (position.size, position.entry_price) == (size, entry)
    assert str(position.size) == str(size)  # -0.0 kept


def test_json_portfolio_huge_numbers_in_a_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"schema": "margin-engine/portfolio/v1", "accounts": [{"id": "a", '
                    '"mode": "cross", "positions": [{"instrument": "BTC-PERP", "size": 1e308, '
                    '"entry_price": 1}]}]}')
    msg = refused(load_portfolio, path)
    assert "'size'" in msg
    assert "1E+308" in msg
    assert "magnitude" in msg


def test_json_integer_beyond_the_digit_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"schema": "margin-engine/portfolio/v1", "accounts": [{"id": "a", '
                    '"mode": "cross", "collateral": {"USDC": ' + "9" * 5000 + "}}]}")
    msg = refused(load_portfolio, path)
    assert str(path) in msg
    assert "digits" in msg


@pytest.mark.parametrize("where", ["index", "asset", "mark", "declared_strike",
                                   "shorthand_strike"])
def test_market_and_instrument_huge_numbers_are_refused(where: str) -> None:
    market = market_doc()
    doc = portfolio_doc(account("a1", [("BTC-PERP", 1, 50000)]))
    if where == "index":
        market["underlyings"]["BTC"]["index"] = "1e308"
        field = "underlyings.BTC.index"
    elif where == "asset":
        market["assets"]["USDC"]["price"] = "1e20"
        field = "assets.USDC.price"
    elif where == "mark":
        market["marks"] = {"BTC-PERP": "1e300"}
        field = "marks.BTC-PERP"
    elif where == "declared_strike":
        doc = portfolio_doc(account("a1", []), instruments={"X": {
            "kind": "option", "underlying": "BTC", "expiry": "2025-06-27T08:00:00Z",
            "strike": "1e300", "right": "call"}})
        field = "instruments.X.strike"
    else:
        doc = portfolio_doc(account("a1", [("BTC-27JUN25-" + "9" * 400 + "-C", 1, 1)]))
        field = "instrument"
    if where in ("declared_strike", "shorthand_strike"):
        msg = refused(parse_portfolio, doc)
    else:
        msg = refused(parse_market, market)
    assert f"'{field}'" in msg
    assert "1e+15" in msg


def test_bulk_huge_numbers_are_refused(tmp_path: Path) -> None:
    msg = refused(read_bulk_book, csv_file(tmp_path, "p.csv", "account,instrument,size,"
                                           "entry_price\na1,BTC-PERP,1,50000\n"
                                           "a2,BTC-PERP,1e308,50000\n"))
    assert "account 'a2'" in msg
    assert "'size (row 2)'" in msg
    assert "got 1e+308" in msg
    assert "magnitude <= 1e+15" in msg
    msg = refused(read_bulk_book, csv_file(tmp_path, "q.csv", "account,instrument,size,"
                                           "entry_price\na1,BTC-PERP,1,1e300\n"))
    assert "'entry_price (row 1)'" in msg
    assert "got 1e+300" in msg
    accounts = csv_file(tmp_path, "accounts.csv", "account,mode,collateral_USDC\n"
                        "a1,portfolio,1e308\na2,cross,0\n")
    msg = refused(read_bulk_book, csv_file(tmp_path, "p.csv", POSITIONS), accounts)
    assert "account 'a1'" in msg
    assert "'collateral.USDC'" in msg
    assert "got 1e+308" in msg


# 4. strings given as arrays or objects


@pytest.mark.parametrize("bad", [["portfolio"], {"mode": "portfolio"}])
def test_mode_given_as_array_or_object_is_refused(bad: Any) -> None:
    doc = portfolio_doc(account("a1", []))
    doc["accounts"][0]["mode"] = bad
    msg = refused(parse_portfolio, doc)
    assert "account 'a1'" in msg
    assert "'mode'" in msg
    assert str(bad) in msg
    assert "['cross', 'isolated', 'portfolio']" in msg


@pytest.mark.parametrize("bad", [["x"], {"x": 1}, 5])
@pytest.mark.parametrize("where", ["id", "instrument", "kind", "settlement", "right",
                                   "underlying", "expiry", "vol_type", "market_timestamp"])
def test_other_string_fields_given_as_non_strings_are_refused(bad: Any, where: str) -> None:
    doc = portfolio_doc(account("a1", [("BTC-PERP", 1, 50000)]))
    option = {"kind": "option", "underlying": "BTC", "settlement": "inverse",
              "expiry": "2025-06-27T08:00:00Z", "strike": 60000, "right": "call"}
    market = market_doc()
    if where == "id":
        doc["accounts"][0]["id"] = bad
    elif where == "instrument":
        doc["accounts"][0]["positions"][0]["instrument"] = bad
    elif where in option:
        option[where] = bad
        doc["instruments"] = {"X": option}
    elif where == "vol_type":
        market["underlyings"]["BTC"]["vol"]["type"] = bad
    else:
        market["timestamp"] = bad
    call, arg = (parse_market, market) if where in ("vol_type", "market_timestamp") \
        else (parse_portfolio, doc)
    msg = refused(call, arg)
    assert "got " in msg
    assert str(bad) in msg


def test_bulk_column_of_lists_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"account": [["a1"]], "instrument": ["BTC-PERP"], "size": [1.0],
                             "entry_price": [1.0]}), path)
    msg = refused(read_bulk_book, path)
    assert "'account'" in msg
    assert "text" in msg
    accounts = tmp_path / "accounts.parquet"
    pq.write_table(pa.table({"account": ["a1", "a2"], "mode": [["portfolio"], ["cross"]]}),
                   accounts)
    msg = refused(read_bulk_book, csv_file(tmp_path, "p.csv", POSITIONS), accounts)
    assert "'mode'" in msg


# 5. deep nesting


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_refused(tmp_path: Path, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    portfolio = tmp_path / "p.json"
    portfolio.write_text('{"schema": "margin-engine/portfolio/v1", "accounts": [{"id": "a", '
                         '"mode": "cross", "positions": [{"instrument": "BTC-PERP", "size": '
                         f'{nested}, "entry_price": 1}}]}}]}}')
    msg = refused(load_portfolio, portfolio)
    assert str(portfolio) in msg
    assert "nested" in msg
    market = tmp_path / "m.json"
    market.write_text(json.dumps(market_doc())[:-1] + f', "marks": {nested}}}')
    msg = refused(load_market, market)
    assert str(market) in msg
    assert "nested" in msg


def test_moderately_nested_value_is_refused_by_its_field() -> None:
    doc = portfolio_doc(account("a1", [("BTC-PERP", 1, 50000)]))
    value: Any = []
    for _ in range(200):
        value = [value]
    doc["accounts"][0]["positions"][0]["size"] = value
    msg = refused(parse_portfolio, doc)
    assert "'size'" in msg
    assert "got [[[[" in msg


# 6. only plain ASCII numbers


@pytest.mark.parametrize("text", ["١٢", "１２", "1_000", "0x10", "1,5", "Infinity", "nan"])
def test_non_ascii_digits_and_separators_in_json_strings_are_refused(text: str) -> None:
    doc = portfolio_doc(account("a1", [("BTC-PERP", 1, 50000)]))
    doc["accounts"][0]["positions"][0]["size"] = text
    msg = refused(parse_portfolio, doc)
    assert "'size'" in msg
    assert repr(text) in msg
    market = market_doc()
    market["underlyings"]["BTC"]["index"] = text
    msg = refused(parse_market, market)
    assert "'underlyings.BTC.index'" in msg
    assert repr(text) in msg


@pytest.mark.parametrize("text", ["+2", "-0.5", ".5", "5.", "1e3", "2.5E-3", " 7 "])
def test_plain_numbers_in_strings_are_accepted(text: str) -> None:
    doc = portfolio_doc(account("a1", [("BTC-PERP", text, 50000)]))
    assert parse_portfolio(doc).accounts[0].positions[0].size == float(text)


@pytest.mark.parametrize("cell", ["١٢", "１２", "1_000"])
def test_non_ascii_digits_and_separators_in_csv_cells_are_refused(
        tmp_path: Path, cell: str) -> None:
    msg = refused(read_bulk_book, csv_file(tmp_path, "p.csv", "account,instrument,size,"
                                           f"entry_price\na1,BTC-PERP,1,50000\na2,BTC-PERP,"
                                           f"{cell},50000\n"))
    assert "account 'a2'" in msg
    assert "'size (row 2)'" in msg
    assert repr(cell) in msg
    accounts = csv_file(tmp_path, "accounts.csv", "account,mode,collateral_USDC\n"
                        f"a1,portfolio,\na2,cross,{cell}\n")
    msg = refused(read_bulk_book, csv_file(tmp_path, "p.csv", POSITIONS), accounts)
    assert "account 'a2'" in msg
    assert "'collateral.USDC'" in msg
    assert repr(cell) in msg


@pytest.mark.parametrize("name", ["BTC-٢٧JUN25", "BTC-27JUN25-٧٠٠٠٠-C", "BTC-２７JUN25"])
def test_non_ascii_digits_in_instrument_names_are_refused(name: str) -> None:
    msg = refused(parse_portfolio, portfolio_doc(account("a1", [(name, 1, 50000)])))
    assert "'instrument'" in msg
    assert repr(name) in msg


def test_non_ascii_digits_in_market_expiry_codes_are_refused() -> None:
    market = market_doc()
    market["underlyings"]["BTC"]["vol"] = {"type": "atm_by_expiry", "points": {"٢٧JUN25": 0.5}}
    msg = refused(parse_market, market)
    assert "'underlyings.BTC.vol.points'" in msg
    assert "'٢٧JUN25'" in msg
    msg = refused(parse_market, market_doc(settlements={"BTC-٣٠MAY25": 60000}))
    assert "'BTC-٣٠MAY25'" in msg


@pytest.mark.parametrize("text", ["٢٠٢٥-06-01T00:00:00Z", "2025-06-0１T00:00:00Z"])
def test_non_ascii_digits_in_timestamps_are_refused(text: str) -> None:
    msg = refused(parse_market, market_doc(timestamp=text))
    assert "'timestamp'" in msg
    assert repr(text) in msg


# 7. empty portfolios


def test_json_portfolio_without_accounts_is_refused() -> None:
    msg = refused(parse_portfolio, portfolio_doc())
    assert "'accounts'" in msg
    assert "a portfolio with at least one account" in msg


def test_bulk_portfolio_without_rows_is_refused(tmp_path: Path) -> None:
    header = csv_file(tmp_path, "p.csv", "account,instrument,size,entry_price\n")
    msg = refused(read_bulk_book, header)
    assert str(header) in msg
    assert "a portfolio with at least one account" in msg
    accounts = csv_file(tmp_path, "accounts.csv", "account,mode,collateral_USDC\n")
    msg = refused(read_bulk_book, header, accounts)
    assert str(accounts) in msg
    assert "a portfolio with at least one account" in msg
    one = csv_file(tmp_path, "one.csv", "account,mode,collateral_USDC\na1,cross,5\n")
    assert read_bulk_book(header, one).account_ids == ("a1",)  # collateral only: fine


# 8. oversized JSON portfolios


def test_json_portfolio_above_the_size_limit_is_refused(tmp_path: Path) -> None:
    doc = portfolio_doc(*(account(f"a{i}", [("BTC-PERP", 1, 50000)]) for i in range(50)))
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    size = path.stat().st_size
    assert len(load_portfolio(path, max_bytes=size).accounts) == 50
    msg = refused(load_portfolio, path, max_bytes=size - 1)
    assert str(path) in msg
    assert f"{size:,} bytes" in msg
    assert "CSV/Parquet" in msg
    assert "--accounts" in msg


def test_market_correlations_that_are_no_correlation_matrix_are_refused() -> None:
    """BTC-ETH 0.9, BTC-SOL 0.9, ETH-SOL -0.9: each pair within [-1, 1], the matrix not
    positive semi-definite (smallest eigenvalue -0.8), so the portfolio model's
    sqrt(sum rho_uv L_u L_v) aggregation is the root of a negative number for some books.
    Before: taken."""
    market = market_doc()
    market["underlyings"]["SOL"] = {"index": 150, "vol": {"type": "flat", "sigma": 0.8}}
    market["correlation"] = {"BTC": {"ETH": 0.9, "SOL": 0.9}, "ETH": {"SOL": -0.9}}
    msg = refused(parse_market, market)
    assert "'correlation'" in msg
    assert "positive semi-definite" in msg
    assert "lowest eigenvalue -0.8" in msg
    market["correlation"]["ETH"]["SOL"] = 0.7
    assert parse_market(market).correlation_of("ETH", "SOL") == 0.7


def test_a_key_given_twice_in_a_json_object_is_refused_everywhere(tmp_path: Path) -> None:
    """JSON keeps the last of a repeated key without a word: a position's "size": "1" then
    "size": "-100" was a size of -100, a collateral "USDC" given twice its last amount.
    Before: taken in portfolio, market, risk configuration, ccxt and batch instrument files
    and in NATS ticks."""
    from margin_engine.batch.book import declared_instruments
    from margin_engine.core.errors import ConfigError
    from margin_engine.feeds.nats import tick_from
    from margin_engine.margin.config import RiskConfig
    from margin_engine.profiles.ccxt_files import read_ccxt_account

    book = tmp_path / "book.json"
    book.write_text('{"schema": "margin-engine/portfolio/v1", "accounts": [{"id": "a", '
                    '"mode": "cross", "positions": [{"instrument": "BTC-PERP", "size": "1", '
                    '"size": "-100", "entry_price": "60000"}]}]}')
    msg = refused(load_portfolio, book)
    assert str(book) in msg
    assert "field 'size': got 'given twice', expected each key once in an object" in msg
    market = tmp_path / "market.json"
    market.write_text(json.dumps(market_doc())[:-1] + ', "timestamp": "2025-06-02T00:00:00Z"}')
    assert "field 'timestamp': got 'given twice'" in refused(load_market, market)
    config = tmp_path / "risk.json"
    config.write_text('{"portfolio": {"maintenance_fraction": 0.8, "maintenance_fraction": 5}}')
    with pytest.raises(ConfigError, match="given twice") as caught:
        RiskConfig.load(config)
    assert caught.value.field == "maintenance_fraction"
    positions, balance = tmp_path / "p.json", tmp_path / "b.json"
    positions.write_text('[{"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 1, '
                         '"contracts": 50, "contractSize": 1, "entryPrice": 60000}]')
    balance.write_text('{"total": {"USDT": 100}}')
    assert str(positions) in refused(read_ccxt_account, positions, balance)
    (tmp_path / "instruments.json").write_text('{"X": {"kind": "perpetual", "underlying": '
                                               '"BTC", "kind": "spot"}}')
    assert "field 'kind'" in refused(declared_instruments, tmp_path)
    reason = tick_from(b'{"seq": 3, "time_ns": 5, "symbol": "BTC", "price": 65000, '
                       b'"price": 1}')
    assert isinstance(reason, str)
    assert reason.startswith("unreadable tick message")
    assert "'price'" in reason


def test_a_column_given_twice_in_a_bulk_file_is_refused(tmp_path: Path) -> None:
    """Before: a traceback (KeyError: 'Field "size" exists 2 times in schema')."""
    positions = csv_file(tmp_path, "p.csv", "account,instrument,size,entry_price,size\n"
                         "a1,BTC-PERP,1,50000,-100\n")
    msg = refused(read_bulk_book, positions)
    assert "field 'size': got '2 columns of that name', expected each column once" in msg
    accounts = tmp_path / "accounts.parquet"
    pq.write_table(pa.Table.from_arrays(
        [pa.array(["a1"]), pa.array(["cross"]), pa.array([100.0]), pa.array([5.0])],
        names=["account", "mode", "collateral_USDC", "collateral_USDC"]), accounts)
    msg = refused(read_bulk_book, csv_file(tmp_path, "ok.csv", POSITIONS), accounts)
    assert str(accounts) in msg
    assert "field 'collateral_USDC'" in msg
