"""Hand-worked numbers that a wrong rate, bracket, Greek, tenor split or market binding changes:
tiers in every bracket and on every boundary, sensitivity inputs by bump-and-reprice, and the
portfolio reference binding the market itself (contingency groups, forwards with a basis)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from margin_engine.margin.config import RiskConfig
from margin_engine.margin.explain import explain_portfolio, explain_sensitivity
from margin_engine.margin.registry import get_model
from margin_engine.margin.sensitivity import instrument_sensitivities
from margin_engine.margin.sensitivity_params import SensitivityParams
from margin_engine.pricing.reference import black76_price
from tests.conftest import account, bind, market_doc, portfolio_doc

NOW = datetime(2025, 6, 1, tzinfo=UTC)  # market_doc's timestamp
NO_CASH = {"USDC": 0}  # no stablecoin balance: nothing but the positions is margined


def years_to(day: int, month: int, year: int = 2025) -> float:
    """Year fraction from NOW to 08:00 UTC of an expiry date."""
    return (datetime(year, month, day, 8, tzinfo=UTC) - NOW).total_seconds() / (365 * 86400)


def run(model: str, bound: Any) -> tuple[float, float]:
    result = get_model(model).compute(bound, RiskConfig())
    return float(result.initial_margin[0]), float(result.maintenance_margin[0])


# --- 1. Marginal tiers: IM 2 / 4 / 10 / 25 % on [0, 1M) / [1M, 5M) / [5M, 20M) / [20M, inf),
# MM half. (|notional| in USD, IM, MM), inside every bracket and on every boundary:
BRACKETS = [
    (500_000, 10_000, 5_000),  # 2 % x 0.5M
    (1_000_000, 20_000, 10_000),  # 2 % x 1M (boundary 1)
    (3_000_000, 100_000, 50_000),  # 20,000 + 4 % x 2M = 20,000 + 80,000
    (5_000_000, 180_000, 90_000),  # 20,000 + 4 % x 4M = 20,000 + 160,000 (boundary 2)
    (12_000_000, 880_000, 440_000),  # 180,000 + 10 % x 7M = 180,000 + 700,000
    (20_000_000, 1_680_000, 840_000),  # 180,000 + 10 % x 15M (boundary 3)
    (30_000_000, 4_180_000, 2_090_000),  # 1,680,000 + 25 % x 10M = 1,680,000 + 2,500,000
]
# Delta-one legs: the perp at the index 50,000, the future at its own mark 40,000 (notional is
# taken at the mark: 75 futures are 3M, not 3.75M).
FUTURE_MARK = market_doc(marks={"BTC-26SEP25": 40000})
LEGS = {"BTC-PERP": 50000.0, "BTC-26SEP25": 40000.0}


@pytest.mark.parametrize("model", ["isolated", "cross"])
@pytest.mark.parametrize("name", list(LEGS))
@pytest.mark.parametrize("side", [1, -1])
@pytest.mark.parametrize(("notional", "im", "mm"), BRACKETS)
def test_tier_charge_of_one_position(model: str, name: str, side: int, notional: float,
                                     im: float, mm: float) -> None:
    # One position: cross nets it with nothing, so both models charge the tiers on |notional|.
    size = side * notional / LEGS[name]
    bound = bind(portfolio_doc(account("a", [(name, size, LEGS[name])], NO_CASH)), FUTURE_MARK)
    assert float(bound.signed_notional[0]) == side * notional
    assert run(model, bound) == pytest.approx((im, mm), rel=1e-12)


@pytest.mark.parametrize("side", [1, -1])
@pytest.mark.parametrize(("notional", "im", "mm"), BRACKETS)
def test_cross_tiers_on_the_net_notional(side: int, notional: float, im: float,
                                         mm: float) -> None:
    # Perp of notional N + 0.5M against 12.5 futures of the other sign at 40,000 (0.5M):
    # net = N, hedged = 0.5M: IM = tiers(N) + 1 % x 0.5M = IM(N) + 5,000,
    # MM = MM(N) + 0.5 % x 0.5M = MM(N) + 2,500 (below the isolated sum, which adds the
    # 0.5M leg's own 10,000 on top of tiers(N + 0.5M) >= tiers(N) + 10,000).
    perp = side * (notional + 500_000) / 50000
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", perp, 50000),
                                             ("BTC-26SEP25", -side * 12.5, 40000)], NO_CASH)),
                 FUTURE_MARK)
    assert run("cross", bound) == pytest.approx((im + 5_000, mm + 2_500), rel=1e-12)


def test_cross_nets_per_underlying_only() -> None:
    # BTC long 3M and ETH short 3M (1,500 ETH-PERP at 2,000) do not net: each is charged
    # 100,000 IM / 50,000 MM on its own, as under isolated.
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", 60, 50000),
                                             ("ETH-PERP", -1500, 2000)], NO_CASH)))
    assert run("cross", bound) == pytest.approx((200_000, 100_000), rel=1e-12)
    assert run("isolated", bound) == pytest.approx((200_000, 100_000), rel=1e-12)


# --- 2. Sensitivity inputs by bump-and-reprice, tenor split by hand.
SENS_MARKET = market_doc(marks={"BTC-26SEP25": 51000}, correlation={"BTC": {"ETH": 0.7}})
SENS_POSITIONS = [
    ("BTC-6JUN25-50000-C", -3.0),  # 5.33 days: below 2w, all on 14 d
    ("BTC-27JUN25-45000-P", 5.0),  # 26.33 days: 14 d and 30 d
    ("BTC-26SEP25-60000-C", -4.0),  # 117.33 days, on the future's mark F = 51,000
    ("BTC-26SEP25", 2.0),
    ("BTC-PERP", -1.0),
    ("ETH-26DEC25-2000-P", -10.0),  # 208.33 days: 182 d and 365 d
    ("ETH-30JUN28-2500-C", 20.0),  # 3.08 years: beyond 2y, all on 730 d
    ("ETH-PERP", 5.0),
]
# (underlying, F, K, years, sigma, is call) of every option; the flat vols are 0.5 and 0.6.
SENS_OPTIONS = {
    "BTC-6JUN25-50000-C": ("BTC", 50000.0, 50000.0, years_to(6, 6), 0.5, True),
    "BTC-27JUN25-45000-P": ("BTC", 50000.0, 45000.0, years_to(27, 6), 0.5, False),
    "BTC-26SEP25-60000-C": ("BTC", 51000.0, 60000.0, years_to(26, 9), 0.5, True),
    "ETH-26DEC25-2000-P": ("ETH", 2000.0, 2000.0, years_to(26, 12), 0.6, False),
    "ETH-30JUN28-2500-C": ("ETH", 2000.0, 2500.0, years_to(30, 6, 2028), 0.6, True),
}
SENS_LINEAR = {"BTC-26SEP25": ("BTC", 51000.0), "BTC-PERP": ("BTC", 50000.0),
               "ETH-PERP": ("ETH", 2000.0)}


def bumped(name: str) -> tuple[float, float]:
    """(USD per 1 % index move, dV/dsigma) by central differences: the forward moves with
    the index, F x (1 + m), so s = 0.01 x (V(F (1 + h)) - V(F (1 - h))) / 2h."""
    _, forward, strike, years, sigma, call = SENS_OPTIONS[name]
    h = 1e-5
    up = black76_price(forward * (1 + h), strike, years, sigma, call)
    down = black76_price(forward * (1 - h), strike, years, sigma, call)
    vega_up = black76_price(forward, strike, years, sigma + h, call)
    vega_down = black76_price(forward, strike, years, sigma - h, call)
    return 0.01 * (up - down) / (2 * h), (vega_up - vega_down) / (2 * h)


def split_by_hand(name: str) -> list[float]:
    """Share of the option's vega on each tenor 14, 30, 91, 182, 365, 730 days."""
    days = SENS_OPTIONS[name][3] * 365
    return {
        # 5.33 d < 14 d: all on the first tenor
        "BTC-6JUN25-50000-C": [1, 0, 0, 0, 0, 0],
        # 26.33 d: (30 - 26.33) / 16 = 0.229 on 14 d, (26.33 - 14) / 16 = 0.771 on 30 d
        "BTC-27JUN25-45000-P": [(30 - days) / 16, (days - 14) / 16, 0, 0, 0, 0],
        # 117.33 d: (182 - 117.33) / 91 = 0.711 on 91 d, 0.289 on 182 d
        "BTC-26SEP25-60000-C": [0, 0, (182 - days) / 91, (days - 91) / 91, 0, 0],
        # 208.33 d: (365 - 208.33) / 183 = 0.856 on 182 d, 0.144 on 365 d
        "ETH-26DEC25-2000-P": [0, 0, 0, (365 - days) / 183, (days - 182) / 183, 0],
        # 1,125.33 d > 730 d: all on the last tenor
        "ETH-30JUN28-2500-C": [0, 0, 0, 0, 0, 1],
    }[name]


