"""Two figures that looked wrong, worked by hand: the liquidation penalty charged vs due, and
USDC at its oracle price giving fewer breaches than USDC at 1.0 on some minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from margin_engine.book.columnar import book_from_portfolio
from margin_engine.data.prices import PriceSeries
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.ledger.journal import INSURANCE_FUND
from margin_engine.liquidation.config import LiquidationConfig
from margin_engine.liquidation.replay import replay
from margin_engine.margin.config import RiskConfig
from tests.conftest import NO_HAIRCUTS, account, market_doc, portfolio_doc


def _series(prices: list[float], step_s: int = 60) -> PriceSeries:
    p = np.array(prices, dtype=np.float64)
    return PriceSeries(source="test", time_ns=np.arange(p.size, dtype=np.int64) * step_s * 10**9
                       + 1_750_000_000 * 10**9, close=p, open=p, high=p, low=p,
                       volume=np.zeros(p.size))


def test_penalty_due_is_capped_at_the_equity_left() -> None:
    # 10 BTC-PERP long from 50,000 on 10,000 USDC (cross). At 49,200 the equity is
    # 10,000 - 8,000 = 2,000 < MM 1 % x 492,000 = 4,920: liquidated. Closing everything still
    # leaves equity 2,000 - penalty < IM 0, so all 10 are closed: penalty due 1 % x 492,000 =
    # 4,920, but only the 2,000 left can be charged; 2,920 is not collected and the account
    # ends at 0 (no bad debt: the shortfall of a penalty is never the fund's).
    book = book_from_portfolio(parse_portfolio(portfolio_doc(
        account("long", [("BTC-PERP", 10, 50000)], {"USDC": 10000}, mode="cross"))))
    market = parse_market(market_doc(timestamp="2025-06-15T12:00:00Z"))
    result = replay(book, market, {"BTC": _series([50000, 49200, 49200])}, config=NO_HAIRCUTS,
                    liquidation=LiquidationConfig(latency_seconds=0, penalty_rate=0.01))
    (event,) = [e for e in result.events if e["type"] == "liquidation"]
    assert sum(c["penalty_due"] for c in event["closed"]) == pytest.approx(4920.0)
    assert event["penalty_due"] == pytest.approx(4920.0)
    assert event["penalty"] == pytest.approx(2000.0)
    assert event["penalty_not_collected"] == pytest.approx(2920.0)
    assert event["penalty"] + event["penalty_not_collected"] == pytest.approx(
        event["penalty_due"], rel=1e-12)
    assert event["equity_after"] == pytest.approx(0.0, abs=1e-6)
    assert result.totals["bad_debt"] == 0.0
    assert result.ledger.balance(INSURANCE_FUND, "USD") == Decimal("2000")


def test_oracle_price_above_one_can_hide_a_breach_that_one_shows() -> None:
    # 10 BTC-PERP long from 50,000 on 100,000 USDC, cross, no haircuts: MM = 1 % of notional;
    # BTC starts at 40,500 (equity 5,000 > MM 4,050).
    # bar 1: BTC 40,400, USDC 1.002: at 1.0 equity 100,000 - 96,000 = 4,000 < MM 4,040
    #        (below); at the oracle price 4,000 + 200 = 4,200 >= 4,040 (not below).
    # bar 2: BTC 40,410, USDC 0.999: at 1.0 equity 4,100 >= MM 4,041; at the oracle price
    #        4,100 - 100 = 4,000 < 4,041 (below only at the oracle price).
    # Below 1.0 the oracle always shows at least the breaches of 1.0; above 1.0 it may show
    # fewer: a whole-window count at the oracle price can be lower than at 1.0.
    book = book_from_portfolio(parse_portfolio(portfolio_doc(
        account("long", [("BTC-PERP", 10, 50000)], {"USDC": 100000}, mode="cross"))))
    doc = market_doc(timestamp="2025-06-15T12:00:00Z")
    doc["underlyings"]["BTC"]["index"] = 40500
    doc["assets"]["BTC"]["price"] = 40500
    market = parse_market(doc)
    btc = _series([40500, 40400, 40410])
    usdc = _series([1.0, 1.002, 0.999])
    settings = LiquidationConfig(latency_seconds=0)
    fixed = replay(book, market, {"BTC": btc}, config=NO_HAIRCUTS, liquidation=settings,
                   execute=False)
    oracle = replay(book, market, {"BTC": btc}, config=NO_HAIRCUTS, liquidation=settings,
                    asset_paths={"USDC": usdc}, execute=False)
    assert fixed.below_by_bar is not None
    assert oracle.below_by_bar is not None
    assert fixed.below_by_bar[:, 0].tolist() == [False, True, False]
    assert oracle.below_by_bar[:, 0].tolist() == [False, False, True]
    at_or_below_peg = usdc.close <= 1.0
    assert not (fixed.below_by_bar & ~oracle.below_by_bar)[at_or_below_peg].any()


def _minutes(path: Path, start: str, prices: np.ndarray) -> None:
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)
    path.write_text("date,open,high,low,close,volume\n" + "".join(
        f"{(t0 + timedelta(minutes=k)).isoformat(sep=' ')},{p},{p},{p},{p},1\n"
        for k, p in enumerate(prices)))


def test_depeg_study_counts_breaches_at_only_one_valuation(tmp_path: Path) -> None:
    from margin_engine.liquidation.studies import DEPEG_FILES, depeg_study

    minutes = np.arange(90)
    btc = 21000 * (1 - 0.0015 * np.minimum(minutes, 60))  # -9 % over an hour
    # above the peg for 20 minutes, then down 0.3 % a minute to 0.88 and back to 0.97
    usdc = np.where(minutes < 20, 1.003, np.maximum(1.003 - 0.003 * (minutes - 19), 0.88))
    usdc = np.where(minutes >= 70, np.minimum(0.88 + 0.003 * (minutes - 69), 0.97), usdc)
    _minutes(tmp_path / DEPEG_FILES[0], "2023-03-10 00:00:00", btc)
    _minutes(tmp_path / DEPEG_FILES[1], "2023-03-10 00:00:00", btc / usdc)
    study = depeg_study(tmp_path, accounts=60, seed=2)
    assert study["minutes_above_1"] == 20
    assert study["usdc_high"] == pytest.approx(1.003)
    for key in ("at_low", "during_depeg", "whole_window"):
        cell = study[key]
        assert cell["oracle"] - cell["fixed_1"] == cell["oracle_only"] - cell["fixed_only"]
    assert study["during_depeg"]["fixed_only"] == 0  # below the peg: no breach only at 1.0
    assert study["whole_window"]["oracle"] >= study["whole_window"]["fixed_1"]
    assert RiskConfig().liquidation.penalty_rate == 0.01
