"""Isolated means isolated: each position holds its own margin, has its own liquidation price
by the exchange formula with the tier's maintenance amount, and is liquidated alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from margin_engine.book.bound import bind_market
from margin_engine.book.columnar import book_from_portfolio
from margin_engine.collateral.haircuts import CollateralConfig
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.liquidation.price import position_liquidation_levels
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import get_model
from tests.conftest import account, market_doc, portfolio_doc

# MMR 0.4 % / 0.5 % / 0.65 % / 1 % on brackets up to 300k / 800k / 3M / above; as marginal
# rates these are maintenance amounts 0 / 300 / 1,500: 0.1 % x 300k, + 0.15 % x 800k.
TIERS = [{"up_to": 300000, "initial_rate": 0.008, "maintenance_rate": 0.004},
         {"up_to": 800000, "initial_rate": 0.01, "maintenance_rate": 0.005},
         {"up_to": 3000000, "initial_rate": 0.013, "maintenance_rate": 0.0065},
         {"up_to": "inf", "initial_rate": 0.02, "maintenance_rate": 0.01}]
CONFIG = RiskConfig.from_dict({"isolated": {"tiers_by_underlying": {"BTC": TIERS}},
                               "haircuts": {"enabled": False}})


def _bound(positions: list[tuple[str, float, float]], margins: list[float],
           collateral: float, index: float = 60000.0, eth: float = 2000.0) -> object:
    doc = portfolio_doc(account("a", positions, {"USDC": collateral}, mode="isolated"))
    market = market_doc()
    market["underlyings"]["BTC"]["index"] = index
    market["underlyings"]["ETH"]["index"] = eth
    book = book_from_portfolio(parse_portfolio(doc))
    book = replace(book, position_margin=np.array(margins, dtype=np.float64))
    return bind_market(book, parse_market(market))


def test_exchange_formula_with_the_maintenance_amount() -> None:
    # Long 20 BTC @ 60,000 with 120,000 margin: 120,000 + 20 (P - 60,000) = 0.0065 x 20 P - 1,500
    # (notional ~1.09M: third bracket) -> 19.87 P = 1,078,500 -> P = 54,277.81.
    bound = _bound([("BTC-PERP", 20, 60000)], [120000.0], 200000.0)
    levels = position_liquidation_levels(bound, "isolated", CONFIG)
    assert levels.nearest[0, 0] == pytest.approx(1_078_500 / 19.87, rel=1e-10)
    assert round(float(levels.nearest[0, 0]), 2) == 54277.81


@pytest.mark.parametrize(("size", "want"), [(1, 54000 / 0.996), (-1, 66000 / 1.004)])
def test_long_and_short_on_the_first_tier(size: int, want: float) -> None:
    # 1 BTC @ 60,000, margin 6,000, MMR 0.4 %: long 6,000 + (P - 60,000) = 0.004 P -> 54,216.87;
    # short 6,000 - (P - 60,000) = 0.004 P -> 65,737.05.
    bound = _bound([("BTC-PERP", size, 60000)], [6000.0], 6000.0)
    levels = position_liquidation_levels(bound, "isolated", CONFIG)
    assert levels.nearest[0, 0] == pytest.approx(want, rel=1e-10)
    assert round(float(levels.nearest[0, 0]), 2) == (54216.87 if size > 0 else 65737.05)


def test_a_loss_on_one_position_does_not_move_the_other() -> None:
    # A long BTC perp and a short ETH perp in one isolated account, the collateral split by
    # their IM on entry notional. ETH rallying 30 % (a loss on the short) leaves the BTC
    # position's margin, equity and liquidation price where they were.
    positions = [("BTC-PERP", 1, 60000), ("ETH-PERP", -10, 2000)]
    calm = _bound(positions, [np.nan, np.nan], 10000.0)
    rally = _bound(positions, [np.nan, np.nan], 10000.0, eth=2600.0)
    for bound in (calm, rally):
        result = get_model("isolated").compute(bound, CONFIG)
        held = result.per_position["margin_held"]
        # IM on entry: BTC 0.008 x 60,000 = 480; ETH 2 % x 20,000 = 400 (default tiers).
        assert held == pytest.approx([10000 * 480 / 880, 10000 * 400 / 880], rel=1e-12)
    a = position_liquidation_levels(calm, "isolated", CONFIG).nearest[0, 0]
    b = position_liquidation_levels(rally, "isolated", CONFIG).nearest[0, 0]
    assert a == pytest.approx(b, rel=1e-12)
    # ... while the ETH short's own equity took the loss: 6,000 below.
    eth = [get_model("isolated").compute(x, CONFIG).position_equity[1] for x in (calm, rally)]
    assert eth[0] - eth[1] == pytest.approx(6000.0, rel=1e-12)


def test_one_position_account_holds_all_its_collateral_and_free_balance_is_kept() -> None:
    one = _bound([("BTC-PERP", 1, 60000)], [np.nan], 7000.0)
    assert get_model("isolated").compute(one, CONFIG).per_position["margin_held"][0] == 7000.0
    asked = _bound([("BTC-PERP", 1, 60000)], [2000.0], 7000.0)
    result = get_model("isolated").compute(asked, CONFIG)
    assert result.per_position["margin_held"][0] == 2000.0  # the other 5,000 stay free


def test_haircuts_reduce_the_position_equity_in_proportion() -> None:
    config = replace(CONFIG, haircuts=CollateralConfig())
    bound = _bound([("BTC-PERP", 1, 60000)], [np.nan], 10000.0)
    result = get_model("isolated").compute(bound, config)
    haircut = float(result.collateral_haircut[0])
    assert 0 < haircut < 100
    assert result.position_equity[0] == pytest.approx(10000.0 - haircut, rel=1e-12)


def test_replay_liquidates_the_isolated_position_alone() -> None:
    # Long 10 BTC @ 50,000 on 10,000 of margin and short 10 ETH @ 2,000 on 5,000, with 20,000
    # USDC in all (5,000 free). BTC gaps -4 %: its position loses 20,000 > its 10,000 margin, so
    # it alone is closed; the fund pays the 10,000 beyond its margin (bad debt), the ETH short
    # and the free balance are untouched: the account keeps 20,000 - 10,000 = 10,000 USD.
    from margin_engine.liquidation.config import LiquidationConfig

    result = _gap_replay([("BTC-PERP", 10, 50000), ("ETH-PERP", -10, 2000)],
                         [10000.0, 5000.0], 48000.0)
    liquidations = [e for e in result.events if e["type"] == "liquidation"]
    assert len(liquidations) == 1
    assert [c["instrument"] for c in liquidations[0]["closed"]] == ["BTC-PERP"]
    assert result.totals["bad_debt"] == pytest.approx(10000.0)
    assert result.totals["insurance_fund_used"] == pytest.approx(10000.0)
    asset = LiquidationConfig().settlement_asset
    kept = float(result.ledger.balance("a", asset)) + float(result.ledger.balance("a", "USDC"))
    assert kept == pytest.approx(10000.0)


def _write(tmp_path: Path, positions: list[dict], collateral: float = 200000.0
           ) -> tuple[Path, Path, Path]:
    import json

    portfolio = tmp_path / "p.json"
    portfolio.write_text(json.dumps({"schema": "margin-engine/portfolio/v1", "accounts": [
        {"id": "iso", "mode": "isolated", "collateral": {"USDC": collateral},
         "positions": positions}]}))
    market = tmp_path / "m.json"
    doc = market_doc()
    doc["underlyings"]["BTC"]["index"] = 60000
    market.write_text(json.dumps(doc))
    config = tmp_path / "risk.json"
    config.write_text(CONFIG.to_json())
    return portfolio, market, config


def test_compute_json_gives_each_isolated_position_its_own_numbers(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from margin_engine.cli.app import app

    portfolio, market, config = _write(tmp_path, [
        {"instrument": "BTC-PERP", "size": 20, "entry_price": 60000, "margin": 120000},
        {"instrument": "ETH-PERP", "size": -10, "entry_price": 2000, "leverage": 4}])
    out = CliRunner().invoke(app, ["compute", str(portfolio), "--market", str(market),
                                   "--config", str(config), "--json"])
    assert out.exit_code == 0, out.output
    account_doc = json.loads(out.stdout)["accounts"][0]
    btc, eth = account_doc["positions"]
    assert btc["margin_held"] == 120000.0
    assert btc["liquidation_price"] == pytest.approx(1_078_500 / 19.87, rel=1e-10)
    assert btc["liquidation_prices"]["down"]["distance_pct"] == pytest.approx(
        100 * (1_078_500 / 19.87 / 60000 - 1), rel=1e-9)
    assert eth["margin_held"] == pytest.approx(20000 / 4, rel=1e-12)  # entry notional / 4
    # ETH short, 5,000 margin: 5,000 - 10 (P - 2,000) = 0.01 x 10 P -> P = 25,000 / 10.1
    assert eth["liquidation_price"] == pytest.approx(25000 / 10.1, rel=1e-10)


@pytest.mark.parametrize(("positions", "message"), [
    ([{"instrument": "BTC-PERP", "size": 1, "entry_price": 60000, "margin": 1000,
       "leverage": 5}], "either margin or leverage"),
    ([{"instrument": "BTC-PERP", "size": 1, "entry_price": 60000, "margin": 300000}],
     "within the account's collateral value"),
    ([{"instrument": "BTC-PERP", "size": 1, "entry_price": 60000, "leverage": 0}],
     "leverage"),
])
def test_isolated_margin_refusals(tmp_path: Path, positions: list[dict], message: str) -> None:
    from typer.testing import CliRunner

    from margin_engine.cli.app import app

    portfolio, market, config = _write(tmp_path, positions)
    out = CliRunner().invoke(app, ["compute", str(portfolio), "--market", str(market),
                                   "--config", str(config)])
    assert out.exit_code == 2
    assert message in out.stderr
    assert "account 'iso'" in out.stderr


def test_a_margin_of_the_whole_stablecoin_balance_is_accepted_below_par(tmp_path: Path) -> None:
    """120,000 asked on 120,000 USDC with USDC at 0.9995: the margin is posted in USDC, so it
    is within the balance (before: refused, 120,000 USD > 119,940 USD)."""
    import json

    from typer.testing import CliRunner

    from margin_engine.cli.app import app

    portfolio, market, config = _write(tmp_path, [
        {"instrument": "BTC-PERP", "size": 20, "entry_price": 60000, "margin": 120000}],
        collateral=120000)
    doc = json.loads(market.read_text())
    doc.setdefault("assets", {})["USDC"] = {"price": 0.9995}
    market.write_text(json.dumps(doc))
    out = CliRunner().invoke(app, ["compute", str(portfolio), "--market", str(market),
                                   "--config", str(config), "--model", "isolated", "--json"])
    assert out.exit_code == 0, out.output
    position = json.loads(out.stdout)["accounts"][0]["positions"][0]
    assert position["margin_held"] == 120000.0
    (tmp_path / "over").mkdir()
    over, _, _ = _write(tmp_path / "over", [
        {"instrument": "BTC-PERP", "size": 20, "entry_price": 60000, "margin": 120001}],
        collateral=120000)
    refused = CliRunner().invoke(app, ["compute", str(over), "--market", str(market),
                                       "--config", str(config), "--model", "isolated"])
    assert refused.exit_code == 2
    assert "within the account's collateral value" in refused.stderr


def test_bulk_positions_file_takes_margin_and_leverage(tmp_path: Path) -> None:
    from margin_engine.io.bulk import read_bulk_book

    positions = tmp_path / "pos.csv"
    positions.write_text("account,instrument,size,entry_price,margin,leverage\n"
                         "a,BTC-PERP,1,60000,6000,\n"
                         "a,ETH-PERP,-10,2000,,4\n"
                         "b,BTC-PERP,2,60000,,\n")
    book = read_bulk_book(positions)
    assert book.position_margin is not None
    assert book.position_leverage is not None
    np.testing.assert_array_equal(book.position_margin, [6000.0, np.nan, np.nan])
    np.testing.assert_array_equal(book.position_leverage, [np.nan, 4.0, np.nan])
    from margin_engine.core.errors import InputError

    positions.write_text("account,instrument,size,entry_price,margin,leverage\n"
                         "a,BTC-PERP,1,60000,6000,3\n")
    with pytest.raises(InputError, match="either margin or leverage"):
        read_bulk_book(positions)


def test_isolated_margin_in_a_coin_follows_its_price() -> None:
    # 1 BTC of collateral holding a long 10 BTC-PERP @ 65,000 (default tiers: MM 1 % of 10 S).
    # The margin is the coin, worth S: S (1 - h(S)) + 10 (S - 65,000) = 0.1 S, with the haircut
    # h(S) = 2.3263 x 0.52 sqrt(2/365) + 0.1 sqrt(S / 2e10): about 650,000 / 10.8103 = 60,128.
    import math

    doc = portfolio_doc(account("a", [("BTC-PERP", 10, 65000)], {"BTC": 1}, mode="isolated"))
    market = market_doc()
    market["underlyings"]["BTC"]["index"] = 65000
    market["assets"]["BTC"]["price"] = 65000
    bound = bind_market(book_from_portfolio(parse_portfolio(doc)), parse_market(market))
    root = float(position_liquidation_levels(bound, "isolated", RiskConfig()).nearest[0, 0])

    def residual(s: float) -> float:
        h = 2.3263478740408408 * 0.52 * math.sqrt(2 / 365) + 0.1 * math.sqrt(s / 2e10)
        return s * (1 - h) + 10 * (s - 65000) - 0.1 * s

    assert abs(residual(root)) < 1e-6 * 65000
    assert root == pytest.approx(60128.0, abs=5.0)


def test_two_isolated_positions_liquidated_together_keep_their_own_losses() -> None:
    # Long 10 BTC-PERP @ 50,000 on 10,000 and long 1 BTC-26SEP25 @ 50,000 on 2,500, 20,000
    # USDC in all (7,500 free). BTC gaps to 47,600 on one bar: the perp loses 24,000 (14,000
    # beyond its margin: bad debt); the future loses 2,400, leaving 100 < its MM (0.4 % x
    # 47,600 = 190.4): both are closed. The future's 100 pays its penalty (1 % x 47,600,
    # capped at 100) and does not reduce the perp's bad debt; the free 7,500 is kept.
    from margin_engine.liquidation.config import LiquidationConfig

    result = _gap_replay([("BTC-PERP", 10, 50000), ("BTC-26SEP25", 1, 50000)],
                         [10000.0, 2500.0], 47600.0)
    liquidations = [e for e in result.events if e["type"] == "liquidation"]
    assert sorted(c["instrument"] for c in liquidations[0]["closed"]) == ["BTC-26SEP25",
                                                                         "BTC-PERP"]
    assert result.totals["bad_debt"] == pytest.approx(14000.0)
    assert liquidations[0]["penalty"] == pytest.approx(100.0)
    # The account keeps its free 7,500: 20,000 - 10,000 - 2,500 (both margins lost).
    asset = LiquidationConfig().settlement_asset
    kept = float(result.ledger.balance("a", asset)) + float(result.ledger.balance("a", "USDC"))
    assert kept == pytest.approx(7500.0)


def _gap_replay(positions: list[tuple[str, float, float]], margins: list[float],
                low: float) -> Any:
    """One isolated account (20,000 USDC, ``margins`` per position) through BTC 50,000,
    50,000, ``low``, ``low`` on minute bars: no latency, a 50,000 fund, 1 % penalty."""
    from margin_engine.data.prices import PriceSeries
    from margin_engine.liquidation.config import LiquidationConfig
    from margin_engine.liquidation.replay import replay

    doc = portfolio_doc(account("a", positions, {"USDC": 20000}, mode="isolated"))
    book = replace(book_from_portfolio(parse_portfolio(doc)),
                   position_margin=np.array(margins))
    market = parse_market(market_doc(timestamp="2025-06-15T12:00:00Z"))
    closes = np.array([50000.0, 50000.0, low, low])
    times = (np.arange(4, dtype=np.int64) * 60 + 1_750_000_000) * 10**9
    path = PriceSeries(source="t", time_ns=times, close=closes, open=closes, high=closes,
                       low=closes, volume=np.zeros(4))
    return replay(book, market, {"BTC": path}, config=CONFIG,
                  liquidation=LiquidationConfig(latency_seconds=0, insurance_fund=50000,
                                                penalty_rate=0.01))
