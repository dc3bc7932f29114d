"""`binance-um`: Binance USD-M futures, isolated and cross, tiered brackets with maintenance
amounts and the exchange's liquidation formula (see linear.py for the formula).

Brackets: BTCUSDT and ETHUSDT tables of the liquidation FAQ's era; their maintenance amounts
follow the FAQ's own formula and reproduce the amounts the FAQ states (BTCUSDT level 3: 250,000
x (1 % - 0.5 %) + 50 = 1,300; level 4: 16,300; ETHUSDT 10 % bracket: 135,365). Today's tables
are longer and lower; load them from a ccxt ``fetch_leverage_tiers`` file (ccxt_files.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from margin_engine.profiles.base import ProfileInfo, Source
from margin_engine.profiles.brackets import BracketTable, build_table, flat_table
from margin_engine.profiles.linear import LinearProfile, LinearVenue

READ = "2026-12-02"
FAQ = Source(title="Binance: How to Calculate Liquidation Price of USDⓈ-M Futures Contracts",
             url="https://www.binance.com/en/support/faq/b3c689c1f50a44cabb3a84e663b81d93",
             published="2020-06-11 (updated since)", read=READ)
BRACKETS = Source(title="Binance API: Notional and Leverage Brackets "
                        "(GET /fapi/v1/leverageBracket)",
                  url="https://developers.binance.com/docs/derivatives/usds-margined-futures/"
                      "account/rest-api/Notional-and-Leverage-Brackets",
                  published="undated", read=READ)

# (floor USD, maintenance margin rate, max leverage)
BTCUSDT = build_table("BTCUSDT", [
    (0.0, 0.004, 125), (50_000.0, 0.005, 100), (250_000.0, 0.01, 50),
    (1_000_000.0, 0.025, 20), (5_000_000.0, 0.05, 10), (20_000_000.0, 0.10, 5),
    (50_000_000.0, 0.125, 4), (100_000_000.0, 0.15, 3), (200_000_000.0, 0.25, 2),
    (300_000_000.0, 0.50, 1)],
    [0.0, 50.0, 1_300.0, 16_300.0, 141_300.0, 1_141_300.0, 2_391_300.0, 4_891_300.0,
     24_891_300.0, 99_891_300.0], source="binance-um BTCUSDT")
ETHUSDT = build_table("ETHUSDT", [
    (0.0, 0.005, 100), (10_000.0, 0.0065, 75), (100_000.0, 0.01, 50),
    (500_000.0, 0.02, 25), (1_000_000.0, 0.05, 10), (2_000_000.0, 0.10, 5),
    (5_000_000.0, 0.125, 4), (10_000_000.0, 0.15, 3), (20_000_000.0, 0.25, 2),
    (50_000_000.0, 0.50, 1)],
    [0.0, 15.0, 365.0, 5_365.0, 35_365.0, 135_365.0, 260_365.0, 510_365.0, 2_510_365.0,
     15_010_365.0], source="binance-um ETHUSDT")
OTHER = flat_table("OTHER", 0.01, 50)

INFO = ProfileInfo(
    name="binance-um", venue="Binance USD-M futures",
    summary="Per-symbol notional brackets with maintenance amounts; isolated positions hold "
            "their own margin, cross accounts share one equity; liquidation where equity = MM "
            "(the exchange's liquidation-price formula), IM at each bracket's maximum leverage.",
    parameters_as_of="2021-05-01",
    sources=(FAQ, BRACKETS),
    leaves_out=("options (Binance options are a separate product): accounts holding them are "
                "marked unsupported", "coin-margined (inverse) contracts (COIN-M)",
                "hedge mode (long and short legs of one symbol)", "the user's chosen leverage: "
                "IM is at each bracket's maximum leverage (the least a position can post)",
                "mark-price vs last-price triggers and the liquidation clearance fee",
                "brackets after 2021: load today's from a ccxt leverage-tiers file"))


def venue(tables: Mapping[str, BracketTable] | None = None) -> LinearVenue:
    """Binance USD-M with the FAQ-era BTC and ETH tables, ``tables`` (by underlying)
    replacing them (e.g. read from a ccxt leverage-tiers file)."""
    return LinearVenue(tables={"BTC": BTCUSDT, "ETH": ETHUSDT, **(tables or {})},
                       default_table=OTHER, lists_dated_futures=True)


def profile(tables: Mapping[str, BracketTable] | None = None) -> LinearProfile:
    return LinearProfile(INFO, venue(tables))
