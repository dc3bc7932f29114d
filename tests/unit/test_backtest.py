"""Forecasters read no future value; backtest mechanics on synthetic and real history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from margin_engine.backtest.engine import (
    ApcMethod,
    PredictiveConfig,
    predictive_rates,
    run_backtest,
)
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
    if name == "predictive":  # its rates, not only its scale
        from margin_engine.vol.predictive import PredictiveForecaster

        rates = [PredictiveForecaster().rates(x, 0.99, 1).rate for x in (original, shuffled)]
        assert np.isfinite(rates[0][cut])
        np.testing.assert_array_equal(rates[0][:cut + 1], rates[1][:cut + 1])
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
    buffered = _run(forecaster="ewma", predictive=PredictiveConfig(apc=ApcMethod.BUFFER))
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
                                   str(portfolio), "--model", "portfolio", "--forecaster",
                                   "ewma"])
    assert bad.exit_code == 2
    assert "exactly one of --model or --forecaster" in bad.stderr
    # an error raised while backtesting, stderr not a terminal: the error is the first line
    # (the progress bar, cleared on a terminal, left an empty line before it)
    late = CliRunner().invoke(app, ["backtest", "--prices", f"BTC={prices}", "--portfolio",
                                    str(portfolio), "--start", "2030-01-01"])
    assert late.exit_code == 2
    assert late.stderr.startswith("margin-engine: error: "), repr(late.stderr[:80])


def test_crash_study_compares_methods_on_common_dates() -> None:
    from margin_engine.backtest.study import HISTORIES, run_study

    data = SHARED / "data"
    if not (data / HISTORIES[1][2]).exists():
        pytest.skip(f"{data} not found (../shared/data is absent)")
    result = run_study(data, histories=(HISTORIES[1],), methods=("portfolio", "ewma", "garch"))
    rows = result["full_history"]
    assert {row["method"] for row in rows} == {"portfolio", "predictive:ewma", "predictive:garch"}
    windows = {w["window"] for w in result["crash_windows"]}
    assert {"2022-11 FTX", "2024-08-05", "2025-10-10"} <= windows
    # the fixed grid has a margin from the first day, ewma from day 30 and garch from day 250:
    # every row is on garch's days (1,432 closes - 250 warm-up - 1 last day without a loss)
    assert {(r["observations"], r["first"], r["last"]) for r in rows} == {
        (1181, "2022-09-08T00:00:00Z", "2025-12-01T00:00:00Z")}
    by_window: dict[str, set[int]] = {}
    for w in result["crash_windows"]:
        by_window.setdefault(w["window"], set()).add(w["observations"])
    assert all(len(counts) == 1 for counts in by_window.values())


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


def _book(size: float) -> dict:
    return {**BOOK, "accounts": [{**BOOK["accounts"][0], "positions": [
        {"instrument": "BTC-PERP", "size": size, "entry_price": 30000}]}]}


@pytest.mark.parametrize("kwargs", [{"forecaster": "ewma"}, {"model": "portfolio"}])
def test_short_perp_is_margined_like_the_long(kwargs: dict) -> None:
    # SPEC 3.3: linear instruments are revalued at the standard grid's extreme move of the same
    # sign on the extended table, so a naked short perp pays the range like a naked long: the
    # forecast rate (or 16 %) x price on every day. With +50 % x 1/3 scaled by rate / 16 % the
    # short paid 0.50 / 3 / 0.16 = 1.0417 x the long's margin.
    history = _gbm_history(300)
    runs = [run_backtest(book_from_portfolio(parse_portfolio(_book(size))), parse_market(MARKET),
                         {"BTC": history}, config=RiskConfig(), confidence=0.99, mpor_days=1,
                         **kwargs) for size in (1, -1)]
    long, short = runs
    np.testing.assert_array_equal(long.days_ns, short.days_ns)
    np.testing.assert_allclose(short.margin, long.margin, rtol=1e-12)
    at = np.searchsorted(history.days_ns, long.days_ns)
    price = 30000 * history.closes[at] / history.closes[0]
    rate = (predictive_rates(history, "ewma", 0.99, 1, PredictiveConfig())[at]
            if "forecaster" in kwargs else np.full(at.size, 0.16))
    np.testing.assert_allclose(long.margin, rate * price, rtol=1e-9)


def _csv(tmp_path: Path, history: DailyHistory) -> Path:
    days = np.array(history.days_ns // DAY, dtype="datetime64[D]")
    prices = tmp_path / "btc.csv"
    prices.write_text("date,open,high,low,close,volume\n" + "".join(
        f"{d} 00:00:00+00:00,{c},{c},{c},{c},1\n"
        for d, c in zip(days, history.closes, strict=True)))
    return prices


def test_backtest_start_date_means_midnight_utc(tmp_path: Path) -> None:
    # A date alone was refused for lacking a zone; it means 00:00 UTC of that day.
    prices = _csv(tmp_path, _gbm_history(200))  # close days from 2016-07-19
    portfolio = tmp_path / "p.json"
    portfolio.write_text(json.dumps(BOOK))
    out = CliRunner().invoke(app, ["backtest", "--prices", f"BTC={prices}", "--portfolio",
                                   str(portfolio), "--model", "portfolio", "--start",
                                   "2016-09-01", "--end", "2016-10-01", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert (summary["first"], summary["last"]) == ("2016-09-01T00:00:00Z",
                                                   "2016-10-01T00:00:00Z")
    bad = CliRunner().invoke(app, ["backtest", "--prices", f"BTC={prices}", "--portfolio",
                                   str(portfolio), "--model", "portfolio", "--start",
                                   "2016-02-30"])
    assert bad.exit_code == 2
    assert "calendar date" in bad.stderr


def test_a_backtest_window_after_the_history_names_the_window_and_the_history(
        tmp_path: Path) -> None:
    """Before: "got 'portfolio', expected days with both a margin and a loss (more history or
    a later --start)": the method as the value and, for a start after the history, the wrong
    advice."""
    prices = _csv(tmp_path, _gbm_history(200))  # days 2016-07-18 to 2017-02-02
    portfolio = tmp_path / "p.json"
    portfolio.write_text(json.dumps(BOOK))
    out = CliRunner().invoke(app, ["backtest", "--prices", f"BTC={prices}", "--portfolio",
                                   str(portfolio), "--model", "portfolio", "--start",
                                   "2030-01-01"])
    assert out.exit_code == 2
    assert out.stderr.strip().startswith(
        "margin-engine: error: field '--start': got '2030-01-01 to the last day', expected "
        "days with both a portfolio margin and a 1-day loss: the histories' common days run "
        "2016-07-18 to 2017-02-02 (200 days); a window inside them of at least 2 days"), \
        out.stderr


def test_backtest_forecaster_defaults_to_predictive(tmp_path: Path) -> None:
    prices = _csv(tmp_path, _gbm_history(700))
    portfolio = tmp_path / "p.json"
    portfolio.write_text(json.dumps(BOOK))
    out = CliRunner().invoke(app, ["backtest", "--prices", f"BTC={prices}", "--portfolio",
                                   str(portfolio), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["method"] == "predictive:predictive"
    # its own history only: 30-day seed, then 500 standardised losses to calibrate on
    assert summary["first"] == "2017-12-30T00:00:00Z"


def test_compare_cli_runs_forecasters_long_and_short_on_common_dates(tmp_path: Path) -> None:
    prices = _csv(tmp_path, _gbm_history(700))
    portfolio = tmp_path / "p.json"
    portfolio.write_text(json.dumps(BOOK))
    out = CliRunner().invoke(app, ["backtest", "--compare", "ewma,garch,predictive", "--prices",
                                   f"BTC={prices}", "--portfolio", str(portfolio), "--json",
                                   "--output", str(tmp_path / "cmp")])
    assert out.exit_code == 0, out.output
    document = json.loads(out.stdout)
    (history,) = document["histories"]
    rows = history["rows"]
    assert {(r["side"], r["method"]) for r in rows} == {
        (side, m) for side in ("long", "short") for m in ("ewma", "garch", "predictive")}
    # garch starts at day 250, predictive at day 530: every row is on predictive's days
    assert {(r["observations"], r["first"]) for r in rows} == {(169, "2017-12-30T00:00:00Z")}
    assert history["common_dates"]["days"] == 169
    predictive = next(r for r in rows if r["method"] == "predictive" and r["side"] == "long")
    assert "apc_cost" in predictive
    assert len(predictive["anticipation"]) == 5
    verdict = history["verdict"]["predictive"]
    assert set(verdict["checks"]) == {"exceptions_at_most_ewma", "margin_at_most_1.05x_ewma",
                                      "kupiec_both_sides", "5d_rise_at_most_ewma"}
    assert (tmp_path / "cmp" / "compare.html").exists()
    bad = CliRunner().invoke(app, ["backtest", "--compare", "ewma,nope", "--prices",
                                   f"BTC={prices}", "--portfolio", str(portfolio)])
    assert bad.exit_code == 2
    assert "'nope'" in bad.stderr
