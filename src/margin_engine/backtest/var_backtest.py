"""Rolling one-day VaR backtest of a long position with filtered historical simulation.

For each day t of the test window, using only data up to t-1: the EWMA (lambda) vol forecast
s_t, the standardised returns z of the last ``window`` days (z_j = r_j / s_j, each s_j itself
causal), and VaR_t = P_{t-1} (1 - exp(s_t q_{1-c}(z))) for one coin long. An exception is a
loss P_{t-1} - P_t above VaR_t. Coverage is judged with Kupiec, Christoffersen and the Basel
traffic light (``backtest.stats``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from margin_engine.backtest.stats import christoffersen, kupiec_pof, traffic_light
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.data.prices import PriceSeries
from margin_engine.margin.calibration import daily_closes
from margin_engine.margin.var import SEED_DAYS, ewma_filter


def var_backtest_long(series: PriceSeries, *, start_ns: int, end_ns: int | None = None,
                      confidence: float = 0.99, ewma_lambda: float = 0.94,
                      window: int = 1000, min_window: int = 250) -> dict[str, Any]:
    days, closes = daily_closes(series)
    log_returns = np.diff(np.log(closes))[:, np.newaxis]
    n = log_returns.shape[0]
    # sigma_t for t = 0..n: the forecast of r_t made with returns before t
    var = np.empty(n + 1)
    var[0] = np.var(log_returns[:SEED_DAYS, 0], ddof=1)
    for t in range(1, n + 1):
        var[t] = ewma_lambda * var[t - 1] + (1 - ewma_lambda) * log_returns[t - 1, 0] ** 2
    sigma = np.sqrt(var)
    z, _ = ewma_filter(log_returns, ewma_lambda)
    z = z[:, 0]
    return_days = days[1:]  # r_t ends on day t+1
    end_ns = end_ns if end_ns is not None else int(return_days[-1])
    test = np.nonzero((return_days >= start_ns) & (return_days <= end_ns))[0]
    test = test[test >= SEED_DAYS + min_window]
    if test.size == 0:
        raise InputError(f"test days after {SEED_DAYS + min_window} days of warm-up",
                         field="history", value=series.source)
    quantile = np.array([np.quantile(z[max(SEED_DAYS, t - window):t], 1 - confidence)
                         for t in test])
    previous = closes[test]  # P_{t-1}: close before return t
    var_level = previous * (1 - np.exp(sigma[test] * quantile))
    loss = previous - closes[test + 1]
    hits = loss > var_level
    observations, exceptions = int(test.size), int(hits.sum())
    lr, p_value = kupiec_pof(observations, exceptions, 1 - confidence)
    independence = christoffersen(hits, 1 - confidence)
    return {
        "source": series.source, "first": ns_to_iso(int(return_days[test[0]])),
        "last": ns_to_iso(int(return_days[test[-1]])), "confidence": confidence,
        "observations": observations, "exceptions": exceptions,
        "expected_exceptions": observations * (1 - confidence),
        "kupiec_lr": lr, "kupiec_p": p_value, "christoffersen_p": independence["p_ind"],
        "conditional_coverage_p": independence["p_cc"],
        "traffic_light": traffic_light(observations, exceptions, 1 - confidence),
        "mean_var_fraction": float(np.mean(var_level / previous)),
    }
