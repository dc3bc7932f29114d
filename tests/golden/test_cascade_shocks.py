"""Cascade shocks read from the real files in ../shared/data, and a USDC-2023 cascade whose
liquidations reach ETH instruments through USDC collateral alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from margin_engine.liquidation.cascade import Channel, run_cascade
from margin_engine.liquidation.cascade_shock import parse_shock
from margin_engine.liquidation.venue_population import fund, venue_config, venue_population
from tests.conftest import SHARED

DATA = SHARED / "data"


@pytest.fixture
def data() -> Path:
    if not (DATA / "yahoo_ustc_usd_daily.csv").exists():
        pytest.skip(f"{DATA} not found (../shared/data is absent)")
    return DATA


def test_presets_take_the_real_paths_from_start_to_trough(data: Path) -> None:
    usdc = parse_shock("usdc-2023", data).moves[0]
    # implied USDC/USD low 0.8748 at 2023-03-11 07:50 (tests/golden/test_crash_replays.py)
    assert usdc.symbol == "USDC"
    assert usdc.ratio == pytest.approx(0.8748, abs=2e-3)
    assert "2023-03-11T07:50:00Z" in usdc.source
    ust = parse_shock("ust-2022", data).moves[0]
    # UST close 0.999546 on 2022-05-05, 0.076013 on 2022-05-19: USDT follows it
    assert ust.symbol == "USDT"
    assert ust.ratio == pytest.approx(0.076013 / 0.999546, rel=1e-9)
    crash = parse_shock("crash-2025-10-10", data)
    ratios = crash.ratios()
    # 5m perp closes: BTC 121,609.8 -> 103,441.3 and ETH 4,345.2 -> 3,476.18 at 21:15
    assert ratios["BTC"] == pytest.approx(103441.3 / 121609.8, rel=1e-12)
    assert ratios["ETH"] == pytest.approx(3476.18 / 4345.2, rel=1e-12)
    assert crash.index == {"BTC": 121609.8, "ETH": 4345.2}
    retargeted = parse_shock("USDC=ust-2022", data).moves[0]
    assert (retargeted.symbol, retargeted.ratio) == ("USDC", ust.ratio)


def test_ust_collapse_of_usdt_reaches_eth_instruments_through_collateral(data: Path) -> None:
    # USDT at 7.6 % of its price (UST's May 2022 path): ETH has not moved in round 1, yet ETH
    # instruments are liquidated, every dollar of them through collateral
    shock = parse_shock("ust-2022", data)
    config = venue_config()
    population = venue_population(1200, 8)
    book = fund(population, config, ["cross"])
    result = run_cascade(book, population.market, shock, model="cross", config=config)
    first = result.rounds[0]
    assert first.prices["ETH"] == result.start_prices["ETH"]
    eth = [h for h in first.hits if h.underlying == "ETH"]
    assert eth
    assert all(h.own_move == 1.0 for h in eth)
    assert sum(h.by_channel.get(Channel.COLLATERAL, 0.0) for h in eth) > 0.0
    assert sum(h.by_channel.get(Channel.OWN_PRICE, 0.0) for h in eth) == 0.0


def test_usdc_2023_depeg_is_inside_the_portfolio_models_depeg_scenario(data: Path) -> None:
    # USDC -12.6 % (0.8748): the portfolio IM already holds every stablecoin at 0.87 (1/3
    # weight) and MM = 0.8 IM, so an account at up to 97 % of its IM stays above MM: none
    # is liquidated
    shock = parse_shock("usdc-2023", data)
    config = venue_config()
    population = venue_population(1500, 8)
    book = fund(population, config, ["portfolio"])
    result = run_cascade(book, population.market, shock, model="portfolio", config=config)
    assert result.rounds == ()
    assert result.liquidatable_at_end == 0
