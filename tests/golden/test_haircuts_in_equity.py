"""Collateral haircuts in the equity every model compares with IM and MM, the portfolio model's
stablecoin depeg scenario, and no double charge on coin collateral (arithmetic by hand)."""

from __future__ import annotations

import math

import pytest

from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import get_model
from tests.conftest import NO_HAIRCUTS, account, bind, market_doc, portfolio_doc

Z99 = 2.3263478740408408
H_VOL_BTC = Z99 * 0.52 * math.sqrt(2 / 365)  # 0.08954: volatility part over the 2-day MPOR
H_VOL_USDC = Z99 * 0.03 * math.sqrt(2 / 365)  # 0.00517
# the depeg scenario is opt-in: every stablecoin at 0.87, its loss at weight 1/3
DEPEG = RiskConfig.from_dict({"haircuts": {"depeg_weight": 1 / 3}})


def _adjusted(model: str, doc: dict, config: RiskConfig | None = None
              ) -> tuple[float, float, float]:
    bound = bind(doc, market_doc())
    result = get_model(model).compute(bound, config or RiskConfig())
    equity = bound.equity()
    return (float(equity[0]), float(result.adjusted_equity(equity)[0]),
            float(result.initial_margin[0]))


def test_btc_collateral_is_haircut_under_every_model_without_a_double_charge() -> None:
    # 1 BTC of collateral (50,000 USD) against a short 1 BTC-PERP from 50,000: equity 50,000.
    # isolated / cross do not move the coin: the whole haircut, vol 0.08954 + liquidity
    # 0.1 sqrt(50,000 / 2e10) = 0.000158. The portfolio and sensitivity models revalue the coin
    # in their own scenarios, so only the liquidity part is taken.
    doc = portfolio_doc(account("a", [("BTC-PERP", -1, 50000)], collateral={"BTC": 1}))
    h_liq = 0.1 * math.sqrt(50000 / 2e10)
    for model, rate in (("isolated", H_VOL_BTC + h_liq), ("cross", H_VOL_BTC + h_liq),
                        ("portfolio", h_liq), ("sensitivity", h_liq)):
        equity, adjusted, _ = _adjusted(model, doc)
        assert equity == pytest.approx(50000.0, rel=1e-15), model
        assert adjusted < equity, model
        assert adjusted == pytest.approx(50000 * (1 - rate), rel=1e-12), model


def test_portfolio_coin_collateral_pays_the_scan_not_the_scan_plus_a_vol_haircut() -> None:
    # 1 BTC of collateral alone: the scan charges its -16 % move (8,000 of IM) and equity
    # loses only the liquidity part; a vol haircut on top (4,477) would charge the move twice.
    doc = portfolio_doc(account("a", [], collateral={"BTC": 1}))
    equity, adjusted, initial = _adjusted("portfolio", doc)
    assert initial == pytest.approx(8000.0, rel=1e-12)
    assert equity - adjusted == pytest.approx(50000 * 0.1 * math.sqrt(50000 / 2e10),
                                              rel=1e-12)
    assert equity - adjusted < 0.01 * 50000 * H_VOL_BTC


def test_stablecoin_depeg_is_a_portfolio_scenario() -> None:
    # 100,000 USDC at 1.00 and a long 1 BTC-PERP at 50,000: the scan's 8,000 plus the depeg
    # scenario, USDC at 0.87 at weight 1/3: 100,000 x 0.13 / 3 = 4,333.33 -> IM 12,333.33,
    # MM 0.8 x IM. Equity after haircuts: liquidity part only under portfolio
    # (0.1 sqrt(1e5 / 5e9) = 0.000447), vol part too under cross (0.00517 + 0.000447).
    doc = portfolio_doc(account("a", [("BTC-PERP", 1, 50000)], collateral={"USDC": 100000}))
    bound = bind(doc, market_doc())
    result = get_model("portfolio").compute(bound, DEPEG)
    assert result.initial_margin[0] == pytest.approx(8000 + 100000 * 0.13 / 3, rel=1e-12)
    assert result.maintenance_margin[0] == pytest.approx(0.8 * result.initial_margin[0],
                                                         rel=1e-12)
    assert result.per_account["depeg"][0] == pytest.approx(100000 * 0.13 / 3, rel=1e-12)
    h_liq = 0.1 * math.sqrt(1e5 / 5e9)
    equity = bound.equity()
    assert result.adjusted_equity(equity)[0] == pytest.approx(100000 * (1 - h_liq), rel=1e-12)
    _, cross_adjusted, _ = _adjusted("cross", doc)
    assert cross_adjusted == pytest.approx(100000 * (1 - H_VOL_USDC - h_liq), rel=1e-12)
    # A depeg deeper than the config's scenario price is not charged below it: at 0.80 the
    # scenario loss is 0.
    market = market_doc(assets={"USDC": {"price": 0.80}, "BTC": {"price": 50000},
                                "ETH": {"price": 2000}})
    deep = get_model("portfolio").compute(bind(doc, market), DEPEG)
    assert deep.per_account["depeg"][0] == 0.0


