"""Models are chosen through the MarginModel protocol only: every model explains itself, says
whether it needs history and whether it has an incremental path; the CLI has a printer for
every model's explanation; config choices are enums checked when the config is made."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from margin_engine.book.bound import BoundBook
from margin_engine.cli.render import EXPLANATION_PRINTERS
from margin_engine.core.errors import InputError
from margin_engine.data.prices import PriceSeries
from margin_engine.liquidation.cascade import CascadeConfig
from margin_engine.margin.config import (
    AdlRanking,
    ApcRule,
    LiquidationConfig,
    PortfolioConfig,
    RiskConfig,
    ShortfallRule,
    TailMeasure,
    VarConfig,
    VolDynamics,
)
from margin_engine.margin.explain import explain_account
from margin_engine.margin.protocol import MarginModel, MarginResult
from margin_engine.margin.registry import (
    ALL_MODEL_NAMES,
    MODEL_NAMES,
    ModelSelection,
    every_model_name,
    from_history,
    get_model,
    needs_history,
)
from margin_engine.margin.run import MODE_MODELS, run_models
from margin_engine.margin.var import VarHistory
from tests.conftest import account, bind, portfolio_doc

DAY = 86_400 * 10**9


def _book() -> BoundBook:
    return bind(portfolio_doc(
        account("a", [("BTC-PERP", 1, 50000), ("BTC-27JUN25-60000-C", -2, 0)]),
        account("b", [("ETH-PERP", -10, 2000)], mode="cross")))


def _history(days: int = 300) -> VarHistory:
    rng = np.random.default_rng(7)

    def series(start: float) -> PriceSeries:
        closes = start * np.exp(np.cumsum(0.03 * rng.standard_normal(days)))
        t = ((np.arange(days) + 18_000) * DAY).astype(np.int64)
        return PriceSeries(source="synthetic", time_ns=t, close=closes, open=closes,
                           high=closes, low=closes, volume=np.zeros(days))

    return VarHistory.from_series({"BTC": series(50000.0), "ETH": series(2000.0)})


def _every_model() -> list[MarginModel]:
    """Every model: the default instances and the history-made ones."""
    made = [from_history(name, _history()) for name in ALL_MODEL_NAMES if needs_history(name)]
    return [*(get_model(name) for name in MODEL_NAMES), *made]


def test_every_model_explains_itself_and_has_a_printer() -> None:
    bound, config = _book(), RiskConfig()
    models = _every_model()
    assert [m.name for m in models] == list(ALL_MODEL_NAMES)
    for model in models:
        result = model.compute(bound, config)
        explanation = model.explain(bound, config, result, 0)
        assert explanation["model"] == model.name
        assert explanation["initial_margin"] == pytest.approx(float(result.initial_margin[0]),
                                                              rel=1e-6, abs=1e-6)
        assert model.name in EXPLANATION_PRINTERS, model.name


class _Recording:
    """A model that delegates to another and records the explain calls it gets."""

    def __init__(self, inner: MarginModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.revalues_coins = inner.revalues_coins
        self.needs_history = inner.needs_history
        self.incremental = inner.incremental
        self.calls: list[int] = []

    def compute(self, bound: BoundBook, config: RiskConfig) -> MarginResult:
        return self.inner.compute(bound, config)

    def recompute(self, bound: BoundBook, config: RiskConfig, previous: MarginResult,
                  underlying: str) -> MarginResult | None:
        return self.inner.recompute(bound, config, previous, underlying)

    def explain(self, bound: BoundBook, config: RiskConfig, result: MarginResult,
                account: int) -> dict[str, Any]:
        self.calls.append(account)
        return self.inner.explain(bound, config, result, account)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_explain_account_asks_the_model_it_is_given(name: str) -> None:
    bound, config = _book(), RiskConfig()
    model = _Recording(get_model(name))
    result = model.compute(bound, config)
    explanation = explain_account(bound, config, result, 1, model)
    assert model.calls == [1]
    assert explanation["model"] == name
    assert "collateral" in explanation
    assert "adjusted_equity" in explanation
    assert explain_account(bound, config, result, 1) == explanation  # the registered one


def test_recompute_is_none_without_an_incremental_path() -> None:
    bound, config = _book(), RiskConfig()
    incremental = []
    for model in _every_model():
        result = model.compute(bound, config)
        again = model.recompute(bound, config, result, "BTC")
        if model.incremental:
            incremental.append(model.name)
            assert again is not None
            np.testing.assert_array_equal(again.initial_margin, result.initial_margin)
        else:
            assert again is None, model.name
    assert incremental == ["portfolio"]


def test_history_models_have_no_default_instance() -> None:
    for model in _every_model():
        assert model.needs_history == needs_history(model.name)
    assert [n for n in ALL_MODEL_NAMES if needs_history(n)] == ["var"]
    with pytest.raises(InputError, match="price history for the var model"):
        get_model("var")
    with pytest.raises(InputError, match="made from price history"):
        from_history("portfolio", _history())
    built = {"var": from_history("var", _history())}
    assert every_model_name() == list(MODEL_NAMES)
    assert every_model_name(built) == [*MODEL_NAMES, "var"]
    assert get_model("var", built) is built["var"]


def test_model_selections() -> None:
    assert MODE_MODELS == ("isolated", "cross", "portfolio")
    run = run_models(_book(), RiskConfig(), [ModelSelection.ACCOUNT])
    assert list(run.results) == list(MODEL_NAMES)
    assert [run.model_of(a, ModelSelection.ACCOUNT) for a in range(2)] == ["portfolio", "cross"]
    assert run.model_of(0, "isolated") == "isolated"


@pytest.mark.parametrize(("make", "field", "value", "allowed"), [
    (lambda v: VarConfig(apc=v), "apc", "sometimes", [m.value for m in ApcRule]),
    (lambda v: VarConfig(measure=v), "measure", "cvar", ["es", "var"]),
    (lambda v: PortfolioConfig(vol_dynamics=v), "vol_dynamics", "sticky_delta",
     ["sticky_strike", "sticky_moneyness"]),
    (lambda v: LiquidationConfig(shortfall=v), "shortfall", "pray", ["adl", "socialised"]),
    (lambda v: LiquidationConfig(adl_ranking=v), "adl_ranking", "size",
     ["profit_x_leverage", "profit"]),
    (lambda v: CascadeConfig(shortfall=v), "shortfall", "pray", ["adl", "socialised"]),
])
def test_a_bad_choice_is_refused_by_the_config_itself(make: Any, field: str, value: str,
                                                      allowed: list[str]) -> None:
    with pytest.raises(InputError) as caught:
        make(value)
    assert caught.value.field == field
    assert caught.value.value == value
    assert caught.value.expected == f"one of {allowed}"


def test_choices_are_enums_and_stay_plain_strings_in_documents() -> None:
    liquidation = LiquidationConfig(shortfall="socialised", adl_ranking="profit")  # type: ignore[arg-type]
    assert liquidation.shortfall is ShortfallRule.SOCIALISED
    assert liquidation.adl_ranking is AdlRanking.PROFIT
    assert replace(VarConfig(), apc="floor").apc is ApcRule.FLOOR  # type: ignore[arg-type]
    config = RiskConfig.from_dict({"var": {"measure": "var", "apc": "buffer"},
                                   "portfolio": {"vol_dynamics": "sticky_moneyness"},
                                   "liquidation": {"shortfall": "socialised"}})
    assert config.var.measure is TailMeasure.VAR
    assert config.portfolio.vol_dynamics is VolDynamics.STICKY_MONEYNESS
    plain = config.to_dict()
    assert type(plain["var"]["apc"]) is str
    assert plain["var"]["apc"] == "buffer"
    assert type(plain["liquidation"]["shortfall"]) is str
    assert 'shortfall = "socialised"' in config.to_toml()
    assert RiskConfig.from_dict(plain) == config
    with pytest.raises(InputError, match="'var.apc'"):
        RiskConfig.from_dict({"var": {"apc": "sometimes"}})
