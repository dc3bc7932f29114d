"""VaR / ES: the measure by hand, no look-ahead, correlation hedges, APC options, backtests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from margin_engine.backtest.stats import christoffersen, kupiec_pof, traffic_light
from margin_engine.cli.app import app
from margin_engine.data.prices import PriceSeries
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.var import ScenarioSet, VarHistory, VarModel, ewma_filter, tail_measures
from tests.conftest import SHARED, account, bind, market_doc, portfolio_doc

DAY = 86_400 * 10**9


def test_kupiec_pof_by_hand() -> None:
    # 30 observations, 7 exceptions, p = 1 %:
    # LR = -2 ln(0.99^23 0.01^7) + 2 ln((23/30)^23 (7/30)^7) = 32.338
    lr, p = kupiec_pof(30, 7, 0.01)
    assert lr == pytest.approx(32.338, abs=5e-4)
    assert p < 1e-7
    assert kupiec_pof(1000, 10, 0.01)[0] == pytest.approx(0.0, abs=1e-12)


def test_christoffersen_and_traffic_light() -> None:
    clustered = np.zeros(250, dtype=bool)
    clustered[[100, 101, 102, 103]] = True  # four exceptions in a row: not independent
    spread = np.zeros(250, dtype=bool)
    spread[[20, 80, 140, 200]] = True
    assert christoffersen(clustered, 0.01)["p_ind"] < 0.01
    assert christoffersen(spread, 0.01)["p_ind"] > 0.5
    # Basel, 250 days at 99 %: 0-4 green, 5-9 yellow, 10+ red.
    assert [traffic_light(250, x) for x in (4, 5, 9, 10)] == ["green", "yellow", "yellow", "red"]


def test_ewma_filter_reads_no_future_value() -> None:
    rng = np.random.default_rng(1)
    returns = rng.normal(0, 0.03, (400, 2))
    z1, _ = ewma_filter(returns, 0.94)
    shuffled = returns.copy()
    shuffled[300:] = rng.permutation(shuffled[300:])  # change the future only
    z2, _ = ewma_filter(shuffled, 0.94)
    np.testing.assert_array_equal(z1[:300], z2[:300])
    # Day 300's vol forecast (z_300 = r_300 / s_300) uses only returns before day 300.
    np.testing.assert_allclose(returns[300] / z1[300], shuffled[300] / z2[300], rtol=1e-15)


def test_tail_measure_by_hand() -> None:
    # One BTC long at 50,000 on 100 scenarios: moves -10 %, -8 %, -6 %, then 97 of +1 %.
    # 99 %: k = ceil(100 x 1 %) = 1 -> VaR = ES = 5,000. 97.5 %: k = 3 -> VaR = 3,000
    # (third worst), ES = (5,000 + 4,000 + 3,000) / 3 = 4,000.
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", 1, 50000)], {"USDC": 0})))
    moves = np.array([[-0.10, -0.08, -0.06] + [0.01] * 97])
    scenarios = ScenarioSet(moves=moves, vol_shocks=np.zeros_like(moves),
                            end_days_ns=np.arange(100, dtype=np.int64))
    var, es, worst = tail_measures(bound, scenarios, RiskConfig().var)
    assert (var[0], es[0], worst[0]) == pytest.approx((5000.0, 5000.0, 0))
    cfg = RiskConfig.from_dict({"var": {"confidence": 0.975}}).var
    var, es, _ = tail_measures(bound, scenarios, cfg)
    assert (var[0], es[0]) == pytest.approx((3000.0, 4000.0))


def _series(closes: np.ndarray, start_day: int = 18_000) -> PriceSeries:
    t = (np.arange(closes.size) + start_day) * DAY
    return PriceSeries(source="synthetic", time_ns=t.astype(np.int64), close=closes,
                       open=closes, high=closes, low=closes, volume=np.zeros(closes.size))


def _correlated_history(rho: float, days: int = 1500, seed: int = 4) -> VarHistory:
    rng = np.random.default_rng(seed)
    normals = rng.standard_normal((days, 2))
    btc = 0.03 * normals[:, 0]
    eth = 0.03 * (rho * normals[:, 0] + np.sqrt(1 - rho**2) * normals[:, 1])
    return VarHistory.from_series({"BTC": _series(50000 * np.exp(np.cumsum(btc))),
                                   "ETH": _series(2000 * np.exp(np.cumsum(eth)))})


def _es(history: VarHistory, positions: list[tuple[str, float, float]]) -> float:
    bound = bind(portfolio_doc(account("a", positions, {"USDC": 0})))
    return float(VarModel(history).compute(bound, RiskConfig()).initial_margin[0])


@pytest.mark.parametrize(("rho", "hedges"), [(0.9, True), (0.7, True), (-0.5, False)])
def test_long_short_pair_vs_each_leg(rho: float, hedges: bool) -> None:
    # Equal vols and notionals (1 BTC at 50,000 vs 25 ETH at 2,000): positively correlated legs
    # hedge each other, negatively correlated ones add up.
    history = _correlated_history(rho)
    btc, eth = ("BTC-PERP", 1.0, 50000.0), ("ETH-PERP", -25.0, 2000.0)
    pair, alone = _es(history, [btc, eth]), max(_es(history, [btc]), _es(history, [eth]))
    assert (pair < alone) is hedges


def test_apc_options() -> None:
    history = _correlated_history(0.8, days=4000)
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", 1, 50000)], {"USDC": 0})))
    model = VarModel(history)
    plain = model.compute(bound, RiskConfig()).initial_margin[0]
    for apc, check in (("buffer", lambda x: x == pytest.approx(1.25 * plain)),
                       ("floor", lambda x: x >= plain - 1e-9),
                       ("stressed_weight", lambda x: x > 0)):
        value = model.compute(bound, RiskConfig.from_dict({"var": {"apc": apc}}))
        assert check(value.initial_margin[0]), apc


def test_long_option_cannot_lose_more_than_its_value() -> None:
    history = _correlated_history(0.8)
    bound = bind(portfolio_doc(account("a", [("BTC-27JUN25-60000-C", 3, 100)], {"USDC": 0})))
    result = VarModel(history).compute(bound, RiskConfig())
    assert 0 < result.initial_margin[0] <= 3 * bound.mark[0] + 1e-9


def test_history_must_cover_the_book() -> None:
    from margin_engine.core.errors import InputError

    bound = bind(portfolio_doc(account("a", [("SOL-PERP", 1, 150)])),
                 market_doc(underlyings={"SOL": {"index": 150}}))
    with pytest.raises(InputError, match="history for every underlying"):
        VarModel(_correlated_history(0.5)).compute(bound, RiskConfig())


def test_compute_var_from_the_cli(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    for name, level in (("btc", 50000.0), ("eth", 2000.0)):
        closes = level * np.exp(np.cumsum(rng.normal(0, 0.03, 600)))
        days = np.datetime64("2023-01-01") + np.arange(600)
        (tmp_path / f"{name}.csv").write_text("date,open,high,low,close,volume\n" + "".join(
            f"{d} 00:00:00+00:00,{c},{c},{c},{c},0\n" for d, c in zip(days, closes, strict=True)))
    portfolio = tmp_path / "p.json"
    market = tmp_path / "m.json"
    portfolio.write_text(json.dumps(portfolio_doc(account("a", [("BTC-PERP", 1, 50000)]))))
    market.write_text(json.dumps(market_doc()))
    out = CliRunner().invoke(app, [
        "compute", str(portfolio), "--market", str(market), "--model", "var", "--history",
        f"BTC={tmp_path / 'btc.csv'}", "--history", f"ETH={tmp_path / 'eth.csv'}",
        "--confidence", "0.975", "--json"])
    assert out.exit_code == 0, out.output
    entry = json.loads(out.stdout)["accounts"][0]
    assert entry["model"] == "var"
    assert entry["components"]["es"] == pytest.approx(entry["initial_margin"])
    assert entry["components"]["var"] <= entry["components"]["es"]


def test_btc_var_backtest_passes_kupiec() -> None:
    path = SHARED / "data" / "binance_btcusdt_daily_2017-2025.csv"
    if not path.exists():
        pytest.skip(f"{path} not found (../shared/data is absent)")
    from margin_engine.backtest.var_backtest import var_backtest_long
    from margin_engine.core.timeutil import parse_timestamp
    from margin_engine.data import load_price_file

    result = var_backtest_long(load_price_file(path),
                               start_ns=parse_timestamp("2018-01-01T00:00:00Z", field="start"),
                               min_window=100)
    # 2018-01-01 .. 2025-08-26: 2,795 days, 29 exceptions vs 27.95 expected, p = 0.84.
    assert result["observations"] == 2795
    assert result["exceptions"] == 29
    assert result["kupiec_p"] > 0.05
    assert result["traffic_light"] == "green"


def test_var_equity_after_haircuts_leaves_the_coin_vol_to_the_scenarios() -> None:
    # 1 BTC of collateral against a short BTC perp: the var model revalues the coin in its
    # scenarios, so only its liquidity part comes off equity: 50,000 x 0.1 sqrt(50,000 / 2e10).
    import math

    history = _correlated_history(0.8)
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", -1, 50000)], {"BTC": 1})))
    result = VarModel(history).compute(bound, RiskConfig())
    equity = bound.equity()
    assert result.adjusted_equity(equity)[0] < equity[0]
    assert equity[0] - result.adjusted_equity(equity)[0] == pytest.approx(
        50000 * 0.1 * math.sqrt(50000 / 2e10), rel=1e-12)
