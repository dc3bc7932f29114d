"""`hyperliquid`: Hyperliquid perpetuals, cross and isolated.

Maintenance margin is half the initial margin at the asset's maximum leverage (BTC 40x:
IM 2.5 %, MM 1.25 %; ETH 25x: IM 4 %, MM 2 %), tiered by notional (BTC above 150M USD: 20x).
An account (or isolated position) below MM is liquidated with market orders on the book; below
2/3 of MM the liquidator vault takes it over (backstop, the MM is not returned); a negative
account is auto-deleveraged against the opposite side ranked by unrealised P&L and leverage.
The isolated liquidation price the venue publishes,

    liq_price = price - side x margin_available / size / (1 - l x side),  l = MM fraction,

is the root of margin + P&L = MM that the shared search finds.
"""

from __future__ import annotations

from margin_engine.profiles.base import ProfileInfo, Source
from margin_engine.profiles.brackets import build_table, flat_table
from margin_engine.profiles.linear import LinearProfile, LinearVenue

READ = "2026-12-02"
LIQUIDATIONS = Source(title="Hyperliquid Docs: Trading / Liquidations",
                      url="https://hyperliquid.gitbook.io/hyperliquid-docs/trading/liquidations",
                      published="undated", read=READ)
ADL = Source(title="Hyperliquid Docs: Trading / Auto-deleveraging",
             url="https://hyperliquid.gitbook.io/hyperliquid-docs/trading/auto-deleveraging",
             published="undated", read=READ)

BACKSTOP_FRACTION_OF_MM = 2.0 / 3.0
BTC = build_table("BTC", [(0.0, 0.0125, 40), (150_000_000.0, 0.025, 20)])
ETH = flat_table("ETH", 0.02, 25)
OTHER = flat_table("OTHER", 0.05, 10)

INFO = ProfileInfo(
    name="hyperliquid", venue="Hyperliquid",
    summary="IM at the asset's maximum leverage, MM half of it; liquidation below MM, backstop "
            "by the liquidator vault below 2/3 MM, then auto-deleveraging.",
    parameters_as_of="2025-06-01",
    sources=(LIQUIDATIONS, ADL),
    leaves_out=("dated futures and options (not listed): such accounts are unsupported",
                "non-USDC collateral", "partial (20 %) liquidation of large positions and its "
                "cooldown", "the user's chosen leverage (IM at the maximum)"))


def profile() -> LinearProfile:
    return LinearProfile(INFO, LinearVenue(tables={"BTC": BTC, "ETH": ETH},
                                           default_table=OTHER, lists_dated_futures=False,
                                           stable_collateral_only=True,
                                           backstop_fraction=BACKSTOP_FRACTION_OF_MM))
