"""SSVI across expiries (Gatheral-Jacquier 2014) with a power-law phi:

    w(k, theta) = theta / 2 (1 + rho phi k + sqrt((phi k + rho)^2 + 1 - rho^2)),
    phi(theta) = eta / (theta^gamma (1 + theta)^(1 - gamma))

Free of butterfly arbitrage when eta (1 + |rho|) <= 2 and 0 < gamma <= 1/2, and of calendar
arbitrage when the ATM total variances theta_t increase with T. Each SSVI slice is a raw SVI:
a = theta/2 (1 - rho^2), b = theta phi / 2, m = -rho / phi, sigma = sqrt(1 - rho^2) / phi.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from margin_engine.core.types import FloatArray
from margin_engine.vol.svi import SviSlice


@dataclass(frozen=True, slots=True, kw_only=True)
class SsviSurface:
    rho: float
    eta: float
    gamma: float

    def phi(self, theta: FloatArray | float) -> FloatArray:
        theta = np.asarray(theta, dtype=np.float64)
        result: FloatArray = self.eta / (theta**self.gamma * (1 + theta) ** (1 - self.gamma))
        return result

    def total_variance(self, k: FloatArray, theta: FloatArray | float) -> FloatArray:
        phi = self.phi(theta)
        x = phi * np.asarray(k)
        result: FloatArray = theta / 2 * (1 + self.rho * x + np.sqrt((x + self.rho) ** 2
                                                                     + 1 - self.rho**2))
        return result

    def slice(self, theta: float) -> SviSlice:
        phi = float(self.phi(theta))
        r = self.rho
        return SviSlice(a=theta / 2 * (1 - r * r), b=theta * phi / 2, rho=r, m=-r / phi,
                        sigma=float(np.sqrt(1 - r * r)) / phi)


def monotone_thetas(thetas: FloatArray) -> FloatArray:
    """ATM total variances made non-decreasing in T (running maximum)."""
    return np.maximum.accumulate(np.asarray(thetas, dtype=np.float64))


def fit_ssvi(k: FloatArray, theta: FloatArray, total_variance: FloatArray, weights: FloatArray,
             years: FloatArray) -> SsviSurface:
    """Fit (rho, eta, gamma) to all quotes; theta is each quote's slice ATM total variance.

    eta is parametrised as 2 / (1 + |rho|) x s with s in (0, 1], so the no-butterfly condition
    holds by construction.
    """
    from scipy.optimize import least_squares

    vol = np.sqrt(np.maximum(total_variance, 1e-12) / years)
    scale = np.sqrt(weights / np.mean(weights)) / (2 * vol * years)

    def model(params: FloatArray) -> SsviSurface:
        rho, share, gamma = params
        return SsviSurface(rho=rho, eta=2.0 / (1 + abs(rho)) * share, gamma=gamma)

    def residuals(params: FloatArray) -> FloatArray:
        fitted = model(params).total_variance(k, theta)
        out: FloatArray = scale * (fitted - total_variance)
        return out

    best = None
    for rho0 in (-0.3, 0.0, 0.3):
        result = least_squares(residuals, np.array([rho0, 0.5, 0.3]),
                               bounds=([-0.999, 1e-4, 1e-3], [0.999, 1.0, 0.5]), method="trf")
        if best is None or result.cost < best.cost:
            best = result
    assert best is not None
    return model(best.x)
