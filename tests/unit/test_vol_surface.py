"""Implied vol robustness, SVI/SSVI, arbitrage checks, the svi market surface and the skew."""

from __future__ import annotations

import math

import numpy as np
import pytest

from margin_engine.core.errors import InputError
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import get_model
from margin_engine.pricing.black76 import greeks, price
from margin_engine.pricing.implied import IvReason, implied_vol_with_reason
from margin_engine.vol.arbitrage import butterfly_violations, calendar_violations
from margin_engine.vol.chain_fit import fit_surface
from margin_engine.vol.market_builder import expiry_code, market_document
from margin_engine.vol.ssvi import SsviSurface
from margin_engine.vol.svi import SviSlice, fit_svi
from margin_engine.vol.synthetic import synthetic_chain
from tests.conftest import account, bind, market_doc, portfolio_doc


def test_implied_vol_round_trip_deep_wings_and_near_expiry() -> None:
    forward = 65000.0
    k = np.linspace(-3.0, 3.0, 61)
    years = np.array([1 / 8760, 1 / 365, 7 / 365, 30 / 365, 1.0, 5.0])
    sigmas = np.array([0.05, 0.5, 2.0])
    kk, tt, ss = np.meshgrid(k, years, sigmas, indexing="ij")
    strike = forward * np.exp(kk)
    for is_call in (True, False):
        prices = price(forward, strike, tt, ss, is_call)
        intrinsic = np.maximum(forward - strike, 0) if is_call else np.maximum(strike - forward, 0)
        # Quotes whose time value survives float64 rounding (relative to the premium).
        has_time_value = (prices - intrinsic) > 1e-9 * np.maximum(prices, 1e-300) + 1e-300
        vols, reasons = implied_vol_with_reason(prices, forward, strike, tt, is_call)
        assert np.all(reasons[has_time_value] == IvReason.OK)
        assert np.all(np.isnan(vols[reasons != IvReason.OK]))
        ok = reasons == IvReason.OK
        # The vol is pinned by the time value: recovered where it is >= 1e-6 of the premium and
        # the premium is a normal float64 (sub-normal numbers below 2.2e-308 carry few digits).
        informative = ok & ((prices - intrinsic) > 1e-6 * prices) & (prices > 1e-300)
        assert np.max(np.abs(vols[informative] / ss[informative] - 1)) < 1e-8
        # Price round trip on every quote above 1e-12 x F (far below any venue's tick; below it
        # d ln(price) / d sigma is so steep that 1e-13 of vol moves the price by 1e-10).
        quoted = ok & (prices > 1e-12 * forward)
        back = price(forward, strike, tt, vols, is_call)
        assert np.max(np.abs(back[quoted] / prices[quoted] - 1)) < 1e-10


def test_implied_vol_reason_codes() -> None:
    vols, reasons = implied_vol_with_reason(
        np.array([np.nan, 10.0, 4000.0, 70000.0, 5000.0, 8000.0]), 65000.0,
        np.array([60000.0, 60000.0, 60000.0, 60000.0, 60000.0, 60000.0]),
        np.array([0.5, 0.0, 0.5, 0.5, 0.5, 0.5]), True)
    assert reasons.tolist() == [IvReason.BAD_INPUT, IvReason.EXPIRED, IvReason.BELOW_INTRINSIC,
                                IvReason.ABOVE_BOUND, IvReason.BELOW_INTRINSIC, IvReason.OK]
    assert np.isnan(vols[:5]).all()
    assert np.isfinite(vols[5])


