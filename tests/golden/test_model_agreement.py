"""The sensitivity and var models against the portfolio model on the strategy set, and the
HTML report."""

from __future__ import annotations

from pathlib import Path

import pytest

from margin_engine.book.bound import bind_market
from margin_engine.book.columnar import book_from_portfolio
from margin_engine.demo.canonical import canonical_portfolio
from margin_engine.demo.market import demo_market_document
from margin_engine.demo.report import build_report
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.margin.agreement import pairwise_agreement
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.run import run_models
from tests.conftest import SHARED

# Pairs every risk model must order the same way (clear differences in risk).
CLEAR = [("naked future", "perp-future basis"), ("naked short call", "bull call spread"),
         ("short strangle", "bear put spread"), ("covered call", "calendar spread"),
         ("synthetic forward", "perp-future basis")]


def _run(built: dict) -> tuple[list[str], dict]:
    bound = bind_market(book_from_portfolio(parse_portfolio(canonical_portfolio())),
                        parse_market(demo_market_document()))
    models = ["portfolio", "sensitivity", *(["var"] if "var" in built else [])]
    run = run_models(bound, RiskConfig(), models, built)
    return list(bound.book.account_ids), {m: run.results[m].initial_margin for m in models}


def test_sensitivity_orders_books_like_the_portfolio_model() -> None:
    names, im = _run({})
    result = pairwise_agreement(names, im["portfolio"], im["sensitivity"])
    assert result["pairs"] >= 60
    assert result["rate"] >= 0.8
    for a, b in CLEAR:
        i, j = names.index(a), names.index(b)
        assert (im["sensitivity"][i] > im["sensitivity"][j]) == \
            (im["portfolio"][i] > im["portfolio"][j]), (a, b)


def _history() -> dict:
    data = SHARED / "data"
    if not (data / "binance_btcusdt_daily_2022-2025.csv").exists():
        pytest.skip(f"{data} not found (../shared/data is absent)")
    from margin_engine.data import load_price_file
    from margin_engine.margin.var import VarHistory, VarModel

    history = VarHistory.from_series(
        {u: load_price_file(data / f"binance_{u.lower()}usdt_daily_2022-2025.csv")
         for u in ("BTC", "ETH")},
        {u: load_price_file(data / f"deribit_dvol_{u.lower()}_daily_ohlc_2021-2026.csv")
         for u in ("BTC", "ETH")})
    return {"var": VarModel(history)}


def test_var_orders_books_like_the_portfolio_model() -> None:
    names, im = _run(_history())
    result = pairwise_agreement(names, im["portfolio"], im["var"])
    assert result["rate"] >= 0.85
    for a, b in CLEAR:
        i, j = names.index(a), names.index(b)
        assert (im["var"][i] > im["var"][j]) == (im["portfolio"][i] > im["portfolio"][j]), (a, b)


def test_report_writes_html_and_charts(tmp_path: Path) -> None:
    document = build_report(tmp_path, {})
    assert document["models"] == ["isolated", "cross", "portfolio", "sensitivity"]
    html = (tmp_path / "report.html").read_text()
    assert "efficiency.png" in html
    assert "covered call" in html
    assert (tmp_path / "efficiency.png").stat().st_size > 20_000
    assert (tmp_path / "initial_margin.png").stat().st_size > 20_000
