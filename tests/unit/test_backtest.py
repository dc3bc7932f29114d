"""Forecasters read no future value; backtest mechanics on synthetic and real history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from margin_engine.backtest.engine import PredictiveConfig, run_backtest
from margin_engine.backtest.inputs import DailyHistory
from margin_engine.book.columnar import book_from_portfolio
from margin_engine.cli.app import app
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.margin.config import RiskConfig
from margin_engine.vol.forecast import FORECASTERS, ForecastInputs, get_forecaster
from tests.conftest import SHARED

DAY = 86_400 * 10**9


def _inputs(seed: int, n: int = 900) -> ForecastInputs:
    rng = np.random.default_rng(seed)
    vol = 0.03 * np.exp(np.cumsum(rng.normal(0, 0.05, n)) * 0.3)
    returns = vol * rng.standard_normal(n)
    return ForecastInputs(returns=returns, realised_variance=returns**2 * rng.uniform(0.5, 1.5, n),
                          dvol=100 * vol * np.sqrt(365) * rng.uniform(0.9, 1.1, n),
                          funding=rng.normal(1e-4, 5e-5, n), volume=rng.uniform(1e3, 1e4, n))


@pytest.mark.parametrize("name", sorted(FORECASTERS))
def test_no_forecaster_reads_the_future(name: str) -> None:
    # Shuffle everything after day 700: every forecast for days <= 700 must not change.
    original = _inputs(3)
    rng = np.random.default_rng(8)
    cut = 700
    order = np.concatenate([np.arange(cut), cut + rng.permutation(original.returns.size - cut)])
    shuffled = ForecastInputs(**{k: getattr(original, k)[order] for k in (
        "returns", "realised_variance", "dvol", "funding", "volume")})
    forecaster = get_forecaster(name)
    before, after = forecaster.variance(original), forecaster.variance(shuffled)
    assert np.isfinite(before[cut]) or name in ("learned",)
    np.testing.assert_array_equal(before[:cut + 1], after[:cut + 1])
    assert not np.array_equal(before[cut + 2:], after[cut + 2:])  # the future did change


def _gbm_history(n: int = 2000, vol: float = 0.03, seed: int = 5) -> DailyHistory:
    rng = np.random.default_rng(seed)
    returns = vol * rng.standard_normal(n - 1)
    closes = 30000 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    nan = np.full(n - 1, np.nan)
    return DailyHistory(days_ns=(np.arange(n) + 17_000).astype(np.int64) * DAY, closes=closes,
                        inputs=ForecastInputs(returns=returns, realised_variance=returns**2,
                                              dvol=nan, funding=nan, volume=np.ones(n - 1)),
                        intraday=False)


BOOK = {"schema": "margin-engine/portfolio/v1", "accounts": [{
    "id": "long", "mode": "portfolio", "collateral": {"USDC": 100000},
    "positions": [{"instrument": "BTC-PERP", "size": 1, "entry_price": 30000}]}]}
MARKET = {"schema": "margin-engine/market/v1", "timestamp": "2016-07-19T00:00:00Z",
          "underlyings": {"BTC": {"index": 30000, "vol": {"type": "flat", "sigma": 0.6}}},
          "assets": {"USDC": {"price": 1.0}}}


def _run(**kwargs: object) -> dict:
    result = run_backtest(book_from_portfolio(parse_portfolio(BOOK)), parse_market(MARKET),
                          {"BTC": _gbm_history()}, config=RiskConfig(), confidence=0.99,
                          mpor_days=1, **kwargs)  # type: ignore[arg-type]
    return result.summary


def test_ewma_margin_covers_a_normal_random_walk() -> None:
    # Gaussian returns at a constant 3 % a day: a normal-z EWMA margin at 99 % should see
    # about 1 % exceptions, and the margin rate should sit near 2.326 x 3 % = 7 %.
    summary = _run(forecaster="ewma")
    assert summary["observations"] == 1998 - 30 + 1  # close days 30 .. 1998 (EWMA seed: 30)
    assert 0.005 < summary["exception_rate"] < 0.017
    assert summary["kupiec_p"] > 0.01
    assert summary["mean_margin_rate"] == pytest.approx(2.326 * 0.03, rel=0.05)


def test_fixed_grid_and_tiers_on_the_same_walk() -> None:
    # A 16 % grid is never breached by 3 % daily moves; 2 % isolated tiers are breached on
    # about half the down days beyond 2 %: P(r < -2 %) = Phi(-2/3) = 25 %.
    assert _run(model="portfolio")["exceptions"] == 0
    isolated = _run(model="isolated")
    assert isolated["exception_rate"] == pytest.approx(0.25, abs=0.03)
    assert isolated["traffic_light"] == "red"


def test_apc_buffer_raises_margin_by_a_quarter() -> None:
    plain = _run(forecaster="ewma")
    buffered = _run(forecaster="ewma", predictive=PredictiveConfig(apc="buffer"))
    assert buffered["mean_margin"] == pytest.approx(1.25 * plain["mean_margin"], rel=1e-9)
    assert buffered["exceptions"] <= plain["exceptions"]


def test_backtest_cli_json(tmp_path: Path) -> None:
    history = _gbm_history(600)
    days = np.array(history.days_ns // DAY, dtype="datetime64[D]")
    prices = tmp_path / "btc.csv"
    prices.write_text("date,open,high,low,close,volume\n" + "".join(
        f"{d} 00:00:00+00:00,{c},{c},{c},{c},1\n"
        for d, c in zip(days, history.closes, strict=True)))
    portfolio = tmp_path / "p.json"
    portfolio.write_text(json.dumps(BOOK))
    out = CliRunner().invoke(app, ["backtest", "--prices", f"BTC={prices}", "--portfolio",
                                   str(portfolio), "--forecaster", "garch", "--json",
                                   "--output", str(tmp_path / "report")])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    for key in ("observations", "exceptions", "expected_exceptions", "kupiec_lr", "kupiec_p",
                "christoffersen_p", "traffic_light", "mean_margin", "median_margin",
                "max_1d_increase", "max_5d_increase", "mean_shortfall", "worst_shortfall"):
        assert key in summary
    assert (tmp_path / "report" / "backtest.png").stat().st_size > 20_000
    bad = CliRunner().invoke(app, ["backtest", "--prices", f"BTC={prices}", "--portfolio",
                                   str(portfolio)])
    assert bad.exit_code == 2
    assert "exactly one of --model or --forecaster" in bad.stderr


def test_crash_study_slice() -> None:
    from margin_engine.backtest.study import HISTORIES, run_study

    data = SHARED / "data"
    if not (data / HISTORIES[1][2]).exists():
        pytest.skip(f"{data} not found (../shared/data is absent)")
    result = run_study(data, histories=(HISTORIES[1],), methods=("portfolio", "ewma"))
    methods = {row["method"] for row in result["full_history"]}
    assert methods == {"portfolio", "predictive:ewma"}
    windows = {w["window"] for w in result["crash_windows"]}
    assert {"2022-11 FTX", "2024-08-05", "2025-10-10"} <= windows
    ewma = next(r for r in result["full_history"] if r["method"] == "predictive:ewma")
    assert ewma["observations"] > 1300


def test_backtest_says_which_positions_were_already_settled() -> None:
    # The book is held at the market's time every day; a future that expired before it
    # (BTC-30JUN16, 2016-06-30 08:00 < 2016-07-19) is settled cash, margined at 0, and named.
    book = {"schema": "margin-engine/portfolio/v1", "accounts": [{
        "id": "long", "mode": "portfolio", "collateral": {"USDC": 100000},
        "positions": [{"instrument": "BTC-PERP", "size": 1, "entry_price": 30000},
                      {"instrument": "BTC-30JUN16", "size": 3, "entry_price": 29000}]}]}
    runs = [run_backtest(book_from_portfolio(parse_portfolio(doc)), parse_market(MARKET),
                         {"BTC": _gbm_history(300)}, config=RiskConfig(), confidence=0.99,
                         mpor_days=1, model="portfolio") for doc in (book, BOOK)]
    both, perp = runs[0].summary, runs[1].summary
    assert both["settled_instruments"] == ["BTC-30JUN16"]
    assert perp["settled_instruments"] == []
    assert both["mean_margin"] == pytest.approx(perp["mean_margin"], rel=1e-12)
    # The settled cash (3 x (30,000 - 29,000)) stays put while the index walks: same losses.
    np.testing.assert_allclose(runs[0].loss, runs[1].loss, rtol=1e-9, atol=1e-6)
