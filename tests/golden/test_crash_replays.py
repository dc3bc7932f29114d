"""Slices of the real crash and depeg studies (the full study: `margin-engine simulate crashes`)."""

from __future__ import annotations

import pytest

from margin_engine.core.timeutil import parse_timestamp
from margin_engine.liquidation.studies import crash_replays, depeg_study
from tests.conftest import SHARED

DATA = SHARED / "data"


@pytest.fixture
def data() -> object:
    if not (DATA / "binance_btcusdt_perp_15m_window_2024-08-05.csv").exists():
        pytest.skip(f"{DATA} not found (../shared/data is absent)")
    return DATA


def test_2024_08_05_slice_breaker_off_and_on(data: object) -> None:
    # 2024-08-04 12:00 -> 2024-08-06 00:00 (the -15 % BTC / -23 % ETH plunge), 120 accounts.
    rows = crash_replays(DATA, accounts=120, seed=3, latency_seconds=60, insurance_fund=0,
                         penalty_rate=0.002, windows=("2024-08-05 (15m)",),
                         between=(parse_timestamp("2024-08-04T12:00:00Z", field="s"),
                                  parse_timestamp("2024-08-06T00:00:00Z", field="e")))
    off, on = rows
    assert (off["breaker"], on["breaker"]) == ("off", "on")
    for row in rows:
        assert row["liquidations"] > 0
        assert row["liquidated_notional"] > 0
        assert 0 <= row["insurance_fund_used"] <= row["bad_debt"] + 1e-6
    assert on["bad_debt"] <= off["bad_debt"]


def test_usdc_depeg_slice_counts_more_liquidatable_accounts_at_oracle_price(data: object
                                                                            ) -> None:
    result = depeg_study(DATA, accounts=150, seed=2,
                         window=("2023-03-10T18:00:00Z", "2023-03-11T12:00:00Z"))
    assert result["usdc_low"] == pytest.approx(0.8748, abs=5e-5)
    assert result["usdc_low_at"] == "2023-03-11T07:50:00Z"
    assert result["at_low"]["oracle"] > result["at_low"]["fixed_1"]
    assert result["during_depeg"]["oracle"] >= result["during_depeg"]["fixed_1"]