def sens_bound() -> Any:
    return bind(portfolio_doc(account("a", [(n, q, 100) for n, q in SENS_POSITIONS], NO_CASH)),
                SENS_MARKET)


def test_shipped_tenors_are_the_ones_split_by_hand() -> None:
    assert SensitivityParams.default().tenor_days == (14.0, 30.0, 91.0, 182.0, 365.0, 730.0)
    assert split_by_hand("BTC-27JUN25-45000-P")[0] == pytest.approx(0.2291667, abs=1e-7)


def test_model_sensitivities_match_bump_and_reprice_and_the_hand_split() -> None:
    bound = sens_bound()
    params = SensitivityParams.default()
    delta_1pct, vega, tenor_lo, weight_lo = instrument_sensitivities(bound, params)
    names = [i.name for i in bound.book.instruments.instruments]
    for name in SENS_OPTIONS:
        i = names.index(name)
        delta, dv = bumped(name)
        assert delta_1pct[i] == pytest.approx(delta, rel=1e-6), name
        assert vega[i] == pytest.approx(dv, rel=1e-6), name
        shares = [0.0] * len(params.tenor_days)
        shares[tenor_lo[i]] += weight_lo[i]
        if tenor_lo[i] + 1 < len(shares):
            shares[tenor_lo[i] + 1] += 1 - weight_lo[i]
        assert shares == pytest.approx(split_by_hand(name), abs=1e-12), name
    for name, (_, mark) in SENS_LINEAR.items():
        assert delta_1pct[names.index(name)] == pytest.approx(0.01 * mark, rel=1e-15), name
        assert vega[names.index(name)] == 0.0


