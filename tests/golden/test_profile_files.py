"""Profile files (configs/profiles/*.toml) and `compute --profile`: the shipped files are the
built-in parameters, an edited number moves the margin by the arithmetic, bad files are refused
naming the file, the key and the value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from margin_engine.book.bound import BoundBook, bind_market
from margin_engine.book.columnar import book_from_portfolio
from margin_engine.core.errors import InputError
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.profiles.base import ProfileBook, today
from margin_engine.profiles.files import read_profile_file
from margin_engine.profiles.registry import PROFILE_NAMES, get_profile, parse_profiles
from margin_engine.profiles.run import compare_profiles, run_profile

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "profiles"
STABLES = ("USDC", "USDT")
MARKET = {"schema": "margin-engine/market/v1", "timestamp": "2025-06-01T00:00:00Z",
          "underlyings": {"BTC": {"index": 65000, "vol": {"type": "flat", "sigma": 0.5}},
                          "ETH": {"index": 2500, "vol": {"type": "flat", "sigma": 0.7}}},
          "assets": {"USDC": {"price": 1}, "BTC": {"price": 65000}, "ETH": {"price": 2500}}}
ACCOUNTS: list[dict[str, Any]] = [
    {"id": "btc-perp", "mode": "cross", "collateral": {"USDC": 20000},
     "positions": [{"instrument": "BTC-PERP", "size": 2, "entry_price": 64000}]},
    {"id": "eth-short-call", "mode": "portfolio", "collateral": {"USDC": 30000, "ETH": 2},
     "positions": [{"instrument": "ETH-27JUN25-3000-C", "size": -10, "entry_price": 40}]},
    {"id": "mixed", "mode": "cross", "collateral": {"USDC": 50000, "BTC": 0.5},
     "positions": [{"instrument": "BTC-PERP", "size": -1, "entry_price": 66000},
                   {"instrument": "ETH-PERP", "size": 8, "entry_price": 2400},
                   {"instrument": "BTC-26SEP25", "size": 1, "entry_price": 66500}]},
    {"id": "isolated", "mode": "isolated", "collateral": {"USDC": 40000},
     "positions": [{"instrument": "BTC-PERP", "size": 1, "entry_price": 65500},
                   {"instrument": "ETH-PERP", "size": -10, "entry_price": 2450}]},
]


def _bound(accounts: list[dict[str, Any]] | None = None) -> BoundBook:
    portfolio = parse_portfolio({"schema": "margin-engine/portfolio/v1",
                                 "accounts": accounts or ACCOUNTS})
    return bind_market(book_from_portfolio(portfolio), parse_market(MARKET))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_each_shipped_profile_file_holds_the_built_in_parameters(name: str) -> None:
    from_file = read_profile_file(SHIPPED / f"{name}.toml")
    built_in = get_profile(name)
    assert from_file.parameters() == built_in.parameters()
    assert from_file.info.parameters_as_of == built_in.info.parameters_as_of
    pb = ProfileBook.from_bound(_bound(), STABLES)
    a = from_file.requirement(pb, today(pb))
    b = built_in.requirement(pb, today(pb))
    np.testing.assert_array_equal(a.initial, b.initial)
    np.testing.assert_array_equal(a.maintenance, b.maintenance)
    # the file is cited among the sources
    assert from_file.info.sources[-1].title == f"profile file {name}.toml"


def test_a_wider_deribit_btc_range_scales_the_scan_by_the_ratio(tmp_path: Path) -> None:
    text = (SHIPPED / "deribit-pm.toml").read_text().replace(
        "[parameters.ranges]\nBTC = 0.16", "[parameters.ranges]\nBTC = 0.20")
    assert "BTC = 0.20" in text
    edited = read_profile_file(_write(tmp_path / "deribit-wide.toml", text))
    pb = ProfileBook.from_bound(_bound(ACCOUNTS[:1]), STABLES)
    scan = {p.info.name: float(p.requirement(pb, today(pb)).terms[
        next(t for t in p.requirement(pb, today(pb)).terms if t.value == "price_scenarios")][0, 0])
        for p in (edited, get_profile("deribit-pm"))}
    # 2 BTC perp at 65,000: the worst bucket loses range x 130,000
    assert scan["deribit-pm"] == pytest.approx(0.16 * 130_000, rel=1e-12)
    assert scan["deribit-wide"] == pytest.approx(0.20 * 130_000, rel=1e-12)


def test_dydx_open_interest_parameter_raises_the_margin_fraction(tmp_path: Path) -> None:
    path = _write(tmp_path / "dydx-busy.toml", 'profile = "dydx-v4"\n'
                  'parameters_as_of = "2026-12-01"\n[parameters.open_interest]\n'
                  "BTC = 35000000.0\n")
    profile = read_profile_file(path)
    pb = ProfileBook.from_bound(_bound(ACCOUNTS[:1]), STABLES)
    im = float(profile.requirement(pb, today(pb)).initial[0, 0])
    # OI halfway between the 20M and 50M caps: IMF = 0.02 + 0.98 x 0.5 = 0.51 of 130,000
    assert im == pytest.approx(0.51 * 130_000, rel=1e-12)
    assert profile.info.name == "dydx-busy"
    assert profile.parameters()["open_interest"] == {"BTC": 35_000_000.0, "ETH": 0.0}


def test_leverage_tiers_file_replaces_a_bracket_venues_table(tmp_path: Path) -> None:
    tiers = {"BTC/USDT:USDT": [
        {"tier": 1, "minNotional": 0, "maxNotional": 100000, "maintenanceMarginRate": 0.01,
         "maxLeverage": 50, "info": {"cum": "0"}},
        {"tier": 2, "minNotional": 100000, "maxNotional": 1000000,
         "maintenanceMarginRate": 0.02, "maxLeverage": 20, "info": {"cum": "1000"}}]}
    (tmp_path / "tiers.json").write_text(json.dumps(tiers))
    path = _write(tmp_path / "binance-now.toml", 'profile = "binance-um"\n'
                  'parameters_as_of = "2026-12-01"\n[leverage_tiers]\nfile = "tiers.json"\n')
    profile = read_profile_file(path)
    pb = ProfileBook.from_bound(_bound(ACCOUNTS[:1]), STABLES)
    req = profile.requirement(pb, today(pb))
    # 130,000 USD in the second tier: IM 130,000 / 20, MM 130,000 x 0.02 - 1,000
    assert float(req.initial[0, 0]) == pytest.approx(6_500.0, rel=1e-12)
    assert float(req.maintenance[0, 0]) == pytest.approx(1_600.0, rel=1e-12)


@pytest.mark.parametrize(("text", "message"), [
    ('profile = "deribit-pm"\nparameters_as_of = "2026-12-01"\n[parameters]\nrangez = 1.0\n',
     r"'parameters.rangez'.*expected one of"),
    ('profile = "deribit-pm"\nparameters_as_of = "2026-12-01"\n[parameters]\n'
     "roll_rate = -0.01\n", r"'parameters.roll_rate'.*-0.01"),
    ('profile = "deribit-pm"\nparameters_as_of = "2026-12-01"\n[parameters]\n'
     'roll_rate = "high"\n', r"'parameters.roll_rate'.*'high'"),
    ('profile = "deribit-pm"\nparameters_as_of = "2026-12-01"\n[parameters]\n'
     "cross_collateral = 1\n", r"'parameters.cross_collateral'.*true or false"),
    ('profile = "deribit-pm"\nparameters_as_of = "2026-12-01"\n[parameters.ranges]\n'
     "BTC = true\n", r"'parameters.ranges.BTC'"),
    ('profile = "bybit-pm"\nparameters_as_of = "2026-12-01"\n', r"'profile'.*'bybit-pm'"),
    ('profile = "okx-pm"\n', r"'parameters_as_of'.*missing"),
    ('profile = "okx-pm"\nparameters_as_of = "last week"\n', r"'parameters_as_of'.*YYYY"),
    ('profile = "okx-pm"\nparameters_as_of = "2026-12-01"\nvenue = "x"\n', r"'venue'"),
    ('profile = "okx-pm"\nparameters_as_of = "2026-12-01"\n[leverage_tiers]\n'
     'file = "t.json"\n', r"no leverage tiers"),
    ('profile = "binance-um"\nparameters_as_of = "2026-12-01"\n[leverage_tiers]\n'
     'file = "missing.json"\n', r"missing.json"),
    ('profile = "binance-um"\nparameters_as_of = "2026-12-01"\n[parameters]\n'
     "tables = 1.0\n", r"'parameters.tables'.*expected one of"),
    ("profile = [\n", r"valid TOML"),
])
def test_bad_profile_files_are_refused_naming_file_key_and_value(
        tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "t.json").write_text("{}")
    path = _write(tmp_path / "bad.toml", text)
    with pytest.raises(InputError, match=message) as caught:
        read_profile_file(path)
    assert "bad.toml" in str(caught.value)


def test_profiles_need_distinct_names_in_one_comparison(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="different names"):
        parse_profiles(f"deribit-pm,{SHIPPED / 'deribit-pm.toml'}")
    renamed = _write(tmp_path / "mine.toml", (SHIPPED / "deribit-pm.toml").read_text()
                     .replace('profile = "deribit-pm"', 'profile = "deribit-pm"\nname = "mine"'))
    assert [p.info.name for p in parse_profiles(f"deribit-pm,{renamed}")] == [
        "deribit-pm", "mine"]


def test_liquidation_levels_of_a_book_equal_those_of_each_account_alone() -> None:
    """The root search cuts the book into per-underlying views; each account's levels (and
    each isolated position's) must not depend on the other accounts."""
    whole = compare_profiles(_bound(), parse_profiles("all"), STABLES)
    for k, account in enumerate(ACCOUNTS):
        alone = compare_profiles(_bound([account]), parse_profiles("all"), STABLES)
        for name, entry in alone["accounts"][0]["profiles"].items():
            other = whole["accounts"][k]["profiles"][name]
            assert entry.get("underlyings") == other.get("underlyings"), (account["id"], name)
            assert entry.get("initial_margin") == other.get("initial_margin")


