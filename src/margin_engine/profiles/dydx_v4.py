"""`dydx-v4`: dYdX chain (v4) cross margin: per-market initial margin fraction (IMF) and
maintenance fraction, with open-interest margin-fraction (OIMF) scaling.

    IMF_eff = IMF + (1 - IMF) x clamp((OI - OI_lower) / (OI_upper - OI_lower), 0, 1)
    MMF = IMF_eff x maintenance_fraction
    IM = sum |notional| x IMF_eff, MM = sum |notional| x MMF (notional at the oracle price)

An account is liquidated when its net collateral falls below MM; the liquidation fee is capped
at 1.5 % of the closed notional (max_liquidation_fee_ppm = 15,000), then the insurance fund,
then deleveraging of offsetting positions. Perpetuals only, USDC collateral only.
Large-cap tier (BTC, ETH): IMF 2 %, maintenance fraction 60 % (MMF 1.2 %), OI caps 20M / 50M
USD; the market's open interest is a parameter (default: below the lower cap, no scaling).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from margin_engine.profiles.base import ProfileInfo, Source
from margin_engine.profiles.brackets import BracketTable, flat_table
from margin_engine.profiles.linear import LinearProfile, LinearVenue

READ = "2026-12-02"
LIQUIDITY_TIERS = Source(
    title="dydxprotocol/v4-chain: LiquidityTier (initial_margin_ppm, maintenance_fraction_ppm, "
          "open_interest_lower_cap, open_interest_upper_cap) and the OIMF change",
    url="https://github.com/dydxprotocol/v4-chain/pull/1125", published="2024-03-07",
    read=READ)
LIQUIDATIONS = Source(title="dYdX documentation: liquidations and deleveraging",
                      url="https://docs.dydx.exchange/concepts/trading/liquidations",
                      published="undated", read=READ)

LARGE_CAP_IMF = 0.02
MAINTENANCE_FRACTION = 0.6
OI_LOWER_CAP = 20_000_000.0
OI_UPPER_CAP = 50_000_000.0
MAX_LIQUIDATION_FEE = 0.015
LARGE_CAP = ("BTC", "ETH")
SMALL_CAP_IMF = 0.10


def effective_imf(imf: float, open_interest: float, lower: float = OI_LOWER_CAP,
                  upper: float = OI_UPPER_CAP) -> float:
    """OIMF: IMF rises linearly from ``imf`` at the lower open-interest cap to 1 at the upper."""
    scale = min(max((open_interest - lower) / (upper - lower), 0.0), 1.0)
    return imf + (1.0 - imf) * scale


def market_table(symbol: str, imf: float, open_interest: float) -> BracketTable:
    eff = effective_imf(imf, open_interest)
    return flat_table(symbol, eff * MAINTENANCE_FRACTION, 1.0 / eff)


INFO = ProfileInfo(
    name="dydx-v4", venue="dYdX chain (v4)",
    summary="Cross margin on perpetuals: IMF 2 % / MMF 1.2 % (large-cap tier) with "
            "open-interest scaling; liquidation below MM, fee capped at 1.5 %, then insurance "
            "fund, then deleveraging.",
    parameters_as_of="2024-03-07",
    sources=(LIQUIDITY_TIERS, LIQUIDATIONS),
    leaves_out=("dated futures and options (not listed): such accounts are unsupported",
                "isolated markets (their own subaccounts)", "non-USDC collateral",
                "the fillable-price limit on liquidation orders (bankruptcy-price spread)",
                "the live open interest: pass it as a parameter"))


class DydxProfile(LinearProfile):
    """dYdX v4: the large-cap tables follow the markets' open interest (a parameter)."""

    def __init__(self, open_interest: Mapping[str, float]) -> None:
        self.open_interest = dict(open_interest)
        tables = {u: market_table(f"{u}-USD", LARGE_CAP_IMF, self.open_interest.get(u, 0.0))
                  for u in LARGE_CAP}
        super().__init__(INFO, LinearVenue(
            tables=tables, default_table=market_table("OTHER-USD", SMALL_CAP_IMF, 0.0),
            lists_dated_futures=False, stable_collateral_only=True,
            liquidation_fee_cap=MAX_LIQUIDATION_FEE))

    def configured(self, parameters: Mapping[str, Any], tiers: Mapping[str, BracketTable],
                   source: str) -> LinearProfile:
        """``open_interest`` (USD by underlying) rebuilds the tables; the rest as for every
        bracket venue."""
        from margin_engine.profiles.files import checked_value

        rest = {k: v for k, v in parameters.items() if k != "open_interest"}
        oi = self.open_interest
        if "open_interest" in parameters:
            oi = checked_value(oi, parameters["open_interest"],
                               where="parameters.open_interest", source=source)
        base = DydxProfile(oi)
        configured = LinearProfile.configured(base, rest, tiers, source)
        base.venue = configured.venue
        return base

    def parameters(self) -> dict[str, Any]:
        return {"open_interest": dict(self.open_interest), **super().parameters()}


def profile(open_interest: Mapping[str, float] | None = None) -> LinearProfile:
    return DydxProfile(open_interest or {u: 0.0 for u in LARGE_CAP})
