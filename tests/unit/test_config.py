"""Risk config: defaults, JSON and TOML round trips, unknown fields refused, overrides used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from margin_engine.core.errors import ConfigError
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import get_model
from tests.conftest import account, bind, portfolio_doc


def test_round_trips_through_json_and_toml(tmp_path: Path) -> None:
    config = RiskConfig()
    (tmp_path / "r.json").write_text(config.to_json())
    (tmp_path / "r.toml").write_text(config.to_toml())
    assert RiskConfig.load(tmp_path / "r.json") == config
    assert RiskConfig.load(tmp_path / "r.toml") == config


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("[portfolio]\nmax_cross_ofset = 0.3\n")
    with pytest.raises(ConfigError) as caught:
        RiskConfig.load(path)
    assert "portfolio.max_cross_ofset" in str(caught.value)
    assert str(path) in str(caught.value)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        RiskConfig.from_dict({"portfolio": {"max_cross_offset": 1.5}})
    with pytest.raises(ConfigError, match="ascending"):
        RiskConfig.from_dict({"isolated": {"tiers": [
            {"up_to": 5e6, "initial_rate": 0.02}, {"up_to": 1e6, "initial_rate": 0.04}]}})


def test_a_penalty_above_the_closed_notional_is_refused() -> None:
    """Before: a penalty rate of 5 (500 % of the closed notional) was taken."""
    with pytest.raises(ConfigError,
                       match=r"a fraction of the closed notional in \[0, 1\]") as caught:
        RiskConfig.from_dict({"liquidation": {"penalty_rate": 5}})
    assert caught.value.field == "liquidation.penalty_rate"
    assert RiskConfig.from_dict({"liquidation": {"penalty_rate": 1}}).liquidation.penalty_rate == 1


@pytest.mark.parametrize(("section", "values", "field", "interval"), [
    ("portfolio", {"vol_shocks": [-2.0, 0.0, 0.5]}, "portfolio.vol_shocks", "[-1, 10]"),
    ("portfolio", {"extended_weight": 50}, "portfolio.extended_weight", "[0, 1]"),
    ("portfolio", {"vol_shock_reference_days": 0}, "portfolio.vol_shock_reference_days",
     "(0, 3650]"),
    ("portfolio", {"vol_shock_power_short": 1e15}, "portfolio.vol_shock_power_short", "[0, 1]"),
    ("portfolio", {"option_contingency_rate": 2}, "portfolio.option_contingency_rate", "[0, 1]"),
    ("isolated", {"option_initial_base": 7}, "isolated.option_initial_base", "[0, 1]"),
    ("cross", {"hedge_initial_rate": 3}, "cross.hedge_initial_rate", "[0, 1]"),
    ("var", {"maintenance_fraction": 4}, "var.maintenance_fraction", "(0, 1]"),
    ("var", {"ewma_lambda": 1.5}, "var.ewma_lambda", "(0, 1]"),
    ("var", {"scenarios": 0.5}, "var.scenarios", "[1, 1e+07]"),
    ("var", {"apc_buffer": 50}, "var.apc_buffer", "[0, 1]"),
    ("liquidation", {"target_buffer": 0}, "liquidation.target_buffer", "(0, 100]"),
    ("liquidation", {"breaker": {"mm_buffer": 0}}, "liquidation.breaker.mm_buffer", "(0, 1]"),
    ("liquidation", {"breaker": {"half_life_seconds": 0}},
     "liquidation.breaker.half_life_seconds", "(0, 1e+09]"),
    ("liquidation", {"breaker": {"max_multiplier": 0.5}}, "liquidation.breaker.max_multiplier",
     "[1, 1000]"),
    ("haircuts", {"assets": {"BTC": {"annual_vol": 50}}}, "haircuts.assets.BTC.annual_vol",
     "[0, 10]"),
])
def test_model_numbers_out_of_what_they_mean_are_refused(section: str, values: dict[str, object],
                                                         field: str, interval: str) -> None:
    """Before: each was taken (a vol shock of -200 %, a tail weight of 50, an option IM of 700 %
    of the index, MM at four times IM under var)."""
    with pytest.raises(ConfigError) as caught:
        RiskConfig.from_dict({section: values})
    assert caught.value.field == field
    assert f"a number in {interval}" in str(caught.value)


def test_cross_hedge_mm_above_im_and_tier_rates_above_one_are_refused() -> None:
    with pytest.raises(ConfigError, match="MM above IM") as caught:
        RiskConfig.from_dict({"cross": {"hedge_maintenance_rate": 0.02}})
    assert caught.value.field == "cross.hedge_maintenance_rate"
    with pytest.raises(ConfigError) as caught:
        RiskConfig.from_dict({"isolated": {"tiers": [{"up_to": "inf", "initial_rate": 1.5}]}})
    assert caught.value.field == "isolated.tiers[0].initial_rate"
    edges = RiskConfig.from_dict({"portfolio": {"vol_shocks": [-1.0, 0.0, 10.0],
                                                "extended_weight": 1.0},
                                  "isolated": {"tiers": [{"up_to": "inf", "initial_rate": 1.0}]},
                                  "var": {"maintenance_fraction": 1.0, "ewma_lambda": 1.0}})
    assert edges.portfolio.vol_shocks == (-1.0, 0.0, 10.0)


def test_overrides_change_the_margin(tmp_path: Path) -> None:
    config = RiskConfig.from_dict({
        "isolated": {"tiers_by_underlying": {"BTC": [{"up_to": "inf", "initial_rate": 0.05}]}},
        "portfolio": {"price_moves": [-0.1, 0.0, 0.1], "extended_moves": [-0.2, 0.3]},
        "haircuts": {"enabled": False},
    })
    assert json.loads(config.to_json())["isolated"]["tiers_by_underlying"]["BTC"][0][
        "maintenance_rate"] == 0.025
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", 1, 50000)])))
    assert get_model("isolated").compute(bound, config).initial_margin[0] == pytest.approx(2500)
    # Worst of -10 % (5,000) and -20 % x 1/3 (3,333): 5,000.
    assert get_model("portfolio").compute(bound, config).initial_margin[0] == pytest.approx(5000)


def test_liquidation_and_breaker_settings_live_in_the_risk_config(tmp_path: Path) -> None:
    config = RiskConfig.from_dict({"liquidation": {
        "penalty_rate": 0.002, "shortfall": "socialised",
        "breaker": {"enabled": True, "mm_buffer": 0.005, "half_life_seconds": 600}}})
    assert config.liquidation.breaker.enabled
    assert config.liquidation.breaker.mm_buffer == 0.005
    (tmp_path / "r.toml").write_text(config.to_toml())
    assert RiskConfig.load(tmp_path / "r.toml") == config
    with pytest.raises(ConfigError, match="adl"):
        RiskConfig.from_dict({"liquidation": {"shortfall": "pray"}})
    with pytest.raises(ConfigError, match="liquidation.breaker.enabeld"):
        RiskConfig.from_dict({"liquidation": {"breaker": {"enabeld": True}}})