def test_isolated_position_levels_are_found_per_position() -> None:
    pb = ProfileBook.from_bound(_bound(ACCOUNTS[3:]), STABLES)
    run = run_profile(get_profile("binance-um"), pb)
    assert run.levels is not None
    # long 1 BTC at 65,500 holding its share of 40,000 (split by IM on entry notional):
    # a finite level below the index, none above; the short ETH leg the other way round
    assert np.isfinite(run.levels.position_down[0])
    assert np.isnan(run.levels.position_up[0])
    assert np.isnan(run.levels.position_down[1])
    assert np.isfinite(run.levels.position_up[1])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "margin_engine.cli.app", *args],
                          capture_output=True, text=True, cwd=ROOT, check=False)


def test_compute_with_a_profile_equals_the_comparison_and_refuses_a_model_too(
        tmp_path: Path) -> None:
    portfolio = tmp_path / "book.json"
    portfolio.write_text(json.dumps({"schema": "margin-engine/portfolio/v1",
                                     "accounts": ACCOUNTS}))
    market = tmp_path / "market.json"
    market.write_text(json.dumps(MARKET))
    done = _cli("compute", str(portfolio), "--market", str(market), "--profile",
                str(SHIPPED / "okx-pm.toml"), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["profile"]["name"] == "okx-pm"
    compared = compare_profiles(_bound(), parse_profiles("okx-pm"), STABLES)
    for mine, theirs in zip(document["accounts"], compared["accounts"], strict=True):
        entry = theirs["profiles"]["okx-pm"]
        assert mine["initial_margin"] == entry["initial_margin"]
        assert mine["underlyings"] == entry["underlyings"]
    refused = _cli("compute", str(portfolio), "--market", str(market), "--profile",
                   "okx-pm", "--model", "portfolio")
    assert refused.returncode == 2
    assert "--profile" in refused.stderr
    assert "Traceback" not in refused.stderr
    text = _cli("compute", str(portfolio), "--market", str(market), "--profile", "binance-um")
    assert text.returncode == 0
    assert "binance-um" in text.stdout
    assert "n/a" in text.stdout


def test_large_books_get_a_summary_and_liquidation_prices_on_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from margin_engine.profiles import cli

    many = [{**ACCOUNTS[k % 2], "id": f"a{k}"} for k in range(6)]
    portfolio = tmp_path / "book.json"
    portfolio.write_text(json.dumps({"schema": "margin-engine/portfolio/v1",
                                     "accounts": many}))
    market = tmp_path / "market.json"
    market.write_text(json.dumps(MARKET))
    monkeypatch.setattr(cli, "PROFILE_LIQUIDATION_LIMIT", 5)
    monkeypatch.setattr(cli, "ROWS_SHOWN", 4)
    documents: list[Any] = []

    def collect(head: dict[str, Any], key: str, items: Any, total: int) -> None:
        documents.append({**head, key: list(items)})
        assert total == len(documents[-1][key])

    cli.compare_profiles_command(portfolio, market, "deribit-pm,binance-um", config=None,
                                 accounts=None, liquidation="auto", as_json=True,
                                 emit_json=collect)
    assert "liquidation prices skipped for 6 accounts" in capsys.readouterr().err
    assert "underlyings" not in documents[0]["accounts"][0]["profiles"]["deribit-pm"]
    cli.compare_profiles_command(portfolio, market, "deribit-pm,binance-um", config=None,
                                 accounts=None, liquidation="on", as_json=True,
                                 emit_json=collect)
    assert "underlyings" in documents[1]["accounts"][0]["profiles"]["deribit-pm"]
    cli.compare_profiles_command(portfolio, market, "deribit-pm,binance-um", config=None,
                                 accounts=None, liquidation="off", as_json=False,
                                 emit_json=collect)
    out = capsys.readouterr().out
    assert "6 accounts by venue profile" in out
    assert "... 2 more accounts" in out
    # the summary's total IM is the sum over the accounts
    total = sum(a["profiles"]["deribit-pm"]["initial_margin"] for a in documents[1]["accounts"])
    assert f"{total:,.0f}" in out


def test_dydx_fee_cap_and_hyperliquid_backstop_are_reported() -> None:
    """dYdX caps a liquidation's fee at 1.5 % of the closed notional; Hyperliquid's vault
    takes an account over below 2/3 of MM (both from the venues' pages in the profiles)."""
    document = compare_profiles(_bound(ACCOUNTS[:1]), parse_profiles("dydx-v4,hyperliquid"),
                                STABLES, with_liquidation=False)
    entry = document["accounts"][0]["profiles"]
    # 2 BTC perp at 65,000: 130,000 USD of notional
    assert entry["dydx-v4"]["details"]["liquidation_fee_cap"] == pytest.approx(0.015 * 130_000)
    # Hyperliquid BTC at 40x: MM = 1.25 % x 130,000 = 1,625; backstop below 2/3 of it
    assert entry["hyperliquid"]["maintenance_margin"] == pytest.approx(1_625.0)
    assert entry["hyperliquid"]["details"]["backstop_threshold"] == pytest.approx(
        1_625.0 * 2 / 3)