def test_haircuts_off_restore_the_mark_to_market_equity() -> None:
    doc = portfolio_doc(account("a", [("BTC-PERP", 1, 50000)],
                                collateral={"USDC": 100000, "BTC": 1}))
    for model in ("isolated", "cross", "portfolio", "sensitivity"):
        equity, adjusted, initial = _adjusted(model, doc, NO_HAIRCUTS)
        assert adjusted == equity, model
    assert _adjusted("portfolio", doc, NO_HAIRCUTS)[2] == pytest.approx(
        _adjusted("portfolio", portfolio_doc(account("a", [("BTC-PERP", 1, 50000)],
                                                     collateral={"BTC": 1})), NO_HAIRCUTS)[2])


def test_haircut_config_round_trip_and_refusals() -> None:
    from margin_engine.core.errors import ConfigError

    config = RiskConfig.from_dict({"haircuts": {
        "depeg_price": 0.9, "assets": {"BTC": {"annual_vol": 0.6}, "SOL": {
            "annual_vol": 1.0, "average_daily_volume_usd": 2e9}}}})
    assert config.haircuts.assets["BTC"].annual_vol == 0.6
    assert config.haircuts.assets["BTC"].average_daily_volume_usd == 2e10  # kept
    assert config.haircuts.assets["SOL"].annual_vol == 1.0
    assert RiskConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="haircuts.assets.SOL"):
        RiskConfig.from_dict({"haircuts": {"assets": {"SOL": {"annual_vol": 1.0}}}})
    with pytest.raises(ConfigError, match="haircuts.enabled"):
        RiskConfig.from_dict({"haircuts": {"enabled": "no"}})
    with pytest.raises(ConfigError, match="haircuts.colour"):
        RiskConfig.from_dict({"haircuts": {"colour": 1}})


def test_explain_lists_each_assets_haircut() -> None:
    # The explanation values each balance on its own (scalar) and must agree with the model.
    from margin_engine.margin.explain import explain_account

    doc = portfolio_doc(account("a", [("BTC-PERP", -1, 50000)],
                                collateral={"BTC": 1, "USDC": 20000}))
    bound = bind(doc, market_doc())
    for model, btc_vol in (("cross", H_VOL_BTC), ("portfolio", 0.0)):
        result = get_model(model).compute(bound, DEPEG)
        explained = explain_account(bound, DEPEG, result, 0)
        lines = {line["asset"]: line for line in explained["collateral"]}
        assert lines["BTC"]["volatility"] == pytest.approx(btc_vol, abs=1e-15), model
        assert lines["BTC"]["haircut_usd"] == pytest.approx(
            50000 * (btc_vol + 0.1 * math.sqrt(50000 / 2e10)), rel=1e-12), model
        assert explained["adjusted_equity"] == pytest.approx(
            float(result.adjusted_equity(bound.equity())[0]), rel=1e-12), model
    portfolio = explain_account(bound, DEPEG,
                                get_model("portfolio").compute(bound, DEPEG), 0)
    assert portfolio["stablecoin_depeg"] == pytest.approx(20000 * 0.13 / 3, rel=1e-12)


def test_bad_haircut_settings_are_refused() -> None:
    from margin_engine.core.errors import ConfigError

    for bad, field in (({"confidence": 1.0}, "haircuts.confidence"),
                       ({"chains": {"native": {"haircut": 1.5}}}, "haircuts.chains.native"),
                       ({"assets": {"BTC": {"max_haircut": 2}}}, "haircuts.assets.BTC"),
                       ({"unknown_chain_tier": "nowhere"}, "haircuts.unknown_chain_tier")):
        with pytest.raises(ConfigError, match=field):
            RiskConfig.from_dict({"haircuts": bad})


def test_any_collateral_symbol_is_margined_with_the_default_haircut() -> None:
    # SOL collateral (priced in the market, not an underlying) under cross: 100 SOL at 150
    # = 15,000 USD, haircut 2.3263 x 1.0 x sqrt(2/365) + 0.1 sqrt(15,000 / 1e9).
    doc = portfolio_doc(account("a", [("BTC-PERP", 1, 50000)], collateral={"SOL": 100}))
    market = market_doc(assets={"USDC": {"price": 1.0}, "BTC": {"price": 50000},
                                "ETH": {"price": 2000}, "SOL": {"price": 150}})
    bound = bind(doc, market)
    result = get_model("cross").compute(bound, RiskConfig())
    rate = Z99 * math.sqrt(2 / 365) + 0.1 * math.sqrt(15000 / 1e9)
    assert float(result.adjusted_equity(bound.equity())[0]) == pytest.approx(
        15000 * (1 - rate), rel=1e-12)