def test_reference_sensitivities_match_bump_and_reprice_and_the_hand_split() -> None:
    slow = explain_sensitivity(sens_bound(), 0)
    params = SensitivityParams.default()
    for u in ("BTC", "ETH"):
        lines = {p["instrument"]: p for p in slow["underlyings"][u]["positions"]}
        sigma_u = params.risk_weight(u) / 100 * math.sqrt(365 / params.mpor_days) / \
            NormalDist().inv_cdf(0.99)
        by_tenor = [0.0] * 6
        for name, q in SENS_POSITIONS:
            if name in SENS_OPTIONS and SENS_OPTIONS[name][0] == u:
                delta, dv = bumped(name)
                assert lines[name]["usd_per_1pct"] == pytest.approx(q * delta, rel=1e-6), name
                assert lines[name]["vega_per_vol_point"] == pytest.approx(q * dv / 100,
                                                                          rel=1e-6), name
                by_tenor = [v + q * dv * w for v, w in zip(by_tenor, split_by_hand(name),
                                                           strict=True)]
            elif name in SENS_LINEAR and SENS_LINEAR[name][0] == u:
                assert lines[name]["usd_per_1pct"] == pytest.approx(
                    q * 0.01 * SENS_LINEAR[name][1], rel=1e-12), name
        vr = list(slow["underlyings"][u]["vega_risk_by_tenor"].values())
        assert vr == pytest.approx([params.vega_risk_weight * sigma_u * v for v in by_tenor],
                                   rel=1e-6, abs=1e-9)


