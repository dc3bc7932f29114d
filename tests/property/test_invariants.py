"""Invariants on random books (hypothesis): model ordering, monotonicity, kernel = reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from margin_engine.margin.config import RiskConfig
from margin_engine.margin.explain import explain_portfolio
from margin_engine.margin.registry import MODEL_NAMES, get_model
from tests.conftest import account, bind, market_doc, portfolio_doc

EXPIRIES = ("6JUN25", "27JUN25", "26SEP25", "26DEC25")
MARKET = market_doc(correlation={"BTC": {"ETH": 0.7}},
                    marks={"BTC-26SEP25": 50800, "ETH-26DEC25": 2050})


@st.composite
def instrument(draw: Any) -> str:
    u = draw(st.sampled_from(["BTC", "ETH"]))
    spot = 50000 if u == "BTC" else 2000
    kind = draw(st.sampled_from(["PERP", "FUT", "OPT", "OPT", "OPT"]))
    if kind == "PERP":
        return f"{u}-PERP"
    expiry = draw(st.sampled_from(EXPIRIES))
    if kind == "FUT":
        return f"{u}-{expiry}"
    strike = int(spot * draw(st.sampled_from([0.6, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5])))
    return f"{u}-{expiry}-{strike}-{draw(st.sampled_from('CP'))}"


@st.composite
def book(draw: Any) -> dict[str, Any]:
    accounts = []
    for k in range(draw(st.integers(1, 4))):
        names = draw(st.lists(instrument(), min_size=1, max_size=6, unique=True))
        positions = [(n, draw(st.floats(-20, 20).filter(lambda x: abs(x) > 1e-3)),
                      draw(st.floats(1, 60000))) for n in names]
        collateral = {"USDC": draw(st.floats(0, 1e6))}
        if draw(st.booleans()):
            collateral["BTC"] = draw(st.floats(0, 5))
        accounts.append(account(f"a{k}", positions, collateral))
    return portfolio_doc(*accounts)


SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(doc=book())
def test_im_at_least_mm_at_least_zero_and_cross_at_most_isolated(doc: dict[str, Any]) -> None:
    bound = bind(doc, MARKET)
    results = {m: get_model(m).compute(bound, RiskConfig()) for m in MODEL_NAMES}
    for result in results.values():
        assert np.all(result.maintenance_margin >= 0.0)
        assert np.all(result.initial_margin >= result.maintenance_margin)
    assert np.all(results["cross"].initial_margin <=
                  results["isolated"].initial_margin * (1 + 1e-12) + 1e-9)
    assert np.all(results["cross"].maintenance_margin <=
                  results["isolated"].maintenance_margin * (1 + 1e-12) + 1e-9)


@SETTINGS
@given(doc=book())
def test_fused_kernel_matches_scalar_reference(doc: dict[str, Any]) -> None:
    bound = bind(doc, MARKET)
    result = get_model("portfolio").compute(bound, RiskConfig())  # haircuts and depeg on
    for a in range(bound.account_count):
        slow = explain_portfolio(bound, RiskConfig(), a)
        assert result.initial_margin[a] == pytest.approx(slow["initial_margin"], rel=1e-9,
                                                         abs=1e-7)


@SETTINGS
@given(doc=book(), scale=st.floats(1.0, 4.0))
def test_margin_is_monotone_in_size(doc: dict[str, Any], scale: float) -> None:
    for acc in doc["accounts"]:
        acc["collateral"] = {"USDC": 1000}  # coin collateral would hedge; keep it out here
    bigger = {**doc, "accounts": [
        {**acc, "positions": [{**p, "size": p["size"] * scale} for p in acc["positions"]]}
        for acc in doc["accounts"]]}
    small, large = bind(doc, MARKET), bind(bigger, MARKET)
    for model in MODEL_NAMES:
        a = get_model(model).compute(small, RiskConfig())
        b = get_model(model).compute(large, RiskConfig())
        assert np.all(b.initial_margin >= a.initial_margin * (1 - 1e-12) - 1e-9), model
        assert np.all(b.maintenance_margin >= a.maintenance_margin * (1 - 1e-12) - 1e-9), model


@SETTINGS
@given(doc=book(), btc=st.floats(30000, 80000), eth=st.floats(1200, 3500))
def test_incremental_portfolio_recompute_equals_full(doc: dict[str, Any], btc: float,
                                                     eth: float) -> None:
    # The monitor's fast path: after a move of one underlying, recomputing only its cells
    # gives the full model's numbers.
    from margin_engine.book.bound import reprice
    from margin_engine.liquidation.shocks import with_index
    from margin_engine.margin.portfolio import PortfolioModel

    bound = bind(doc, MARKET)
    model = PortfolioModel()
    previous = model.compute(bound, RiskConfig())
    for underlying, level in (("BTC", btc), ("ETH", eth)):
        if underlying not in bound.underlyings:
            continue
        bound = reprice(bound, with_index(bound.market, {}, underlying, level))
        full = model.compute(bound, RiskConfig())
        previous = model.recompute(bound, RiskConfig(), previous, underlying)
        np.testing.assert_allclose(previous.initial_margin, full.initial_margin, rtol=1e-12,
                                   atol=1e-9)
