"""ccxt unified structures (fetch_positions, fetch_balance, fetch_leverage_tiers) read offline
from hand-written files in ccxt's documented shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from margin_engine.book.columnar import book_from_portfolio
from margin_engine.core.errors import InputError
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.profiles.binance_um import BTCUSDT
from margin_engine.profiles.ccxt_files import read_ccxt_account, read_ccxt_tiers


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


POSITIONS = [
    {"info": {}, "id": None, "symbol": "BTC/USDT:USDT", "timestamp": 1718000000000,
     "datetime": "2024-06-10T06:13:20.000Z", "isolated": False, "hedged": False,
     "side": "long", "contracts": 0.5, "contractSize": 1, "entryPrice": 67000,
     "markPrice": 66500, "notional": 33250, "leverage": 20, "collateral": 1662.5,
     "initialMargin": 1662.5, "maintenanceMargin": 133, "unrealizedPnl": -250,
     "liquidationPrice": None, "marginMode": "cross", "percentage": -15.0},
    {"info": {}, "symbol": "ETH/USD:ETH-240628", "timestamp": 1718000100000,
     "side": "short", "contracts": 300, "contractSize": 10, "entryPrice": 3600,
     "markPrice": 3650, "marginMode": "cross"},
    {"info": {}, "symbol": "BTC/USD:BTC-240628-70000-C", "timestamp": 1718000000000,
     "side": "short", "contracts": 2, "contractSize": 1, "entryPrice": 0.02,
     "markPrice": 0.019, "marginMode": "cross"},
    {"info": {}, "symbol": "SOL/USDT:USDT", "side": "long", "contracts": 0,
     "contractSize": 1, "entryPrice": 150, "marginMode": "cross"},
]
BALANCE = {"info": {}, "timestamp": 1718000200000, "datetime": "2024-06-10T06:16:40.000Z",
           "USDT": {"free": 9000, "used": 1000, "total": 10000},
           "BTC": {"free": 0.1, "used": 0, "total": 0.1},
           "free": {"USDT": 9000, "BTC": 0.1}, "used": {"USDT": 1000, "BTC": 0},
           "total": {"USDT": 10000, "BTC": 0.1, "ETH": 0}}


def test_positions_and_balance_become_a_portfolio_with_the_snapshot_date(tmp_path: Path
                                                                          ) -> None:
    account = read_ccxt_account(_write(tmp_path / "positions.json", POSITIONS),
                                _write(tmp_path / "balance.json", BALANCE), account_id="acct")
    doc = account.document
    assert account.snapshot == "2024-06-10T06:16:40Z"  # the newest timestamp of the files
    positions = doc["accounts"][0]["positions"]
    assert [p["instrument"] for p in positions] == [
        "BTC-USDT-USDT-PERP", "ETH-USD-ETH-28JUN24", "BTC-USD-BTC-28JUN24-70000-C"]
    assert [p["size"] for p in positions] == [0.5, -300, -2]  # the flat SOL row is skipped
    assert doc["accounts"][0]["collateral"] == {"USDT": 10000.0, "BTC": 0.1}
    assert doc["accounts"][0]["mode"] == "cross"
    inverse_future = doc["instruments"]["ETH-USD-ETH-28JUN24"]
    assert inverse_future == {"underlying": "ETH", "settlement": "inverse",
                              "contract_size": 10.0, "expiry": "2024-06-28T08:00:00Z",
                              "kind": "future"}
    assert account.marks == {"BTC-USDT-USDT-PERP": 66500.0, "ETH-USD-ETH-28JUN24": 3650.0}
    book = book_from_portfolio(parse_portfolio(doc))  # the engine reads it as it is
    assert book.position_count == 3


def test_isolated_positions_keep_their_collateral_as_margin(tmp_path: Path) -> None:
    iso = [{**POSITIONS[0], "marginMode": "isolated", "collateral": 1662.5}]
    account = read_ccxt_account(_write(tmp_path / "p.json", iso),
                                _write(tmp_path / "b.json", BALANCE))
    assert account.document["accounts"][0]["mode"] == "isolated"
    assert account.document["accounts"][0]["positions"][0]["margin"] == 1662.5


def test_bad_symbol_and_side_are_refused_naming_file_field_and_value(tmp_path: Path) -> None:
    balance = _write(tmp_path / "b.json", BALANCE)
    bad = _write(tmp_path / "p.json", [{**POSITIONS[0], "symbol": "BTCUSDT"}])
    with pytest.raises(InputError, match=r"p\.json.*'\[0\]\.symbol'.*'BTCUSDT'.*unified"):
        read_ccxt_account(bad, balance)
    bad = _write(tmp_path / "p.json", [{**POSITIONS[0], "side": "buy"}])
    with pytest.raises(InputError, match=r"'\[0\]\.side'.*'buy'.*'long' or 'short'"):
        read_ccxt_account(bad, balance)
    with pytest.raises(InputError, match="fetch_balance"):
        read_ccxt_account(_write(tmp_path / "p.json", POSITIONS),
                          _write(tmp_path / "b.json", {"USDT": 1}))


def _binance_tiers() -> dict[str, Any]:
    # Binance BTCUSDT brackets as ccxt returns them (info carries Binance's cum)
    rows = [(0, 50_000, 0.004, 125, 0), (50_000, 250_000, 0.005, 100, 50),
            (250_000, 1_000_000, 0.01, 50, 1_300), (1_000_000, 5_000_000, 0.025, 20, 16_300)]
    return {"BTC/USDT:USDT": [
        {"tier": i + 1, "symbol": "BTC/USDT:USDT", "currency": "USDT", "minNotional": lo,
         "maxNotional": hi, "maintenanceMarginRate": mmr, "maxLeverage": lev,
         "info": {"bracket": str(i + 1), "cum": str(cum)}}
        for i, (lo, hi, mmr, lev, cum) in enumerate(rows)]}


def test_leverage_tiers_give_brackets_with_checked_maintenance_amounts(tmp_path: Path) -> None:
    tables = read_ccxt_tiers(_write(tmp_path / "tiers.json", _binance_tiers()))
    table = tables["BTC"]
    assert [b.maintenance_amount for b in table.brackets] == [0.0, 50.0, 1_300.0, 16_300.0]
    # 2,000,000 USD: 2.5 % x 2,000,000 - 16,300 = 33,700, as in the profile's own table
    assert float(table.maintenance(2_000_000.0)) == pytest.approx(33_700.0)
    assert float(BTCUSDT.maintenance(2_000_000.0)) == pytest.approx(33_700.0)


def test_leverage_tiers_with_a_wrong_maintenance_amount_are_refused(tmp_path: Path) -> None:
    tiers = _binance_tiers()
    tiers["BTC/USDT:USDT"][2]["info"]["cum"] = "1250"  # 250,000 x (1 % - 0.5 %) + 50 = 1,300
    with pytest.raises(InputError, match=r"BTC/USDT:USDT\[2\]\.cum'.*1250.*1,300"):
        read_ccxt_tiers(_write(tmp_path / "tiers.json", tiers))
    tiers = _binance_tiers()
    tiers["BTC/USDT:USDT"][1]["maintenanceMarginRate"] = 0.5  # a percent written as 0.5
    for tier in tiers["BTC/USDT:USDT"]:
        tier["info"].pop("cum", None)
    # at 100x the bracket's IM rate is 1 %: an MM rate of 50 % would exceed it (before: taken)
    with pytest.raises(InputError, match=r"\[1\]\.maintenanceMarginRate'.*0\.5.*= 0\.01"):
        read_ccxt_tiers(_write(tmp_path / "tiers.json", tiers))
    for tier in tiers["BTC/USDT:USDT"][1:]:
        tier["maxLeverage"] = 2  # a rate of 50 % is allowed where IM is 50 % ...
    tiers["BTC/USDT:USDT"][2]["maintenanceMarginRate"] = 0.5
    tiers["BTC/USDT:USDT"][3]["maintenanceMarginRate"] = 0.5
    tables = read_ccxt_tiers(_write(tmp_path / "tiers.json", tiers))
    assert tables["BTC"].brackets[1].maintenance_rate == 0.5
    tiers["BTC/USDT:USDT"][1]["maintenanceMarginRate"] = 1.5  # ... 150 % is not
    with pytest.raises(InputError, match="maintenanceMarginRate"):
        read_ccxt_tiers(_write(tmp_path / "tiers.json", tiers))


def _cli(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "margin_engine.cli.app", *args],
                          capture_output=True, text=True, check=False)


def test_portfolio_from_ccxt_merges_venues_and_the_book_margins_under_a_profile(
        tmp_path: Path) -> None:
    """Two venues' saved files -> one portfolio file (an account per venue, snapshot and marks
    recorded), margined offline under binance-um with the venue's tiers from a profile file."""
    deribit_p = _write(tmp_path / "deribit_positions.json", POSITIONS[1:3])
    deribit_b = _write(tmp_path / "deribit_balance.json",
                       {"timestamp": 1718000300000, "total": {"BTC": 1.0, "ETH": 5.0}})
    binance_p = _write(tmp_path / "binance_positions.json", [POSITIONS[0]])
    binance_b = _write(tmp_path / "binance_balance.json", BALANCE)
    out = tmp_path / "book.json"
    done = _cli("portfolio", "from-ccxt", "--venue", f"deribit={deribit_p},{deribit_b}",
                "--venue", f"binance={binance_p},{binance_b}", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "binance: 1 positions, 2 balances, cross, snapshot 2024-06-10T06:16:40Z" in done.stderr
    doc = json.loads(out.read_text())
    assert [a["id"] for a in doc["accounts"]] == ["deribit", "binance"]
    assert doc["source"]["accounts"]["deribit"]["snapshot"] == "2024-06-10T06:18:20Z"
    assert doc["source"]["accounts"]["binance"]["marks"] == {"BTC-USDT-USDT-PERP": 66500.0}
    assert book_from_portfolio(parse_portfolio(doc)).position_count == 3

    tiers = tmp_path / "tiers.json"
    _write(tiers, _binance_tiers())
    profile = tmp_path / "binance-2024.toml"
    profile.write_text('profile = "binance-um"\nparameters_as_of = "2024-06-10"\n'
                       '[leverage_tiers]\nfile = "tiers.json"\n')
    market = _write(tmp_path / "market.json", {
        "schema": "margin-engine/market/v1", "timestamp": "2024-06-10T06:20:00Z",
        "underlyings": {"BTC": {"index": 66500, "vol": {"type": "flat", "sigma": 0.5}},
                        "ETH": {"index": 3650, "vol": {"type": "flat", "sigma": 0.6}}},
        "assets": {"USDT": {"price": 1}, "BTC": {"price": 66500}, "ETH": {"price": 3650}}})
    margined = _cli("compute", str(out), "--market", str(market), "--profile", str(profile),
                    "--json")
    assert margined.returncode == 0, margined.stderr
    entries = {a["id"]: a for a in json.loads(margined.stdout)["accounts"]}
    # Binance lists no inverse futures or options in USD-M: the Deribit book is n/a there
    assert not entries["deribit"]["supported"]
    # 0.5 BTC at 66,500 = 33,250 USD in the first tier: IM 33,250 / 125, MM 0.4 %
    assert entries["binance"]["initial_margin"] == pytest.approx(33_250 / 125, rel=1e-12)
    assert entries["binance"]["maintenance_margin"] == pytest.approx(133.0, rel=1e-12)


def test_portfolio_from_ccxt_refuses_a_malformed_venue_option(tmp_path: Path) -> None:
    done = _cli("portfolio", "from-ccxt", "--venue", "deribit=only-one.json")
    assert done.returncode == 2
    assert "NAME=POSITIONS.json,BALANCE.json" in done.stderr
    assert "Traceback" not in done.stderr
