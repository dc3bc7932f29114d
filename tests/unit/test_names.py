"""Names from a book (account ids, assets, declared instruments, underlyings) are printable text
of bounded length: a name with an escape sequence, a line feed or a right-to-left override
would rewrite what a user reads in a terminal, a page or a log, so every reader refuses it
with the rest of the file; names in any script stay accepted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from margin_engine.core.errors import InputError
from margin_engine.core.names import MAX_NAME_LENGTH, name_problem
from margin_engine.io.bulk import read_bulk_book
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.profiles.ccxt_files import parse_venue_files, read_ccxt_account
from margin_engine.profiles.files import read_profile_file
from tests.conftest import account, market_doc, portfolio_doc

HOSTILE = {
    "escape sequence": ("evil\x1b[2J\x1b[31m", "U+001B at position 5"),
    "line feed": ("a1\nfake-row", "U+000A at position 3"),
    "carriage return": ("a1\rb", "U+000D at position 3"),
    "right-to-left override": ("a\u202eb", "U+202E at position 2"),
    "zero-width space": ("a\u200bb", "U+200B at position 2"),
    "line separator": ("a\u2028b", "U+2028 at position 2"),
    "NUL": ("a\x00", "U+0000 at position 2"),
    "too long": ("x" * (MAX_NAME_LENGTH + 1), f"{MAX_NAME_LENGTH + 1:,} characters"),
}
FINE = ["a1", "Zürich 账户-7", "user@venue.com", "x" * MAX_NAME_LENGTH, "ação", "Ελλάδα:1"]
POSITION = [("BTC-PERP", 1.0, 50000.0)]


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(InputError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message
    assert "\x1b" not in message
    assert "\u202e" not in message
    assert "printable text of at most 256 characters" in message
    return message


@pytest.mark.parametrize("text", FINE)
def test_printable_names_of_any_script_pass(text: str) -> None:
    assert name_problem(text) is None


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_json_account_id_is_refused_naming_the_character(kind: str) -> None:
    text, problem = HOSTILE[kind]
    msg = refused(parse_portfolio, portfolio_doc(account("ok", POSITION), account(text, POSITION)))
    assert "'accounts[1].id'" in msg
    assert problem in msg


@pytest.mark.parametrize("text", FINE)
def test_json_account_ids_in_any_script_are_kept(text: str) -> None:
    portfolio = parse_portfolio(portfolio_doc(account(text, POSITION)))
    assert [a.id for a in portfolio.accounts] == [text]


def test_json_asset_instrument_and_underlying_names_are_checked() -> None:
    bad_asset = account("a1", POSITION, collateral={"USDC\x1b[0m": 1})
    assert "U+001B" in refused(parse_portfolio, portfolio_doc(bad_asset))
    declared = {"MY\nPERP": {"kind": "perpetual", "underlying": "BTC"}}
    msg = refused(parse_portfolio, portfolio_doc(account("a1", POSITION), instruments=declared))
    assert "'instruments'" in msg
    assert "U+000A" in msg
    declared = {"MY-PERP": {"kind": "perpetual", "underlying": "BTC\u202e"}}
    msg = refused(parse_portfolio, portfolio_doc(account("a1", POSITION), instruments=declared))
    assert "'instruments.MY-PERP.underlying'" in msg
    assert "U+202E" in msg


def test_market_names_are_checked() -> None:
    doc = market_doc()
    doc["underlyings"]["BTC\x1b[1m"] = doc["underlyings"].pop("BTC")
    assert "'underlyings'" in refused(parse_market, doc)
    doc = market_doc()
    doc["assets"]["US\x07DC"] = {"price": 1}
    assert "'assets'" in refused(parse_market, doc)
    assert "'marks'" in refused(parse_market, market_doc(marks={"BTC\n-PERP": 50000}))


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_bulk_account_id_is_refused_with_its_row(tmp_path: Path, kind: str) -> None:
    text, problem = HOSTILE[kind]
    path = tmp_path / "positions.parquet"
    pq.write_table(pa.table({"account": ["a1", "a1", text], "instrument": ["BTC-PERP",
                             "ETH-PERP", "BTC-PERP"], "size": [1.0, 1.0, -1.0],
                             "entry_price": [50000.0, 2000.0, 50000.0]}), path)
    msg = refused(read_bulk_book, path)
    assert "'account (row 3)'" in msg
    assert problem in msg


def test_bulk_accounts_file_ids_and_assets_are_checked(tmp_path: Path) -> None:
    positions = tmp_path / "positions.csv"
    positions.write_text("account,instrument,size,entry_price\na1,BTC-PERP,1,50000\n")
    accounts = tmp_path / "accounts.parquet"
    pq.write_table(pa.table({"account": ["a1", "a\x1b[2Jb"], "mode": ["cross", "cross"],
                             "collateral_USDC": [1.0, 2.0]}), accounts)
    msg = refused(read_bulk_book, positions, accounts)
    assert "'account (row 2)'" in msg
    assert "U+001B at position 2" in msg
    pq.write_table(pa.table({"account": ["a1"], "mode": ["cross"],
                             "collateral_US\u200bDC": [1.0]}), accounts)
    assert "U+200B" in refused(read_bulk_book, positions, accounts)


def test_bulk_ids_of_any_script_and_dictionary_columns_are_kept(tmp_path: Path) -> None:
    ids = FINE + ["plain-ascii"]
    path = tmp_path / "positions.parquet"
    table = pa.table({"account": pa.array(ids).dictionary_encode(),
                      "instrument": ["BTC-PERP"] * len(ids), "size": [1.0] * len(ids),
                      "entry_price": [50000.0] * len(ids)})
    pq.write_table(table, path)
    assert list(read_bulk_book(path).account_ids) == ids


def test_ccxt_venue_name_and_currency_are_checked(tmp_path: Path) -> None:
    assert "'--venue'" in refused(parse_venue_files, "bin\x1b[0mance=p.json,b.json")
    positions = tmp_path / "positions.json"
    positions.write_text(json.dumps([{"symbol": "BTC/USDT:USDT", "side": "long",
                                      "contracts": 1, "contractSize": 1, "entryPrice": 60000}]))
    balance = tmp_path / "balance.json"
    balance.write_text(json.dumps({"total": {"USDT\u202e": 100}}))
    msg = refused(read_ccxt_account, positions, balance)
    assert "balance.json" in msg
    assert "U+202E" in msg


def test_cli_prints_no_raw_control_character_of_a_hostile_book(tmp_path: Path) -> None:
    path = tmp_path / "book.json"
    path.write_text(json.dumps(portfolio_doc(account("evil\x1b[2J\nfake-row", POSITION))))
    market = tmp_path / "market.json"
    market.write_text(json.dumps(market_doc()))
    command = Path(sys.executable).with_name("margin-engine")
    run = subprocess.run([str(command), "compute", str(path),
                          "--market", str(market)], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "\x1b" not in run.stdout + run.stderr
    assert "'accounts[0].id'" in run.stderr
    assert "U+001B" in run.stderr
    assert "Traceback" not in run.stderr


def test_venue_profile_file_name_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "venue.toml"
    path.write_text('profile = "binance-um"\nparameters_as_of = "2024-06-10"\n'
                    'name = "binance\\u001b[2J"\n')
    msg = refused(read_profile_file, path)
    assert "'name'" in msg
    assert "U+001B" in msg


def test_cascade_depth_symbol_is_checked() -> None:
    from typer.testing import CliRunner

    from margin_engine.cli.app import app

    out = CliRunner().invoke(app, ["simulate", "cascade", "--shock", "usdc-2023",
                                   "--population", "50", "--depth", "BTC\x1b[2J=1e6"])
    assert out.exit_code == 2
    assert "field '--depth'" in out.output
    assert "U+001B" in out.output
    assert "\x1b[2J" not in out.output
