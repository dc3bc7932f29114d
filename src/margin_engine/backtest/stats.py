"""Coverage statistics for margin and VaR backtests.

Kupiec proportion of failures (POF): with T observations, x exceptions, expected rate p:
    LR = -2 ln[(1 - p)^(T - x) p^x] + 2 ln[(1 - x/T)^(T - x) (x/T)^x],  LR ~ chi2(1)
Christoffersen independence: transitions n_ij between no-exception (0) and exception (1) days,
    pi_01 = n01 / (n00 + n01), pi_11 = n11 / (n10 + n11), pi = (n01 + n11) / n,
    LR_ind = -2 ln[(1 - pi)^(n00 + n10) pi^(n01 + n11)]
             + 2 ln[(1 - pi_01)^n00 pi_01^n01 (1 - pi_11)^n10 pi_11^n11],  ~ chi2(1);
    conditional coverage LR_cc = LR_pof + LR_ind ~ chi2(2).
Basel traffic light (250 days at 99 %): green up to 4 exceptions, yellow 5-9, red 10+; for
other sample sizes the zones are scaled by the binomial cumulative probability (green below
95 %, red from 99.99 %).
"""

from __future__ import annotations

import math

import numpy as np

from margin_engine.core.types import BoolArray


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def kupiec_pof(observations: int, exceptions: int, rate: float) -> tuple[float, float]:
    """(LR, p-value) of the Kupiec POF test."""
    from scipy.stats import chi2

    t, x = observations, exceptions
    if t <= 0:
        raise ValueError("no observations")
    observed = x / t
    log_null = _xlogy(t - x, 1 - rate) + _xlogy(x, rate)
    log_alt = _xlogy(t - x, 1 - observed) + _xlogy(x, observed)
    lr = max(0.0, -2.0 * (log_null - log_alt))
    return lr, float(chi2.sf(lr, 1))


def christoffersen(exceptions: BoolArray, rate: float) -> dict[str, float]:
    """Independence and conditional-coverage likelihood ratios and p-values."""
    from scipy.stats import chi2

    hits = np.asarray(exceptions, dtype=np.int64)
    previous, current = hits[:-1], hits[1:]
    n00 = int(np.sum((previous == 0) & (current == 0)))
    n01 = int(np.sum((previous == 0) & (current == 1)))
    n10 = int(np.sum((previous == 1) & (current == 0)))
    n11 = int(np.sum((previous == 1) & (current == 1)))
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / max(n00 + n01 + n10 + n11, 1)
    log_null = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    log_alt = (_xlogy(n00, 1 - pi01) + _xlogy(n01, pi01) + _xlogy(n10, 1 - pi11)
               + _xlogy(n11, pi11))
    lr_ind = max(0.0, -2.0 * (log_null - log_alt))
    lr_pof, _ = kupiec_pof(int(hits.size), int(hits.sum()), rate)
    lr_cc = lr_pof + lr_ind
    return {"lr_ind": lr_ind, "p_ind": float(chi2.sf(lr_ind, 1)), "lr_cc": lr_cc,
            "p_cc": float(chi2.sf(lr_cc, 2))}


def traffic_light(observations: int, exceptions: int, rate: float = 0.01) -> str:
    """Basel zone from the binomial probability of seeing at most ``exceptions``."""
    from scipy.stats import binom

    cumulative = float(binom.cdf(exceptions, observations, rate))
    if cumulative < 0.95:
        return "green"
    if cumulative < 0.9999:
        return "yellow"
    return "red"
