"""`binance-pm`: Binance Portfolio Margin (the unified account): one uniMMR over every
account's futures, with collateral rates on the assets.

    adjusted equity = sum_assets min(value x collateral_rate, value) + unrealised P&L
    uniMMR = adjusted equity / sum MM,  MM per USD-M position as in binance-um
    liquidation when uniMMR <= 1.05 (new orders refused at 1.20, reminder at 1.50)

So the threshold is 1.05 x MM on an equity already cut by the collateral rates: PM never
liquidates later than cross USD-M for a stablecoin account, and BTC or ETH collateral counts
at 95 %. IM: the futures' IM at each bracket's maximum leverage (futuresIM = size x mark /
leverage).
"""

from __future__ import annotations

from margin_engine.profiles.base import ProfileInfo, Source
from margin_engine.profiles.binance_um import BTCUSDT, ETHUSDT, OTHER, READ
from margin_engine.profiles.linear import LinearProfile, LinearVenue

UNIMMR = Source(title="Binance: What Is the Unified Account Maintenance Margin Ratio (uniMMR) "
                      "and How Is It Calculated",
                url="https://www.binance.com/en/support/faq/4868b2f1aa6c4d08af973328462bb0bd",
                published="2025-02-06", read=READ)
RULES = Source(title="Binance Portfolio Margin Trading Rules",
               url="https://www.binance.com/en/support/announcement/"
                   "174861644e7049aaa64845f1db2e4376", published="undated", read=READ)

LIQUIDATION_UNIMMR = 1.05
MARGIN_CALL_UNIMMR = 1.50
NO_NEW_ORDERS_UNIMMR = 1.20
# Collateral rates (tier 1 of each asset's table; larger balances get lower rates).
COLLATERAL_RATES = {"USDT": 1.0, "USDC": 1.0, "BTC": 0.95, "ETH": 0.95}

INFO = ProfileInfo(
    name="binance-pm", venue="Binance Portfolio Margin",
    summary="USD-M brackets with maintenance amounts over one unified equity after collateral "
            "rates; liquidation at uniMMR 1.05 (so at 1.05 x MM).",
    parameters_as_of="2025-02-06",
    sources=(UNIMMR, RULES),
    leaves_out=("options, COIN-M and margin-loan legs: accounts with options are unsupported",
                "tiered collateral rates by balance size (tier-1 rate for every balance)",
                "open-loss adjustment of open orders", "negative-balance interest"))


def profile() -> LinearProfile:
    return LinearProfile(INFO, LinearVenue(
        tables={"BTC": BTCUSDT, "ETH": ETHUSDT}, default_table=OTHER,
        collateral_rates=COLLATERAL_RATES, liquidation_ratio=LIQUIDATION_UNIMMR))
