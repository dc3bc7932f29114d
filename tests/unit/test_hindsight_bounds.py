"""The look-ahead bounds the predictive-margin comparison reports for ewma: the constant that
keeps exceptions at 1 % and the smallest one that still passes Kupiec's test."""

from __future__ import annotations

import numpy as np

from margin_engine.backtest.compare import hindsight_multiplier, kupiec_hindsight_multiplier
from margin_engine.backtest.engine import BacktestResult
from margin_engine.backtest.stats import kupiec_pof


def _result(loss: np.ndarray, margin: np.ndarray) -> BacktestResult:
    return BacktestResult(summary={}, loss=loss, margin=margin)


def test_kupiec_bound_keeps_exactly_the_most_exceptions_the_test_accepts() -> None:
    rng = np.random.default_rng(3)
    days = 1000
    margin = rng.uniform(0.05, 0.10, days)
    loss = margin * rng.standard_t(4, days) * 0.5
    result = _result(loss, margin)
    k = kupiec_hindsight_multiplier(result, 0.99)
    exceptions = int(np.sum(loss > k * margin))
    # the count Kupiec still accepts at 5 %, and one more it refuses
    assert kupiec_pof(days, exceptions, 0.01)[1] >= 0.05
    assert kupiec_pof(days, exceptions + 1, 0.01)[1] < 0.05
    # any smaller constant adds an exception beyond what the test accepts
    assert int(np.sum(loss > np.nextafter(k, 0.0) * margin)) == exceptions + 1
    # lenient: below the constant that keeps exceptions at 1 %
    strict = hindsight_multiplier(result, 0.99)
    assert k < strict
    assert int(np.sum(loss > strict * margin)) <= 10
