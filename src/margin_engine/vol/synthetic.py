"""A seeded synthetic option chain from a known SSVI surface, for tests and the benchmark."""

from __future__ import annotations

import numpy as np

from margin_engine.core.timeutil import NS_PER_SECOND, SECONDS_PER_YEAR
from margin_engine.pricing.black76 import price
from margin_engine.vol.deribit import OptionQuotes
from margin_engine.vol.ssvi import SsviSurface

TRUE_SURFACE = SsviSurface(rho=-0.25, eta=1.2, gamma=0.4)


def synthetic_chain(quotes: int = 1000, seed: int = 5, noise_vol_points: float = 0.3,
                    index: float = 65000.0) -> OptionQuotes:
    """``quotes`` marks: 10 expiries (7 d - 1 y) x strikes x call/put, vols from TRUE_SURFACE
    with ATM total variance 0.36 T^0.9, plus Gaussian noise in vol points."""
    rng = np.random.default_rng(seed)
    snapshot = 1_700_000_000 * NS_PER_SECOND
    day_ns = 86_400 * NS_PER_SECOND
    days = np.array([7, 14, 21, 30, 60, 90, 120, 180, 270, 365])
    per_expiry = quotes // (2 * days.size)
    expiry, strike, is_call, forward, mark = [], [], [], [], []
    for d in days:
        expiry_ns = (snapshot // day_ns + int(d)) * day_ns + 8 * 3600 * NS_PER_SECOND  # 08:00 UTC
        t = (expiry_ns - snapshot) / NS_PER_SECOND / SECONDS_PER_YEAR
        f = index * (1 + 0.05 * t)
        theta = 0.36 * t**0.9
        k = np.linspace(-2.2, 1.6, per_expiry) * np.sqrt(theta)
        vol = np.sqrt(TRUE_SURFACE.total_variance(k, theta) / t)
        vol = vol + rng.normal(0, noise_vol_points / 100, vol.size)
        for call in (True, False):
            expiry.append(np.full(k.size, expiry_ns))
            strike.append(f * np.exp(k))
            is_call.append(np.full(k.size, call))
            forward.append(np.full(k.size, f))
            mark.append(price(f, f * np.exp(k), t, vol, call))
    n = sum(a.size for a in strike)
    return OptionQuotes(
        underlying="BTC", source="synthetic", snapshot_ns=snapshot, index=index,
        expiry_ns=np.concatenate(expiry).astype(np.int64), strike=np.concatenate(strike),
        is_call=np.concatenate(is_call), forward=np.concatenate(forward),
        mark_usd=np.concatenate(mark), bid_usd=np.full(n, np.nan), ask_usd=np.full(n, np.nan),
        counts={"rows": n})
