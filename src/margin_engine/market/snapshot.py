"""Market snapshot domain objects and the vol surfaces of the foundation (flat, ATM by expiry)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from margin_engine.core.timeutil import year_fraction
from margin_engine.core.types import FloatArray


class VolSurface(Protocol):
    """Implied vol (decimal, annualised) for options of given expiry year fraction and strike."""

    def sigma(self, years: FloatArray, strike: FloatArray) -> FloatArray: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FlatVol:
    level: float

    def sigma(self, years: FloatArray, strike: FloatArray) -> FloatArray:
        return np.full(np.shape(years), self.level, dtype=np.float64)


@dataclass(frozen=True, slots=True, kw_only=True)
class AtmByExpiryVol:
    """ATM vol per expiry, linear in T between points and flat outside them."""

    years: tuple[float, ...]  # ascending year fractions of the points
    levels: tuple[float, ...]

    def sigma(self, years: FloatArray, strike: FloatArray) -> FloatArray:
        levels: FloatArray = np.interp(years, np.asarray(self.years), np.asarray(self.levels))
        return levels

    @staticmethod
    def from_expiries(
        timestamp_ns: int, points: Mapping[int, float]
    ) -> AtmByExpiryVol:
        ordered = sorted(points.items())
        return AtmByExpiryVol(
            years=tuple(year_fraction(timestamp_ns, ns) for ns, _ in ordered),
            levels=tuple(level for _, level in ordered),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SviVol:
    """Raw SVI slices in *index* log-moneyness k = ln(K / index), one per expiry.

    Between expiries total variance is linear in T at fixed k; before the first and after the
    last expiry the nearest slice's vol is used (flat in T). sigma = sqrt(max(w, 0) / T).
    """

    index: float
    years: tuple[float, ...]  # ascending
    params: tuple[tuple[float, float, float, float, float], ...]  # (a, b, rho, m, sigma)

    def _total_variance(self, j: int, k: FloatArray) -> FloatArray:
        a, b, rho, m, s = self.params[j]
        x = k - m
        result: FloatArray = a + b * (rho * x + np.sqrt(x * x + s * s))
        return result

    def sigma(self, years: FloatArray, strike: FloatArray) -> FloatArray:
        t = np.asarray(years, dtype=np.float64)
        k = np.log(np.asarray(strike, dtype=np.float64) / self.index)
        knots = np.asarray(self.years)
        out = np.empty(np.broadcast(t, k).shape)
        t_b, k_b = np.broadcast_arrays(t, k)
        right = np.searchsorted(knots, t_b, side="left")
        for j in np.unique(right):
            rows = right == j
            kk, tt = k_b[rows], t_b[rows]
            if j == 0 or j == len(knots):  # outside: nearest slice's vol
                near = 0 if j == 0 else len(knots) - 1
                w = self._total_variance(near, kk) / knots[near]
                out[rows] = np.sqrt(np.maximum(w, 0.0))
                continue
            t0, t1 = knots[j - 1], knots[j]
            w0, w1 = self._total_variance(j - 1, kk), self._total_variance(j, kk)
            w = w0 + (w1 - w0) * (tt - t0) / (t1 - t0)
            out[rows] = np.sqrt(np.maximum(w, 0.0) / tt)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class UnderlyingMarket:
    index: float
    vol: VolSurface | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketSnapshot:
    """Everything the margin models need about prices at one moment.

    ``asset_prices`` are USD prices of collateral assets (stablecoins at their given price, not 1);
    ``marks`` are optional perp/future marks (USD per coin); ``correlation`` holds each unordered
    pair of underlyings once, as ``(a, b)`` with ``a < b``; ``settlements`` holds the
    settlement price of (underlying, expiry ns) for expiries at or before the snapshot.
    """

    timestamp_ns: int
    underlyings: Mapping[str, UnderlyingMarket]
    asset_prices: Mapping[str, float]
    marks: Mapping[str, float] = field(default_factory=dict)
    correlation: Mapping[tuple[str, str], float] = field(default_factory=dict)
    settlements: Mapping[tuple[str, int], float] = field(default_factory=dict)
    vol_as_of_ns: int | None = None  # when the surfaces' year fractions start (default: now)

    def vol_years(self, years: FloatArray) -> FloatArray:
        """Year fractions to read the vol surfaces at: ``years`` from now, measured from the
        surfaces' own time (a replay moves the clock; each expiry keeps its vol)."""
        if self.vol_as_of_ns is None or self.vol_as_of_ns == self.timestamp_ns:
            return years
        shifted: FloatArray = years + (self.timestamp_ns - self.vol_as_of_ns) / 1e9 / (
            365 * 86400)
        return shifted

    def correlation_of(self, a: str, b: str) -> float:
        """rho(a, b): 1 on the diagonal, the given value, or 0 when none is given."""
        if a == b:
            return 1.0
        key = (a, b) if a < b else (b, a)
        return self.correlation.get(key, 0.0)
