"""Raw SVI slices (Gatheral): total implied variance as a function of log-moneyness k.

    w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2)),   implied vol = sqrt(w / T)

Butterfly-arbitrage density (Gatheral-Jacquier 2014), must be >= 0:
    g(k) = (1 - k w' / (2 w))^2 - (w'^2 / 4) (1 / w + 1 / 4) + w'' / 2
Fit: scipy least squares on total variance, each residual scaled by sqrt(weight) / (2 sigma T)
(so it is about a weighted vol error), weights = vega or 1 / bid-ask spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from margin_engine.core.types import FloatArray

PARAM_NAMES = ("a", "b", "rho", "m", "sigma")


@dataclass(frozen=True, slots=True, kw_only=True)
class SviSlice:
    a: float
    b: float
    rho: float
    m: float
    sigma: float

    def total_variance(self, k: FloatArray) -> FloatArray:
        x = np.asarray(k, dtype=np.float64) - self.m
        return self.a + self.b * (self.rho * x + np.sqrt(x * x + self.sigma**2))

    def derivatives(self, k: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(w, w', w'') at k."""
        x = np.asarray(k, dtype=np.float64) - self.m
        root = np.sqrt(x * x + self.sigma**2)
        w = self.a + self.b * (self.rho * x + root)
        return w, self.b * (self.rho + x / root), self.b * self.sigma**2 / root**3

    def butterfly_density(self, k: FloatArray) -> FloatArray:
        w, w1, w2 = self.derivatives(k)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = (1 - k * w1 / (2 * w)) ** 2 - (w1**2 / 4) * (1 / w + 0.25) + w2 / 2
        return np.where(w > 0, g, -np.inf)

    def shifted(self, dk: float) -> SviSlice:
        """The same smile in moneyness k' = k + dk (e.g. forward -> index moneyness)."""
        return SviSlice(a=self.a, b=self.b, rho=self.rho, m=self.m + dk, sigma=self.sigma)

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in PARAM_NAMES}

    @property
    def minimum_variance(self) -> float:
        """min_k w(k) = a + b sigma sqrt(1 - rho^2); must be >= 0."""
        return self.a + self.b * self.sigma * float(np.sqrt(max(0.0, 1 - self.rho**2)))


def _svi_w(params: FloatArray, k: FloatArray) -> FloatArray:
    a, b, rho, m, sigma = params
    x = k - m
    result: FloatArray = a + b * (rho * x + np.sqrt(x * x + sigma * sigma))
    return result


def _jacobian_w(params: FloatArray, k: FloatArray) -> FloatArray:
    _, b, rho, m, sigma = params
    x = k - m
    root = np.sqrt(x * x + sigma * sigma)
    return np.column_stack([np.ones_like(k), rho * x + root, b * x, -b * (rho + x / root),
                            b * sigma / root])


def fit_svi(
    k: FloatArray, total_variance: FloatArray, years: float, weights: FloatArray,
    *, penalty_k: FloatArray | None = None, floor_variance: FloatArray | None = None,
    ceiling_variance: FloatArray | None = None, start: SviSlice | None = None,
) -> tuple[SviSlice, float]:
    """Weighted least-squares raw SVI fit from several starts; returns (slice, cost).

    ``penalty_k`` adds butterfly residuals max(0, -g(k_j)) on those points; ``floor_variance``
    (same length) adds calendar residuals max(0, floor_j - w(k_j)) and ``ceiling_variance``
    residuals max(0, w(k_j) - ceiling_j). ``start`` replaces the
    default starting points (a refit from a previous solution).
    """
    from scipy.optimize import least_squares

    k = np.asarray(k, dtype=np.float64)
    w = np.asarray(total_variance, dtype=np.float64)
    vol = np.sqrt(np.maximum(w, 1e-12) / years)
    scale = np.sqrt(np.asarray(weights, dtype=np.float64) / np.mean(weights)) / (2 * vol * years)
    w_max = float(w.max())
    lower = np.array([-w_max, 0.0, -0.999, float(k.min()) - 1.0, 1e-4])
    upper = np.array([w_max, 10.0, 0.999, float(k.max()) + 1.0, 5.0])
    extra = penalty_k is not None

    def residuals(params: FloatArray) -> FloatArray:
        fitted = _svi_w(params, k)
        parts = [scale * (fitted - w)]
        svi = SviSlice(a=params[0], b=params[1], rho=params[2], m=params[3], sigma=params[4])
        parts.append(np.array([1e3 * max(0.0, -svi.minimum_variance) / (vol.mean() * years)]))
        if penalty_k is not None:
            parts.append(1e2 * np.maximum(0.0, -np.nan_to_num(svi.butterfly_density(penalty_k),
                                                               neginf=-1.0)))
        if penalty_k is not None:
            fitted_grid = svi.total_variance(penalty_k)
            for bound, sign in ((floor_variance, 1.0), (ceiling_variance, -1.0)):
                if bound is not None:
                    gap = sign * (bound - fitted_grid)
                    parts.append(1e3 * np.maximum(0.0, gap) / (vol.mean() * years))
        return np.concatenate(parts)

    def jacobian(params: FloatArray) -> FloatArray:
        body = scale[:, None] * _jacobian_w(params, k)
        return np.vstack([body, np.zeros((1, 5))])

    best: tuple[SviSlice, float] | None = None
    for guess in _starts(k, w) if start is None else [
            np.array([start.a, start.b, start.rho, start.m, start.sigma])]:
        result = least_squares(residuals, np.clip(guess, lower + 1e-9, upper - 1e-9),
                               bounds=(lower, upper),
                               jac="2-point" if extra else jacobian,
                               method="trf", x_scale="jac", max_nfev=100)
        cost = float(result.cost)
        if best is None or cost < best[1]:
            p = result.x
            best = (SviSlice(a=p[0], b=p[1], rho=p[2], m=p[3], sigma=p[4]), cost)
    assert best is not None
    return best


def _starts(k: FloatArray, w: FloatArray) -> list[FloatArray]:
    """Starting points around the smile's minimum, with skew either way."""
    k_low, w_min, w_max = float(k[np.argmin(w)]), float(w.min()), float(w.max())
    starts = []
    for rho0 in (-0.4, 0.3):
        for sigma0 in (0.1, 0.4):
            b0 = max(1e-3, (w_max - w_min) / max(1e-3, float(np.ptp(k)) + sigma0))
            a0 = max(w_min - b0 * sigma0 * np.sqrt(1 - rho0**2), -0.5 * w_max)
            starts.append(np.array([a0, b0, rho0, k_low, sigma0]))
    return starts
