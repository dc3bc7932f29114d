"""Liquidation prices, partial liquidation, the circuit breaker and path replays."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from margin_engine.book.bound import bind_market
from margin_engine.book.columnar import book_from_portfolio, book_subset
from margin_engine.cli.app import app
from margin_engine.data.prices import PriceSeries
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.ledger.journal import ZERO
from margin_engine.liquidation.breaker import CircuitBreaker, velocities
from margin_engine.liquidation.config import BreakerConfig, LiquidationConfig
from margin_engine.liquidation.partial import partially_liquidate
from margin_engine.liquidation.price import liquidation_levels, liquidation_prices
from margin_engine.liquidation.replay import replay
from margin_engine.liquidation.shocks import marks_by_underlying, with_index
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import MODEL_NAMES, get_model
from tests.conftest import NO_HAIRCUTS, account, bind, market_doc, portfolio_doc

# Models whose positions share the account's equity (isolated positions are liquidated alone,
# whole: tests/golden/test_isolated_positions.py).
SHARED_EQUITY_MODELS = ("cross", "portfolio", "sensitivity")
MARKET = market_doc(correlation={"BTC": {"ETH": 0.8}}, marks={"BTC-26SEP25": 50500})


def test_liquidation_price_of_a_long_future_by_hand() -> None:
    # 2 BTC-PERP long from 50,000 with 10,000 USDC. Isolated: equity 10,000 + 2 (S - 50,000)
    # = MM 0.01 x 2 S -> 1.98 S = 90,000 -> S = 45,454.55. Portfolio: MM = 0.8 x 0.16 x 2 S
    # -> 1.744 S = 90,000 -> 51,605.50 (above today's 50,000: already liquidatable).
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", 2, 50000)], {"USDC": 10000})))
    iso = liquidation_prices(bound, "isolated", NO_HAIRCUTS)
    port = liquidation_prices(bound, "portfolio", NO_HAIRCUTS)
    assert iso[0, 0] == pytest.approx(90000 / 1.98, rel=1e-10)
    assert port[0, 0] == pytest.approx(90000 / 1.744, rel=1e-10)


def test_both_liquidation_prices_of_a_long_future_by_hand() -> None:
    # The same books: isolated has its one root below (45,454.55, -9.09 %), none above; the
    # portfolio model's one root is above (51,605.50): down is NaN there.
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", 2, 50000)], {"USDC": 10000})))
    iso = liquidation_levels(bound, "isolated", NO_HAIRCUTS)
    port = liquidation_levels(bound, "portfolio", NO_HAIRCUTS)
    assert iso.down[0, 0] == pytest.approx(90000 / 1.98, rel=1e-10)
    assert np.isnan(iso.up[0, 0])
    assert np.isnan(port.down[0, 0])
    assert port.up[0, 0] == pytest.approx(90000 / 1.744, rel=1e-10)
    down_pct, _ = iso.distance_pct(bound.index[np.newaxis, :])
    assert down_pct[0, 0] == pytest.approx(100 * (90000 / 1.98 / 50000 - 1), rel=1e-10)


def test_short_straddle_has_a_liquidation_price_on_each_side() -> None:
    # Short 1 call and 1 put at 50,000 (27JUN25) on 30,000 USDC: a move either way costs the
    # straddle, so equity meets MM once below and once above the index, and the JSON gives both
    # with their distances; liquidation_price stays the nearer one.
    doc = portfolio_doc(account("a", [("BTC-27JUN25-50000-C", -1, 2500),
                                      ("BTC-27JUN25-50000-P", -1, 2500)], {"USDC": 30000}))
    bound = bind(doc)
    found = liquidation_levels(bound, "portfolio", NO_HAIRCUTS)
    down, up = float(found.down[0, 0]), float(found.up[0, 0])
    assert 0 < down < 50000 < up
    nearer = down if abs(np.log(down / 50000)) <= abs(np.log(up / 50000)) else up
    assert float(found.nearest[0, 0]) == nearer
    from margin_engine.margin.run import margin_report, run_models

    run = run_models(bound, NO_HAIRCUTS, ["portfolio"])
    cell = margin_report(run, "portfolio").to_json()["accounts"][0]["underlyings"]["BTC"]
    assert cell["liquidation_price"] == pytest.approx(nearer, rel=1e-12)
    assert cell["liquidation_prices"]["down"]["price"] == pytest.approx(down, rel=1e-12)
    assert cell["liquidation_prices"]["up"]["distance_pct"] == pytest.approx(
        100 * (up / 50000 - 1), rel=1e-12)


def test_no_liquidation_price_for_a_fully_hedged_account() -> None:
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", -1, 50000)], {"BTC": 1})))
    assert np.isnan(liquidation_prices(bound, "portfolio", RiskConfig())[0, 0])


@st.composite
def risky_account(draw: Any) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from([
        "BTC-PERP", "BTC-26SEP25", "ETH-PERP", "BTC-27JUN25-55000-C", "BTC-27JUN25-45000-P",
        "ETH-26SEP25-2000-C", "ETH-26SEP25-1800-P"]), min_size=1, max_size=4, unique=True))
    positions = [(n, draw(st.floats(-10, 10).filter(lambda x: abs(x) > 0.05)),
                  draw(st.floats(100, 52000))) for n in names]
    collateral = {"USDC": draw(st.floats(1000, 200000))}
    if draw(st.booleans()):
        collateral["BTC"] = draw(st.floats(0.1, 2))
    return portfolio_doc(account("a", positions, collateral))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=risky_account(), model=st.sampled_from(MODEL_NAMES))
def test_equity_equals_mm_at_the_liquidation_price(doc: dict[str, Any], model: str) -> None:
    bound = bind(doc, MARKET)
    found = liquidation_levels(bound, model, RiskConfig())
    names = {i.name: i.underlying for i in bound.book.instruments.instruments}
    marked = marks_by_underlying(bound.market, names)
    for u_idx, u in enumerate(bound.underlyings):
        index = float(bound.index[u_idx])
        down, up, nearest = (float(found.down[0, u_idx]), float(found.up[0, u_idx]),
                             float(found.nearest[0, u_idx]))
        assert np.isnan(down) or 0 < down <= index * (1 + 1e-9)
        assert np.isnan(up) or index < up <= 10 * index
        assert nearest in (down, up) or (np.isnan(down) and np.isnan(up) and np.isnan(nearest))
        for level in (down, up):
            if np.isnan(level):
                continue
            moved = bind_market(bound.book, with_index(bound.market, marked, u, level))
            result = get_model(model).compute(moved, RiskConfig())
            # Equity after haircuts = MM (isolated: the first position to meet its own MM).
            gap = float(result.maintenance_gap(moved.equity(), moved.position_account)[0])
            scale = max(1.0, float(result.maintenance_margin[0]))
            assert abs(gap) <= 1e-9 * scale + 1e-6


def _liquidatable(doc: dict[str, Any], model: str) -> tuple[Any, Any]:
    book = book_from_portfolio(parse_portfolio(doc))
    market = parse_market(MARKET)
    book = replace(book, assets=(*book.assets, "USD"),
                   collateral=np.column_stack([book.collateral, np.zeros(1)]))
    market = replace(market, asset_prices={**market.asset_prices, "USD": 1.0})
    return book, market


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=risky_account(), model=st.sampled_from(SHARED_EQUITY_MODELS))
def test_partial_liquidation_closes_only_what_is_needed(doc: dict[str, Any], model: str) -> None:
    book, market = _liquidatable(doc, model)
    settings_ = LiquidationConfig(penalty_rate=0.005)
    outcome = partially_liquidate(book, market, model, RiskConfig(), settings_)
    after = bind_market(outcome.book, market)
    result = get_model(model).compute(after, RiskConfig())
    adjusted = float(result.adjusted_equity(after.equity())[0])  # what the target is checked on
    assert outcome.equity == pytest.approx(float(after.equity()[0]), rel=1e-12, abs=1e-9)
    if outcome.target_reached:
        assert adjusted >= outcome.initial_margin * (1 - 1e-9) - 1e-6
        assert adjusted >= outcome.maintenance_margin - 1e-6  # never left below MM
    if not outcome.closures or not outcome.target_reached:
        return
    # Closing a little less of the last position would leave the account short of target.
    last = outcome.closures[-1]
    undo = outcome.book.size.copy()
    undo[last.position] += last.size_closed * 1e-4
    collateral = outcome.book.collateral.copy()
    # Undoing part of a closure gives back its penalty and un-realises its P&L.
    collateral[0, -1] += (last.penalty - last.realised_pnl) * 1e-4
    less = replace(outcome.book, size=undo, collateral=collateral)
    bound = bind_market(less, market)
    less_result = get_model(model).compute(bound, RiskConfig())
    initial = float(less_result.initial_margin[0])
    assert float(less_result.adjusted_equity(bound.equity())[0]) < \
        initial + 1e-6 * max(1.0, initial) or \
        last.size_closed == pytest.approx(float(book.size[last.position]))


def test_partial_liquidation_closes_the_most_margin_per_cost_first() -> None:
    # A short call (margin-heavy) and a long perp: the option frees more MM per unit of
    # penalty, so it goes first; the account needs only part of it closed.
    doc = portfolio_doc(account("a", [("BTC-27JUN25-50000-C", -10, 1500),
                                      ("BTC-PERP", 2, 50000)], {"USDC": 60000}))
    book, market = _liquidatable(doc, "cross")  # shared equity: closed only in part
    outcome = partially_liquidate(book, market, "cross", RiskConfig(),
                                  LiquidationConfig(penalty_rate=0.005))
    assert outcome.closures[0].instrument == "BTC-27JUN25-50000-C"
    assert len(outcome.closures) == 1
    assert 0 < -outcome.closures[0].size_closed < 10
    assert outcome.target_reached


def test_breaker_multiplier_is_bounded_and_decays_with_its_half_life() -> None:
    config = BreakerConfig(enabled=True, mm_buffer=0.01, max_multiplier=2.0,
                           half_life_seconds=600)
    breaker = CircuitBreaker(config=config, window_seconds=60)
    second = 10**9
    assert breaker.update(0, 0.015) == (1.5, "on")  # 1.5 % move vs a 1 % buffer
    assert breaker.update(1 * second, 0.05)[0] == 2.0  # capped
    multiplier, change = breaker.update(601 * second, 0.0)
    assert multiplier == pytest.approx(1.5, rel=1e-12)
    assert change is None
    multiplier, change = breaker.update(7201 * second, 0.0)
    assert multiplier < 1.01
    assert change == "off"
    times = np.array([0, 60, 120, 180]) * second
    prices = np.array([[100.0], [99.0], [95.0], [95.5]])
    # |99/100 - 1|, |95/99 - 1|, |95.5/95 - 1| over one-minute windows.
    np.testing.assert_allclose(velocities(times, prices, 60),
                               [0.0, 0.01, 4 / 99, 0.5 / 95], rtol=1e-12)


def _series(prices: list[float], step_s: int = 60) -> PriceSeries:
    p = np.array(prices, dtype=np.float64)
    return PriceSeries(source="test", time_ns=np.arange(p.size, dtype=np.int64) * step_s * 10**9
                       + 1_750_000_000 * 10**9, close=p, open=p, high=p, low=p,
                       volume=np.zeros(p.size))


def _replay_book(collateral: float) -> tuple[Any, Any]:
    doc = portfolio_doc(
        account("long", [("BTC-PERP", 10, 50000)], {"USDC": collateral}, mode="isolated"),
        account("short", [("BTC-PERP", -10, 50000)], {"USDC": 100000}, mode="isolated"))
    market = market_doc(timestamp="2025-06-15T12:00:00Z")
    return book_from_portfolio(parse_portfolio(doc)), parse_market(market)


def test_replay_gap_creates_bad_debt_paid_by_fund_then_adl_and_ledger_balances() -> None:
    # 10 BTC long with 10,000 USDC (50x): MM 5,000. A gap from 50,000 to 48,000 (-4 %) costs
    # 20,000: equity -10,000 at execution -> no penalty can be paid, bad debt 10,000: the fund
    # pays its 4,000, the profitable short (+20,000 unrealised) is deleveraged for 6,000.
    book, market = _replay_book(10000)
    path = {"BTC": _series([50000, 50000, 48000, 48000])}
    result = replay(book, market, path, config=RiskConfig(),
                    liquidation=LiquidationConfig(latency_seconds=0, insurance_fund=4000,
                                                  penalty_rate=0.01))
    totals = result.totals
    assert totals["liquidations"] == 1
    assert totals["liquidated_notional"] == pytest.approx(480000)
    assert totals["bad_debt"] == pytest.approx(10000.0)
    assert totals["insurance_fund_used"] == pytest.approx(4000.0)
    assert totals["adl_count"] == 1
    adl = next(e for e in result.events if e["type"] == "adl")
    assert adl["account"] == "short"
    assert adl["amount"] == pytest.approx(6000.0)
    assert adl["fraction_closed"] == pytest.approx(0.3)  # 6,000 of its 20,000 profit
    for asset in ("USD", "USDC"):
        assert result.ledger.total(asset) == ZERO
    assert result.ledger.balance("long", "USD") + result.ledger.balance("long", "USDC") == ZERO


def test_replay_socialised_loss_when_adl_is_off() -> None:
    book, market = _replay_book(10000)
    result = replay(book, market, {"BTC": _series([50000, 48000, 48000])}, config=RiskConfig(),
                    liquidation=LiquidationConfig(latency_seconds=0, shortfall="socialised"))
    assert result.totals["adl_count"] == 0
    assert result.totals["socialised_loss"] == pytest.approx(result.totals["bad_debt"])


def test_breaker_liquidates_earlier_and_cuts_bad_debt_with_latency() -> None:
    # A slide of -1 % a minute with 3 minutes of latency: liquidations triggered at the MM line
    # execute three moves later. The breaker (velocity 1 % > 0.5 % buffer) doubles MM and acts
    # earlier.
    book, market = _replay_book(12000)
    prices = [50000 * 0.99**k for k in range(12)]
    common = {"insurance_fund": 0.0, "latency_seconds": 180, "shortfall": "socialised"}
    off = replay(book, market, {"BTC": _series(prices)}, config=RiskConfig(),
                 liquidation=LiquidationConfig(**common))
    on = replay(book, market, {"BTC": _series(prices)}, config=RiskConfig(),
                liquidation=LiquidationConfig(**common, breaker=BreakerConfig(
                    enabled=True, mm_buffer=0.005)))
    assert off.totals["bad_debt"] > 0
    assert on.totals["bad_debt"] < off.totals["bad_debt"]
    assert any(e["type"] == "breaker_on" for e in on.events)


def test_no_liquidation_on_an_oracle_flagged_price() -> None:
    """The replay's oracle is the monitor's: on disagreement the healthy source (within 2 % of
    the last price) moves the market, and nobody is liquidated on a price the sources dispute."""
    book, market = _replay_book(10000)
    path = {"BTC": _series([50000, 48000, 48000])}
    spot = {"BTC": _series([50000, 50100, 48000])}  # disagrees by 4 % on the second bar
    result = replay(book, market, path, config=RiskConfig(),
                    liquidation=LiquidationConfig(latency_seconds=0), oracle_paths=spot)
    flagged = result.events[0]
    # The path's tick meets the oracle's last price (50,000): 4 % apart, the path is dropped.
    assert (flagged["type"], flagged["dropped"], flagged["price"]) == \
        ("oracle_flagged", ["path"], 50000.0)
    assert result.totals["flagged_bars_skipped"] == 0  # nobody below MM at the oracle's price
    assert result.totals["liquidations"] == 1  # on the third bar, when sources agree again

    # A second source reporting a far price at the same instant is not taken on its word: the
    # oracle's -8 % print, 4 % away from the path, is held (quarantined), then dropped when the
    # sources agree again.
    spot = {"BTC": _series([50000, 46000, 48000])}
    result = replay(book, market, path, config=RiskConfig(),
                    liquidation=LiquidationConfig(latency_seconds=0), oracle_paths=spot)
    kinds = [e["type"] for e in result.events]
    assert kinds[:4] == ["oracle_flagged", "tick_quarantined", "quarantine_dropped",
                         "oracle_cleared"]
    assert result.totals["quarantined_ticks"] == 1
    assert result.totals["liquidations"] == 1


def test_liquidate_cli(tmp_path: Path) -> None:
    portfolio = tmp_path / "p.json"
    market = tmp_path / "m.json"
    path = tmp_path / "btc.csv"
    portfolio.write_text(json.dumps(portfolio_doc(
        account("long", [("BTC-PERP", 10, 50000)], {"USDC": 10000}, mode="cross"))))
    market.write_text(json.dumps(market_doc(timestamp="2025-06-15T12:00:00Z")))
    path.write_text("date,open,high,low,close,volume\n" + "".join(
        f"2025-06-15 12:0{k}:00+00:00,1,1,1,{p},0\n"
        for k, p in enumerate([50000, 49900, 49000, 48000])))
    out = CliRunner().invoke(app, ["liquidate", str(portfolio), "--market", str(market),
                                   "--path", f"BTC={path}", "--json", "--insurance-fund",
                                   "50000"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    for key in ("liquidations", "liquidated_notional", "bad_debt", "insurance_fund_used",
                "adl_count", "socialised_loss", "events"):
        assert key in result
    assert result["liquidations"] >= 1
    bad = CliRunner().invoke(app, ["liquidate", str(portfolio), "--market", str(market),
                                   "--path", f"SOL={path}"])
    assert bad.exit_code == 2
    assert "SOL" in bad.stderr


def test_account_subset_keeps_positions() -> None:
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", 1, 50000)]),
                               account("b", [("ETH-PERP", 2, 2000), ("BTC-PERP", 1, 1)])))
    sub = book_subset(bound.book, [1])
    assert sub.account_ids == ("b",)
    assert sub.size.tolist() == [2.0, 1.0]
    assert Decimal(1) > ZERO


def test_replay_settles_expiring_positions_on_the_way() -> None:
    # Clock: the market's 2025-06-15T12:00Z plus the elapsed path time (hourly bars). The long
    # 2 BTC-16JUN25 (from 50,000) expires at 2025-06-16T08:00Z = bar 20, where the index is
    # 50,000 + 20 x 100 = 52,000: realised 2 x 2,000 = 4,000, size 0, one settlement event.
    # Later moves no longer touch the account; the short call on the same expiry, sold at 300
    # and 2,000 in the money at settlement (K 50,000), realises -(2,000 - 300) = -1,700.
    doc = portfolio_doc(account("a", [("BTC-16JUN25", 2, 50000),
                                      ("BTC-16JUN25-50000-C", -1, 300)],
                                {"USDC": 100000}, mode="portfolio"))
    book = book_from_portfolio(parse_portfolio(doc))
    market = parse_market(market_doc(timestamp="2025-06-15T12:00:00Z"))
    prices = [50000 + 100 * k for k in range(30)]
    result = replay(book, market, {"BTC": _series(prices, step_s=3600)}, config=RiskConfig(),
                    liquidation=LiquidationConfig(latency_seconds=0))
    settled = [e for e in result.events if e["type"] == "settlement"]
    assert [e["instrument"] for e in settled] == ["BTC-16JUN25", "BTC-16JUN25-50000-C"]
    assert {e["book_time"] for e in settled} == {"2025-06-16T08:00:00Z"}  # bar 20
    assert {e["time"] for e in settled} == {"2025-06-16T11:06:40Z"}  # the path's bar 20
    assert settled[0]["settlement_price"] == pytest.approx(52000.0)
    assert settled[0]["pnl"] == pytest.approx(4000.0)
    assert settled[1]["pnl"] == pytest.approx(-1700.0)
    assert result.totals["settlements"] == 2
    assert result.totals["liquidations"] == 0
    settlement_asset = LiquidationConfig().settlement_asset
    assert result.ledger.balance("a", settlement_asset) == Decimal("2300")
    assert result.ledger.total(settlement_asset) == ZERO
