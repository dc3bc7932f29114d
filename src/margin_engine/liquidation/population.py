"""A seeded population of leveraged perp accounts for crash replays.

Each account holds one or two linear perps (BTC, ETH), long or short (55 / 45), at a leverage
drawn from 2-50x (60 % at 2-10x, 30 % at 10-25x, 10 % at 25-50x): collateral = gross notional /
leverage, in USDC (a quarter of the accounts hold half of it in BTC instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def leveraged_population(accounts: int, seed: int, index: dict[str, float], *,
                         mode: str = "cross", btc_collateral_share: float = 0.25,
                         stable: str = "USDC", stable_price: float = 1.0) -> dict[str, Any]:
    """Portfolio document (``margin-engine/portfolio/v1``) of ``accounts`` accounts."""
    rng = np.random.default_rng(seed)
    out = []
    names = sorted(index)
    for k in range(accounts):
        legs = 1 if rng.random() < 0.7 or len(names) == 1 else 2
        chosen = rng.choice(names, size=legs, replace=False)
        positions = []
        gross = 0.0
        for u in chosen:
            notional = float(np.exp(rng.uniform(np.log(2e3), np.log(2e6))))
            side = 1.0 if rng.random() < 0.55 else -1.0
            size = round(side * notional / index[u], 6)
            if size == 0:
                continue
            positions.append({"instrument": f"{u}-PERP", "size": size,
                              "entry_price": round(index[u] * (1 + rng.normal(0, 0.003)), 2)})
            gross += abs(size) * index[u]
        bucket = rng.random()
        low, high = (2, 10) if bucket < 0.6 else (10, 25) if bucket < 0.9 else (25, 50)
        leverage = float(rng.uniform(low, high))
        collateral_usd = gross / leverage
        collateral: dict[str, float] = {}
        if "BTC" in index and rng.random() < btc_collateral_share:
            collateral["BTC"] = round(0.5 * collateral_usd / index["BTC"], 8)
            collateral[stable] = round(0.5 * collateral_usd / stable_price, 2)
        else:
            collateral[stable] = round(collateral_usd / stable_price, 2)
        out.append({"id": f"p{k:05d}", "mode": mode, "collateral": collateral,
                    "positions": positions})
    return {"schema": "margin-engine/portfolio/v1", "accounts": out}

