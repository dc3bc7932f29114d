"""Inverse contracts, contract sizes, shorthand names and expiry at 08:00 UTC."""

from __future__ import annotations

import pytest

from margin_engine.core.timeutil import expiry_code_to_ns, ns_to_iso
from margin_engine.domain.instruments import InstrumentKind, OptionRight, parse_shorthand
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import get_model
from margin_engine.pricing.reference import black76_price
from tests.conftest import account, bind, market_doc, portfolio_doc

INVERSE = {
    "BTC-PERP-INV": {"kind": "perpetual", "underlying": "BTC", "settlement": "inverse",
                     "contract_size": 10},
    "BTC-27JUN25-60000-C-INV": {"kind": "option", "underlying": "BTC", "settlement": "inverse",
                                "contract_size": 1, "expiry": "2025-06-27T08:00:00Z",
                                "strike": 60000, "right": "call"},
    "ETH-PERP-X": {"kind": "perpetual", "underlying": "ETH", "contract_size": 0.01},
}


def test_shorthand_names_resolve_to_linear_contract_size_one() -> None:
    option = parse_shorthand("BTC-27JUN25-70000-C")
    assert option is not None
    assert option.kind is InstrumentKind.OPTION
    assert option.right is OptionRight.CALL
    assert option.strike == 70000.0
    assert option.contract_size == 1.0
    assert ns_to_iso(option.expiry_ns or 0) == "2025-06-27T08:00:00Z"
    assert parse_shorthand("ETH-PERP").kind is InstrumentKind.PERPETUAL  # type: ignore[union-attr]
    assert parse_shorthand("BTC").kind is InstrumentKind.SPOT  # type: ignore[union-attr]
    assert parse_shorthand("btc-perp") is None
    assert ns_to_iso(expiry_code_to_ns("7JUN24")) == "2024-06-07T08:00:00Z"


def test_inverse_perp_pnl_is_coin_pnl_at_the_mark() -> None:
    # 1,000 contracts of 10 USD long from 50,000, mark 55,000:
    # coin P&L = 10,000 x (1/50,000 - 1/55,000) = 0.0181818 BTC, x 55,000 = 1,000 USD.
    market = market_doc(marks={"BTC-PERP-INV": 55000})
    bound = bind(portfolio_doc(account("a", [("BTC-PERP-INV", 1000, 50000)], {"USDC": 0}),
                               instruments=INVERSE), market)
    assert bound.equity()[0] == pytest.approx(10000 * (1 / 50000 - 1 / 55000) * 55000, rel=1e-12)
    # Notional of an inverse contract is its USD face: 10,000 -> isolated IM 2 % = 200.
    assert bound.gross_notional[0] == 10000.0
    iso = get_model("isolated").compute(bound, RiskConfig())
    assert iso.initial_margin[0] == pytest.approx(200.0, rel=1e-12)
    # Portfolio: -16 % of the mark: USD value of the coin P&L moves by q x dF,
    # q = 10,000 / 50,000 = 0.2 -> 0.2 x 55,000 x 0.16 = 1,760.
    port = get_model("portfolio").compute(bound, RiskConfig())
    assert port.initial_margin[0] == pytest.approx(0.2 * 55000 * 0.16, rel=1e-12)


def test_inverse_option_premium_is_in_coin() -> None:
    # Short 2 inverse calls sold at 0.01 BTC each; index 50,000 -> entry 500 USD each.
    t = (26 * 86400 + 8 * 3600) / (365 * 86400)
    mark = black76_price(50000, 60000, t, 0.5, True)
    bound = bind(portfolio_doc(account("a", [("BTC-27JUN25-60000-C-INV", -2, "0.01")],
                                       {"USDC": 0}), instruments=INVERSE))
    assert bound.equity()[0] == pytest.approx(-2 * (mark - 0.01 * 50000), rel=1e-12)
    # Same USD risk as the linear option of 1 coin.
    linear = bind(portfolio_doc(account("a", [("BTC-27JUN25-60000-C", -2, 500)], {"USDC": 0})))
    for model in ("isolated", "portfolio"):
        a = get_model(model).compute(bound, RiskConfig()).initial_margin[0]
        b = get_model(model).compute(linear, RiskConfig()).initial_margin[0]
        assert a == pytest.approx(b, rel=1e-12), model


def test_contract_size_scales_everything() -> None:
    # 300 contracts of 0.01 ETH = 3 ETH: same as 3 ETH-PERP.
    small = bind(portfolio_doc(account("a", [("ETH-PERP-X", 300, 1900)]), instruments=INVERSE))
    plain = bind(portfolio_doc(account("a", [("ETH-PERP", 3, 1900)])))
    assert small.equity()[0] == pytest.approx(plain.equity()[0], rel=1e-12)
    for model in ("isolated", "cross", "portfolio"):
        a = get_model(model).compute(small, RiskConfig()).initial_margin[0]
        b = get_model(model).compute(plain, RiskConfig()).initial_margin[0]
        assert a == pytest.approx(b, rel=1e-12), model


def test_vol_by_expiry_is_linear_in_t_and_flat_outside() -> None:
    market = market_doc()
    market["underlyings"]["BTC"]["vol"] = {"type": "atm_by_expiry",
                                           "points": {"27JUN25": 0.6, "26SEP25": 0.8}}
    bound = bind(portfolio_doc(account("a", [
        ("BTC-6JUN25-50000-C", 1, 1), ("BTC-25JUL25-50000-C", 1, 1),
        ("BTC-26DEC25-50000-C", 1, 1)])), market)
    names = [i.name for i in bound.book.instruments.instruments]
    year = 365 * 86400
    t_jun, t_sep = (26 * 86400 + 8 * 3600) / year, (117 * 86400 + 8 * 3600) / year
    t_jul = (54 * 86400 + 8 * 3600) / year
    sigma = dict(zip(names, bound.sigma, strict=True))
    assert sigma["BTC-6JUN25-50000-C"] == 0.6
    assert sigma["BTC-26DEC25-50000-C"] == 0.8
    assert sigma["BTC-25JUL25-50000-C"] == pytest.approx(
        0.6 + 0.2 * (t_jul - t_jun) / (t_sep - t_jun), rel=1e-12)