def test_svi_derivatives_match_finite_differences() -> None:
    svi = SviSlice(a=0.04, b=0.2, rho=-0.4, m=0.05, sigma=0.15)
    k = np.linspace(-1, 1, 11)
    h = 1e-5
    w, w1, w2 = svi.derivatives(k)
    up, down = svi.total_variance(k + h), svi.total_variance(k - h)
    np.testing.assert_allclose(w1, (up - down) / (2 * h), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(w2, (up - 2 * w + down) / h**2, rtol=1e-4, atol=1e-6)


def test_butterfly_check_finds_a_known_arbitrage() -> None:
    # Gatheral & Jacquier (2014), Vogt's slice: (a, b, m, rho, sigma) =
    # (-0.0410, 0.1331, 0.3586, 0.3060, 0.4153) has g(k) < 0 near k = 0.7.
    bad = SviSlice(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)
    grid = np.linspace(-1.5, 1.5, 301)
    assert butterfly_violations(bad, grid) > 0
    assert np.min(bad.butterfly_density(grid)) < 0
    good = SviSlice(a=0.04, b=0.1, rho=-0.3, m=0.0, sigma=0.2)
    assert butterfly_violations(good, grid) == 0


def test_ssvi_slices_are_arbitrage_free_and_match_raw_svi() -> None:
    surface = SsviSurface(rho=-0.4, eta=2 / 1.4 * 0.9, gamma=0.4)
    thetas = [0.01, 0.03, 0.08, 0.2]
    grid = np.linspace(-2, 2, 201)
    slices = [surface.slice(t) for t in thetas]
    for theta, s in zip(thetas, slices, strict=True):
        np.testing.assert_allclose(s.total_variance(grid), surface.total_variance(grid, theta),
                                   rtol=1e-12)
        assert butterfly_violations(s, grid) == 0
    assert all(calendar_violations(a, b, grid) == 0 for a, b in zip(slices, slices[1:],
                                                                     strict=False))


def test_fit_svi_recovers_an_exact_slice() -> None:
    true = SviSlice(a=0.02, b=0.15, rho=-0.35, m=0.03, sigma=0.2)
    k = np.linspace(-0.8, 0.6, 40)
    fitted, _ = fit_svi(k, true.total_variance(k), 0.5, np.ones_like(k))
    vol_true = np.sqrt(true.total_variance(k) / 0.5)
    vol_fit = np.sqrt(fitted.total_variance(k) / 0.5)
    assert np.max(np.abs(vol_fit - vol_true)) * 100 < 1e-3  # vol points


def test_synthetic_chain_fit_quality() -> None:
    # Noise of 0.3 vol points on a known SSVI surface: RMSE should come out near 0.3.
    fit = fit_surface(synthetic_chain(quotes=1000, noise_vol_points=0.3))
    rmse = [s.rmse_vol_points for s in fit.slices]
    assert len(fit.slices) == 10
    assert 0.15 < float(np.median(rmse)) < 0.45
    assert fit.arbitrage_after["butterfly_slices"] == 0
    assert fit.arbitrage_after["calendar_pairs"] == 0


def _svi_market(slices: dict[str, dict[str, float]], index: float = 50000.0) -> dict:
    market = market_doc()
    market["underlyings"]["BTC"] = {"index": index, "vol": {"type": "svi", "slices": slices}}
    return market


def test_svi_market_interpolates_total_variance_and_is_flat_outside() -> None:
    s1 = {"a": 0.01, "b": 0.05, "rho": -0.3, "m": 0.0, "sigma": 0.1}
    s2 = {"a": 0.04, "b": 0.08, "rho": -0.2, "m": 0.0, "sigma": 0.2}
    surface = parse_market(_svi_market({"27JUN25": s1, "26SEP25": s2})).underlyings["BTC"].vol
    assert surface is not None
    year = 365 * 86400
    t1, t2 = (26 * 86400 + 8 * 3600) / year, (117 * 86400 + 8 * 3600) / year
    strike = np.array([40000.0])
    k = math.log(40000 / 50000)
    w1 = SviSlice(**s1).total_variance(np.array([k]))[0]
    w2 = SviSlice(**s2).total_variance(np.array([k]))[0]
    t = 0.5 * (t1 + t2)
    got = surface.sigma(np.array([t]), strike)[0]
    assert got == pytest.approx(math.sqrt((w1 + 0.5 * (w2 - w1)) / t), rel=1e-12)
    assert surface.sigma(np.array([t1 / 3]), strike)[0] == pytest.approx(math.sqrt(w1 / t1))
    assert surface.sigma(np.array([2 * t2]), strike)[0] == pytest.approx(math.sqrt(w2 / t2))


@pytest.mark.parametrize(("bad", "message"), [
    ({"rho": 1.0}, "rho"), ({"a": -1.0}, "non-negative total variance"), ({"b": -0.1}, ">= 0"),
])
def test_invalid_svi_slices_are_refused(bad: dict, message: str) -> None:
    slice_ = {"a": 0.01, "b": 0.05, "rho": -0.3, "m": 0.0, "sigma": 0.1, **bad}
    with pytest.raises(InputError, match=message):
        parse_market(_svi_market({"27JUN25": slice_}))


def test_market_builder_shifts_slices_to_index_moneyness() -> None:
    fit = fit_surface(synthetic_chain(quotes=400, noise_vol_points=0.0))
    document = market_document([fit], fit.snapshot_ns)
    surface = parse_market(document).underlyings["BTC"].vol
    assert surface is not None
    for s in fit.slices:
        strikes = s.forward * np.exp(s.k)
        expected = np.sqrt(s.svi.total_variance(s.k) / s.years)
        got = surface.sigma(np.full(strikes.shape, s.years), strikes)
        np.testing.assert_allclose(got, expected, rtol=1e-9)
        assert document["marks"][f"BTC-{expiry_code(s.expiry_ns)}"] == s.forward


def test_short_25_delta_put_needs_more_margin_on_a_put_skew() -> None:
    # Put skew: rho = -0.6. The 27JUN25 25-delta put is K = 45,000 at S = 50,000 (delta -0.252):
    # 0.679 vol on the smile vs 0.509 ATM, so its value and its losses in the down scenarios are
    # larger than under a flat ATM vol. Short 10: IM 54,327.16 on the smile vs 49,753.84 flat
    # (+9.2 %); sticky moneyness 39,413.17 (the put's vol falls as it moves towards the money).
    slice_ = {"a": 0.005, "b": 0.12, "rho": -0.6, "m": 0.02, "sigma": 0.1}
    smile_market = _svi_market({"27JUN25": slice_})
    surface = parse_market(smile_market).underlyings["BTC"].vol
    assert surface is not None
    t = (26 * 86400 + 8 * 3600) / (365 * 86400)
    atm = float(surface.sigma(np.array([t]), np.array([50000.0]))[0])
    strikes = np.arange(30000.0, 50000.0, 1000.0)
    deltas = greeks(50000.0, strikes, t, surface.sigma(np.full(strikes.shape, t), strikes),
                    False)["delta"]
    strike = int(strikes[np.argmin(np.abs(deltas + 0.25))])
    skew_vol = float(surface.sigma(np.array([t]), np.array([float(strike)]))[0])
    assert skew_vol > atm + 0.05
    flat_market = market_doc()
    flat_market["underlyings"]["BTC"]["vol"] = {"type": "flat", "sigma": atm}
    book = portfolio_doc(account("a", [(f"BTC-27JUN25-{strike}-P", -10, 500)]))
    on_smile = get_model("portfolio").compute(bind(book, smile_market), RiskConfig())
    on_flat = get_model("portfolio").compute(bind(book, flat_market), RiskConfig())
    assert on_smile.initial_margin[0] > 1.05 * on_flat.initial_margin[0]
    # Sticky moneyness reads a lower vol for the put after a fall (it moves towards the money
    # on a downward-sloping smile), so it charges less than sticky strike.
    moneyness = RiskConfig.from_dict({"portfolio": {"vol_dynamics": "sticky_moneyness"}})
    sticky_m = get_model("portfolio").compute(bind(book, smile_market), moneyness)
    assert sticky_m.initial_margin[0] < on_smile.initial_margin[0]