def test_sensitivity_margin_of_a_small_book_computed_in_full() -> None:
    # SPEC 3.4 on the book above, everything but the calibrated parameters computed here.
    params = SensitivityParams.default()
    rho = np.asarray(params.tenor_correlation)
    gamma = 0.7  # the market's BTC/ETH correlation overrides the calibrated one
    ws, vr, cvr = {}, {}, {}
    for u in ("BTC", "ETH"):
        rw = params.risk_weight(u)
        sigma_u = rw / 100 * math.sqrt(365 / params.mpor_days) / NormalDist().inv_cdf(0.99)
        s, v = 0.0, np.zeros(6)
        for name, q in SENS_POSITIONS:
            if name in SENS_OPTIONS and SENS_OPTIONS[name][0] == u:
                delta, dv = bumped(name)
                s += q * delta
                v += q * dv * np.array(split_by_hand(name))
            elif name in SENS_LINEAR and SENS_LINEAR[name][0] == u:
                s += q * 0.01 * SENS_LINEAR[name][1]
        ws[u] = rw * s
        vr[u] = params.vega_risk_weight * sigma_u * v
        sf = np.array([0.5 * min(1.0, params.mpor_days / t) for t in params.tenor_days])
        cvr[u] = -sf * sigma_u * v
    delta_margin = math.sqrt(ws["BTC"] ** 2 + ws["ETH"] ** 2 + 2 * gamma * ws["BTC"] * ws["ETH"])
    k_v = {u: math.sqrt(vr[u] @ rho @ vr[u]) for u in vr}
    s_v = {u: max(min(vr[u].sum(), k_v[u]), -k_v[u]) for u in vr}
    vega_margin = math.sqrt(k_v["BTC"] ** 2 + k_v["ETH"] ** 2 + 2 * gamma * s_v["BTC"] * s_v["ETH"])
    k_c = {u: math.sqrt(cvr[u] @ (rho * rho) @ cvr[u]) for u in cvr}
    s_c = {u: max(min(cvr[u].sum(), k_c[u]), -k_c[u]) for u in cvr}
    total = cvr["BTC"].sum() + cvr["ETH"].sum()
    theta = min(total / (np.abs(cvr["BTC"]).sum() + np.abs(cvr["ETH"]).sum()), 0.0)
    lam = (NormalDist().inv_cdf(0.995) ** 2 - 1) * (1 + theta) - theta
    curvature = max(total + lam * math.sqrt(
        k_c["BTC"] ** 2 + k_c["ETH"] ** 2 + 2 * gamma**2 * s_c["BTC"] * s_c["ETH"]), 0.0)
    assert min(delta_margin, vega_margin, curvature) > 0  # every part is exercised
    im = delta_margin + vega_margin + curvature

    bound = sens_bound()
    fast = get_model("sensitivity").compute(bound, RiskConfig())
    slow = explain_sensitivity(bound, 0)
    for got in (
        (float(fast.initial_margin[0]), float(fast.per_account["delta_margin"][0]),
         float(fast.per_account["vega_margin"][0]),
         float(fast.per_account["curvature_margin"][0]), float(fast.maintenance_margin[0])),
        (slow["initial_margin"], slow["delta_margin"], slow["vega_margin"],
         slow["curvature_margin"], slow["maintenance_margin"]),
    ):
        assert got == pytest.approx((im, delta_margin, vega_margin, curvature, 0.8 * im),
                                    rel=1e-7)


