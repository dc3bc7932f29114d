"""Expiry at 08:00 UTC: settled futures and options are cash at the settlement price, with no
margin, under every model (the arithmetic by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from margin_engine.cli.app import app
from margin_engine.margin.registry import get_model
from tests.conftest import NO_HAIRCUTS, account, bind, market_doc, portfolio_doc

MODELS = ("isolated", "cross", "portfolio", "sensitivity")


def _margins(doc: dict, market: dict) -> dict[str, tuple[float, float, float]]:
    bound = bind(doc, market)
    out = {}
    for model in MODELS:
        result = get_model(model).compute(bound, NO_HAIRCUTS)
        out[model] = (float(bound.equity()[0]), float(result.initial_margin[0]),
                      float(result.maintenance_margin[0]))
    return out


@pytest.mark.parametrize("time", ["2025-06-01T08:00:00Z", "2025-06-01T09:00:00Z"])
def test_option_expiring_today_is_intrinsic_at_and_after_0800(time: str) -> None:
    # Short 1 BTC-1JUN25-50000-C sold at 100, index 52,000: settled at intrinsic 2,000, so
    # equity = 100,000 - (2,000 - 100) = 98,100 and no margin is left under any model.
    doc = portfolio_doc(account("a", [("BTC-1JUN25-50000-C", -1, 100)]))
    market = market_doc(timestamp=time)
    market["underlyings"]["BTC"]["index"] = 52000
    for model, (equity, im, mm) in _margins(doc, market).items():
        assert equity == pytest.approx(98100.0, rel=1e-15), model
        assert (im, mm) == (0.0, 0.0), model


def test_settlement_price_from_the_market_wins_over_the_index() -> None:
    # Same short call and a long 1JUN25 put K = 53,000 bought at 500; settlement 51,000:
    # call intrinsic 1,000, put 2,000: equity = 100,000 - (1,000 - 100) + (2,000 - 500).
    doc = portfolio_doc(account("a", [("BTC-1JUN25-50000-C", -1, 100),
                                      ("BTC-1JUN25-53000-P", 1, 500)]))
    market = market_doc(timestamp="2025-06-01T12:00:00Z",
                        settlements={"BTC-1JUN25": 51000})
    market["underlyings"]["BTC"]["index"] = 52000
    for model, (equity, im, mm) in _margins(doc, market).items():
        assert equity == pytest.approx(100000 - 900 + 1500, rel=1e-15), model
        assert (im, mm) == (0.0, 0.0), model


def test_option_an_hour_before_expiry_is_live() -> None:
    doc = portfolio_doc(account("a", [("BTC-1JUN25-50000-C", -1, 100)]))
    bound = bind(doc, market_doc(timestamp="2025-06-01T07:00:00Z"))
    assert bound.years[0] == pytest.approx(3600 / (365 * 86400), rel=1e-15)
    assert bool(bound.live[0])
    assert get_model("portfolio").compute(bound, NO_HAIRCUTS).initial_margin[0] > 0


def test_expired_future_settles_and_leaves_the_live_book_as_it_was() -> None:
    # 2 BTC-27DEC24 bought at 60,000, against a 2025-06-01 market (index 50,000, no settlement
    # given): settled at 50,000, P&L -20,000 in equity, no margin. Beside a live perp, every
    # model's margin is the perp's alone.
    expired = [("BTC-27DEC24", 2, 60000)]
    perp = [("BTC-PERP", -1, 50000)]
    market = market_doc()
    alone = _margins(portfolio_doc(account("a", expired)), market)
    for model, (equity, im, mm) in alone.items():
        assert equity == pytest.approx(100000 - 20000, rel=1e-15), model
        assert (im, mm) == (0.0, 0.0), model
    both = _margins(portfolio_doc(account("a", expired + perp)), market)
    live = _margins(portfolio_doc(account("a", perp)), market)
    for model in MODELS:
        assert both[model][1:] == pytest.approx(live[model][1:], rel=1e-12), model
        assert both[model][0] == pytest.approx(live[model][0] - 20000, rel=1e-12), model


def test_settled_positions_have_no_notional_or_greeks() -> None:
    from margin_engine.margin.greeks import account_greeks

    doc = portfolio_doc(account("a", [("BTC-27DEC24", 2, 60000),
                                      ("BTC-30MAY25-50000-P", -3, 900)]))
    bound = bind(doc, market_doc())
    assert bound.account_gross_notional()[0] == 0.0
    greeks = account_greeks(bound)
    assert greeks["delta"][0, 0] == 0.0
    assert greeks["gamma"][0, 0] == 0.0
    assert greeks["vega"][0, 0] == 0.0


def test_liquidation_price_keeps_settled_cash_fixed() -> None:
    # Long 1 BTC-PERP from 50,000 with 10,000 USDC and a settled short future (2 BTC-27DEC24 sold
    # at 40,000, settled at the 50,000 index: -20,000 cash). Equity(S) = 10,000 - 20,000 +
    # (S - 50,000) must equal MM = 0.16 x 0.8 x S: S = 60,000 / 0.872 = 68,807.34 (the settled
    # -20,000 does not move with S; if it did, the root would differ).
    from margin_engine.liquidation.price import liquidation_prices

    doc = portfolio_doc(account("a", [("BTC-PERP", 1, 50000), ("BTC-27DEC24", -2, 40000)],
                                collateral={"USDC": 10000}))
    bound = bind(doc, market_doc())
    prices = liquidation_prices(bound, "portfolio", NO_HAIRCUTS)
    assert prices[0, 0] == pytest.approx(60000 / 0.872, rel=1e-9)


def test_the_command_line_says_which_expiries_it_settled_at_the_index(tmp_path: Path) -> None:
    """A market dated after an expiry the book holds, with no settlement price for it, settles
    it at the index: a naked short call at intrinsic value, no margin. The command said
    nothing of it (a market whose year was mistyped, 2200, took the margin of every option of
    the book to 0); it now names each expiry on stderr, the JSON on stdout unchanged."""
    doc = portfolio_doc(account("a", [("BTC-27JUN25-60000-C", -5, 900), ("BTC-PERP", 1, 50000),
                                      ("ETH-26SEP25", 2, 2000)]))
    portfolio = tmp_path / "p.json"
    portfolio.write_text(json.dumps(doc))
    runner = CliRunner()

    def compute(market: dict[str, Any]) -> Any:
        path = tmp_path / "m.json"
        path.write_text(json.dumps(market))
        done = runner.invoke(app, ["compute", str(portfolio), "--market", str(path), "--json"])
        assert done.exit_code == 0, done.output
        return done

    live = compute(market_doc())
    assert live.stderr == ""
    later = compute(market_doc(timestamp="2200-01-01T00:00:00Z"))
    assert "2200-01-01T00:00:00Z" in later.stderr
    assert "BTC 2025-06-27, ETH 2025-09-26, held in the book" in later.stderr
    # the perp alone is margined: 0.16 x 50,000 (its mark is the index)
    assert json.loads(later.stdout)["accounts"][0]["initial_margin"] == pytest.approx(8000.0)
    priced = compute(market_doc(timestamp="2025-07-01T00:00:00Z",
                                settlements={"BTC-27JUN25": 61000}))
    assert priced.stderr == ""  # ETH 26SEP25 is live, BTC 27JUN25 has its price
    one = compute(market_doc(timestamp="2025-07-01T00:00:00Z"))
    assert "after the expiry of BTC 2025-06-27, held" in one.stderr
