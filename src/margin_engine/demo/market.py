"""The embedded default market snapshot used by the demo (no file needed)."""

from __future__ import annotations

from typing import Any

DEMO_TIMESTAMP = "2025-06-01T00:00:00Z"
DEMO_EXPIRIES = ("6JUN25", "27JUN25", "25JUL25", "26SEP25", "26DEC25")


def demo_market_document() -> dict[str, Any]:
    """BTC 65,000 and ETH 2,500 with an upward-sloping ATM term structure, rho = 0.8."""
    return {
        "schema": "margin-engine/market/v1",
        "timestamp": DEMO_TIMESTAMP,
        "underlyings": {
            "BTC": {"index": 65000, "vol": {"type": "atm_by_expiry", "points": dict(
                zip(DEMO_EXPIRIES, (0.48, 0.52, 0.55, 0.58, 0.60), strict=True))}},
            "ETH": {"index": 2500, "vol": {"type": "atm_by_expiry", "points": dict(
                zip(DEMO_EXPIRIES, (0.60, 0.63, 0.66, 0.68, 0.70), strict=True))}},
        },
        "assets": {"USDC": {"price": 0.9998}, "USDT": {"price": 1.0002},
                   "BTC": {"price": 65000}, "ETH": {"price": 2500}},
        "correlation": {"BTC": {"ETH": 0.8}},
        "marks": {"BTC-26SEP25": 66300, "BTC-26DEC25": 67400, "ETH-26SEP25": 2540,
                  "ETH-26DEC25": 2575},
    }