# --- 3. The portfolio reference binds the market itself.
def test_contingencies_group_by_strike_and_expiry() -> None:
    # 27JUN25: K = 50,000: -3 calls + 1 put = -2 -> 0.01 x 50,000 x 2 = 1,000
    #          K = 60,000: +3 calls -> 0;  K = 55,000: -2 puts -> 1,000
    # 26SEP25: K = 55,000: +2 puts -> 0 (does not net with the 27JUN25 puts)
    # Total 2,000; strike-blind groups would give 0.01 x 50,000 x 1 = 500 (27JUN25 net -1),
    # expiry-blind ones 1,000 (55,000 nets to 0).
    bound = bind(portfolio_doc(account("a", [
        ("BTC-27JUN25-50000-C", -3, 100), ("BTC-27JUN25-50000-P", 1, 100),
        ("BTC-27JUN25-60000-C", 3, 100), ("BTC-27JUN25-55000-P", -2, 100),
        ("BTC-26SEP25-55000-P", 2, 100)], NO_CASH)))
    slow = explain_portfolio(bound, RiskConfig(), 0)
    assert slow["underlyings"]["BTC"]["option_contingency"] == pytest.approx(2000, rel=1e-12)
    result = get_model("portfolio").compute(bound, RiskConfig())
    assert result.per_underlying["contingency"][0, 0] == pytest.approx(2000, rel=1e-12)
    assert result.initial_margin[0] == pytest.approx(slow["initial_margin"], rel=1e-12)
    # A kernel fed strike-blind groups disagrees with the reference, which does not read them.
    table = bound.book.instruments
    blind = np.unique(table.expiry_ns, return_inverse=True)[1].astype(np.int64)
    wrong = replace(bound, contingency_group=np.where(table.is_option, blind, -1))
    assert explain_portfolio(wrong, RiskConfig(), 0) == slow
    assert get_model("portfolio").compute(wrong, RiskConfig()).initial_margin[0] == \
        pytest.approx(slow["initial_margin"] - 1500, rel=1e-12)


INVERSE = {
    "BTC-PERP-INV": {"kind": "perpetual", "underlying": "BTC", "settlement": "inverse",
                     "contract_size": 10},
    "BTC-26SEP25-60000-C-INV": {"kind": "option", "underlying": "BTC", "settlement": "inverse",
                                "contract_size": 1, "expiry": "2025-09-26T08:00:00Z",
                                "strike": 60000, "right": "call"},
}
# Future marked 53,000 against an index of 50,000 (a 6 % basis); ATM vols by expiry.
BASIS_MARKET = market_doc(marks={"BTC-26SEP25": 53000})
BASIS_MARKET["underlyings"] = {"BTC": {"index": 50000, "vol": {
    "type": "atm_by_expiry", "points": {"27JUN25": 0.6, "26DEC25": 0.45}}}}


def basis_bound() -> Any:
    return bind(portfolio_doc(account("a", [
        ("BTC-26SEP25-55000-C", -2, 1000), ("BTC-26SEP25", 1, 52000),
        ("BTC-PERP-INV", -5000, 50000), ("BTC-26SEP25-60000-C-INV", 1, 0.01)], NO_CASH),
        instruments=INVERSE), BASIS_MARKET)


def test_portfolio_on_a_forward_with_basis_by_hand() -> None:
    t = years_to(26, 9)  # 117.33 days, halfway (in T) between 27JUN25 and 26DEC25:
    t1, t2 = years_to(27, 6), years_to(26, 12)
    sigma = 0.6 + (0.45 - 0.6) * (t - t1) / (t2 - t1)
    assert sigma == pytest.approx(0.525, rel=1e-12)
    forward = 53000.0  # the 26SEP25 future's mark, not the 50,000 index
    c55 = black76_price(forward, 55000, t, sigma, True)
    c60 = black76_price(forward, 60000, t, sigma, True)
    scale = (30 / (t * 365)) ** 0.13  # T_days >= 30: p = 0.13
    # q: -2 linear calls; +1 future; inverse perp -5,000 x 10 USD / 50,000 = -1 coin (its
    # notional -50,000 USD at the index, as it has no mark); +1 inverse call (1 coin).
    # P(m, k) = -2 (C55' - C55) + 53,000 m_lin - 50,000 m_lin + (C60' - C60), options at
    # F (1 + m) and sigma (1 + k scale); linear legs at m clamped to [-16 %, +16 %].
    def loss(move: float, k: float, weight: float) -> float:
        lin = min(0.16, max(-0.16, move))
        vol = sigma * (1 + k * scale)
        pnl = (-2 * (black76_price(forward * (1 + move), 55000, t, vol, True) - c55)
               + (53000 - 50000) * lin
               + black76_price(forward * (1 + move), 60000, t, vol, True) - c60)
        return -weight * pnl

    scan = max(max(loss(m / 100, k, 1.0) for m in range(-16, 17, 4) for k in (-0.25, 0, 0.5)),
               loss(-0.33, 0.5, 1 / 3), loss(0.50, 0.5, 1 / 3), 0.0)
    # Contingencies: net -2 calls at 55,000 -> 0.01 x 50,000 (index) x 2 = 1,000; the +1 call
    # at 60,000 is its own group -> 0. Linear: long 53,000 (future at its mark) against short
    # 50,000 (inverse perp) -> 0.01 x 50,000 = 500.
    im = scan + 1000 + 500
    bound = basis_bound()
    slow = explain_portfolio(bound, RiskConfig(), 0)
    btc = slow["underlyings"]["BTC"]
    assert (btc["scan_risk"], btc["option_contingency"], btc["linear_contingency"]) == \
        pytest.approx((scan, 1000, 500), rel=1e-12)
    assert (slow["initial_margin"], slow["maintenance_margin"]) == \
        pytest.approx((im, 0.8 * im), rel=1e-12)
    lines = [(p["instrument"], p["mark"], p["notional"]) for p in btc["positions"]]
    want = [("BTC-26SEP25-55000-C", c55, -2 * c55), ("BTC-26SEP25", 53000, 53000),
            ("BTC-PERP-INV", 50000, -50000), ("BTC-26SEP25-60000-C-INV", c60, c60)]
    assert [name for name, _, _ in lines] == [name for name, _, _ in want]
    assert [x for _, *xs in lines for x in xs] == pytest.approx(
        [x for _, *xs in want for x in xs], rel=1e-12)
    assert run("portfolio", bound) == pytest.approx((im, 0.8 * im), rel=1e-12)


