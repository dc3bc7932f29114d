"""Black-76: published values, parity, scalar reference vs vectorised kernel, QuantLib oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from margin_engine.pricing import black76, reference


def test_haug_black76_put_example() -> None:
    # Haug, The Complete Guide to Option Pricing Formulas (2nd ed.), Black-76 example:
    # F = 19, K = 19, T = 0.75, r = 0.10, sigma = 0.28 -> put = 1.7011 (call equal at the money).
    discount = math.exp(-0.10 * 0.75)
    put = reference.black76_price(19.0, 19.0, 0.75, 0.28, False, discount=discount)
    call = reference.black76_price(19.0, 19.0, 0.75, 0.28, True, discount=discount)
    assert put == pytest.approx(1.7011, abs=5e-5)
    assert call == pytest.approx(put, rel=1e-12)
    vectorised = black76.price(19.0, 19.0, 0.75, 0.28, False) * discount
    assert float(vectorised) == pytest.approx(put, rel=1e-14)


def test_atm_closed_form() -> None:
    # At the money, call = F (2 N(sigma sqrt(T) / 2) - 1): F = 65000, sigma = 0.55, T = 0.25.
    expected = 65000 * (2 * reference.norm_cdf(0.55 * 0.5 / 2) - 1)
    assert float(black76.price(65000, 65000, 0.25, 0.55, True)) == pytest.approx(expected,
                                                                                   rel=1e-13)


finite = st.floats(min_value=0.2, max_value=5.0)


@settings(max_examples=300, deadline=None)
@given(moneyness=finite, years=st.floats(1e-3, 3.0), sigma=st.floats(0.05, 3.0),
       is_call=st.booleans())
def test_kernel_matches_scalar_reference(moneyness: float, years: float, sigma: float,
                                         is_call: bool) -> None:
    forward, strike = 50000.0, 50000.0 * moneyness
    got = black76.greeks(forward, strike, years, sigma, is_call)
    assert float(got["price"]) == pytest.approx(
        reference.black76_price(forward, strike, years, sigma, is_call), rel=1e-12, abs=1e-9)
    assert float(got["delta"]) == pytest.approx(
        reference.black76_delta(forward, strike, years, sigma, is_call), rel=1e-12, abs=1e-14)
    assert float(got["gamma"]) == pytest.approx(
        reference.black76_gamma(forward, strike, years, sigma), rel=1e-12, abs=1e-18)
    assert float(got["vega"]) == pytest.approx(
        reference.black76_vega(forward, strike, years, sigma), rel=1e-12, abs=1e-9)
    assert float(got["theta"]) == pytest.approx(
        reference.black76_theta(forward, strike, years, sigma), rel=1e-12, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(moneyness=finite, years=st.floats(1e-3, 3.0), sigma=st.floats(0.05, 3.0))
def test_put_call_parity(moneyness: float, years: float, sigma: float) -> None:
    # r = 0: C - P = F - K exactly.
    forward, strike = 2500.0, 2500.0 * moneyness
    call = float(black76.price(forward, strike, years, sigma, True))
    put = float(black76.price(forward, strike, years, sigma, False))
    assert call - put == pytest.approx(forward - strike, abs=1e-9 * forward)


def test_greeks_by_finite_differences() -> None:
    f, k, t, s = 65000.0, 70000.0, 0.3, 0.6
    g = black76.greeks(f, k, t, s, True)
    h = 1e-2
    p = lambda ff, ss, tt: reference.black76_price(ff, k, tt, ss, True)  # noqa: E731
    assert float(g["delta"]) == pytest.approx((p(f + h, s, t) - p(f - h, s, t)) / (2 * h),
                                              rel=1e-7)
    assert float(g["gamma"]) == pytest.approx(
        (p(f + 10, s, t) - 2 * p(f, s, t) + p(f - 10, s, t)) / 100, rel=1e-5)
    assert float(g["vega"]) == pytest.approx((p(f, s + 1e-6, t) - p(f, s - 1e-6, t)) / 2e-6,
                                             rel=1e-6)
    # theta is the change per year of calendar time: -dV/dT.
    assert float(g["theta"]) == pytest.approx(-(p(f, s, t + 1e-6) - p(f, s, t - 1e-6)) / 2e-6,
                                              rel=1e-6)


def test_expired_or_zero_vol_is_intrinsic() -> None:
    prices = black76.price(np.array([60000.0, 60000.0]), 50000.0, np.array([0.0, 0.5]),
                           np.array([0.5, 0.0]), np.array([True, False]))
    assert prices.tolist() == [10000.0, 0.0]


def test_implied_vol_round_trip_on_a_grid() -> None:
    forward = 65000.0
    strikes = forward * np.exp(np.linspace(-1.0, 1.0, 21))
    years = np.array([2 / 365, 0.05, 0.25, 1.0, 2.0])
    k, t = np.meshgrid(strikes, years)
    for is_call in (True, False):
        sigma = np.full(k.shape, 0.7)
        prices = black76.price(forward, k, t, sigma, is_call)
        intrinsic = np.maximum(forward - k, 0.0) if is_call else np.maximum(k - forward, 0.0)
        # Vol lives in the time value; below ~1e-6 x F it is lost in float64 rounding.
        usable = prices - intrinsic > 1e-6 * forward
        assert usable.sum() > 60
        vols = black76.implied_vol(prices, forward, k, t, is_call)
        assert not np.isnan(vols[usable]).any()
        assert np.max(np.abs(vols[usable] - 0.7)) < 1e-8
        back = black76.price(forward, k, t, vols, is_call)
        assert np.max(np.abs(back[usable] / prices[usable] - 1)) < 1e-10
        # Inverse quote: coin price x forward is the USD price; same vol.
        coin = prices / forward
        vols_inverse = black76.implied_vol(coin * forward, forward, k, t, is_call)
        assert np.max(np.abs(vols_inverse[usable] - 0.7)) < 1e-8


def test_implied_vol_is_nan_outside_no_arbitrage_bounds() -> None:
    vols = black76.implied_vol(np.array([5.0, 70000.0, 100.0]), 65000.0, 60000.0,
                               np.array([0.5, 0.5, 0.0]), True)
    assert np.isnan(vols).all()  # below intrinsic, above forward, expired


def test_scalar_implied_vol_reference() -> None:
    price = reference.black76_price(100.0, 110.0, 0.5, 0.45, True)
    assert reference.implied_vol(price, 100.0, 110.0, 0.5, True) == pytest.approx(0.45, abs=1e-9)


def test_quantlib_oracle_agrees() -> None:
    ql = pytest.importorskip("QuantLib", reason="QuantLib is the test-only oracle")
    rng = np.random.default_rng(3)
    for _ in range(200):
        f = 65000.0
        k = f * float(np.exp(rng.uniform(-0.8, 0.8)))
        t = float(rng.uniform(0.01, 2.0))
        s = float(rng.uniform(0.1, 1.5))
        for is_call in (True, False):
            option = ql.Option.Call if is_call else ql.Option.Put
            std = s * math.sqrt(t)
            oracle = ql.blackFormula(option, k, f, std, 1.0)
            ours = float(black76.price(f, k, t, s, is_call))
            assert ours == pytest.approx(oracle, rel=1e-9, abs=1e-7)