@pytest.mark.parametrize("dynamics", ["sticky_strike", "sticky_moneyness"])
def test_reference_reads_no_bound_array(dynamics: str) -> None:
    # Every market-dependent array of the bound book scrambled: the references, which bind the
    # book to the market themselves, give the same numbers.
    config = RiskConfig.from_dict({"portfolio": {"vol_dynamics": dynamics}})
    market = dict(BASIS_MARKET, underlyings={"BTC": {"index": 50000, "vol": {
        "type": "svi", "slices": {"27JUN25": {"a": 0.02, "b": 0.1, "rho": -0.3, "m": 0.0,
                                              "sigma": 0.2},
                                  "26DEC25": {"a": 0.1, "b": 0.15, "rho": -0.2, "m": 0.05,
                                              "sigma": 0.3}}}}},
        assets={"USDC": {"price": 1.0}, "BTC": {"price": 50000}})
    bound = bind(portfolio_doc(account("a", [
        ("BTC-26SEP25-55000-C", -2, 1000), ("BTC-26SEP25", 1, 52000),
        ("BTC-PERP-INV", -5000, 50000), ("BTC-26SEP25-60000-C-INV", 1, 0.01),
        ("BTC-27JUN25-45000-P", -3, 500)], {"USDC": 0, "BTC": 0.5}),
        instruments=INVERSE), market)
    portfolio = explain_portfolio(bound, config, 0)
    sensitivity = explain_sensitivity(bound, 0)
    assert run_config("portfolio", bound, config) == pytest.approx(
        portfolio["initial_margin"], rel=1e-12)
    n_inst, n_pos = len(bound.years), len(bound.quantity)
    scrambled = replace(
        bound, index=bound.index * 1.1, correlation=bound.correlation * 0,
        years=bound.years * 2, sigma=bound.sigma * 1.5, base_price=bound.base_price * 0.9,
        mark=bound.mark * 1.2, contingency_group=np.zeros(n_inst, dtype=np.int64),
        live=np.zeros(n_inst, dtype=np.bool_), quantity=-bound.quantity,
        entry_usd=np.ones(n_pos), signed_notional=-bound.signed_notional,
        gross_notional=bound.gross_notional * 3, collateral_value=bound.collateral_value + 1,
        collateral_exposure=bound.collateral_exposure * 5, underlyings=("ETH",))
    assert explain_portfolio(scrambled, config, 0) == portfolio
    assert explain_sensitivity(scrambled, 0) == sensitivity


def run_config(model: str, bound: Any, config: RiskConfig) -> float:
    return float(get_model(model).compute(bound, config).initial_margin[0])
