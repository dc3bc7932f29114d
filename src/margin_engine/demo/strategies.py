"""Strategy templates for the demo book: each returns the positions of one account.

Sizes are in coins, strikes on a listing grid (1,000 USD for BTC, 50 for ETH), entries at a
small random distance from fair so that accounts carry some unrealised P&L.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from margin_engine.demo.market import DEMO_EXPIRIES

SPOT = {"BTC": 65000.0, "ETH": 2500.0}
STEP = {"BTC": 1000.0, "ETH": 50.0}
DATED = DEMO_EXPIRIES[1:]  # expiries at least ~4 weeks out; the weekly is for calendars


@dataclass(frozen=True, slots=True)
class Leg:
    instrument: str
    size: float


def _strike(u: str, moneyness: float) -> int:
    return int(round(SPOT[u] * moneyness / STEP[u]) * STEP[u])


def _opt(u: str, expiry: str, strike: int, right: str) -> str:
    return f"{u}-{expiry}-{strike}-{right}"


Template = Callable[[np.random.Generator, str, float], list[Leg]]


def naked_short_call(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e = rng.choice(DATED)
    return [Leg(_opt(u, e, _strike(u, rng.uniform(1.05, 1.25)), "C"), -n)]


def naked_short_put(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e = rng.choice(DATED)
    return [Leg(_opt(u, e, _strike(u, rng.uniform(0.75, 0.95)), "P"), -n)]


def covered_call(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    return [Leg(f"{u}-PERP", n), *naked_short_call(rng, u, n)]


def protective_put(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e = rng.choice(DATED)
    return [Leg(f"{u}-PERP", n), Leg(_opt(u, e, _strike(u, rng.uniform(0.85, 0.97)), "P"), n)]


def long_straddle(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e, k = rng.choice(DATED), _strike(u, 1.0)
    return [Leg(_opt(u, e, k, "C"), n), Leg(_opt(u, e, k, "P"), n)]


def short_strangle(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e = rng.choice(DATED)
    width = rng.uniform(0.08, 0.2)
    return [Leg(_opt(u, e, _strike(u, 1 + width), "C"), -n),
            Leg(_opt(u, e, _strike(u, 1 - width), "P"), -n)]


def bull_call_spread(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e = rng.choice(DATED)
    low = rng.uniform(0.98, 1.08)
    return [Leg(_opt(u, e, _strike(u, low), "C"), n),
            Leg(_opt(u, e, _strike(u, low + rng.uniform(0.06, 0.15)), "C"), -n)]


def bear_put_spread(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e = rng.choice(DATED)
    high = rng.uniform(0.92, 1.02)
    return [Leg(_opt(u, e, _strike(u, high), "P"), n),
            Leg(_opt(u, e, _strike(u, high - rng.uniform(0.06, 0.15)), "P"), -n)]


def iron_condor(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e = rng.choice(DATED)
    inner, wing = rng.uniform(0.06, 0.12), rng.uniform(0.05, 0.1)
    return [Leg(_opt(u, e, _strike(u, 1 - inner - wing), "P"), n),
            Leg(_opt(u, e, _strike(u, 1 - inner), "P"), -n),
            Leg(_opt(u, e, _strike(u, 1 + inner), "C"), -n),
            Leg(_opt(u, e, _strike(u, 1 + inner + wing), "C"), n)]


def calendar_spread(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    near = int(rng.integers(0, 2))
    far = int(rng.integers(near + 2, len(DEMO_EXPIRIES)))
    k = _strike(u, rng.uniform(0.97, 1.05))
    return [Leg(_opt(u, DEMO_EXPIRIES[near], k, "C"), -n),
            Leg(_opt(u, DEMO_EXPIRIES[far], k, "C"), n)]


def delta_hedged_short_straddle(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e, k = DEMO_EXPIRIES[3], _strike(u, 1.0)
    # Short ATM call + put has delta ~ -(N(d1) - (1 - N(d1))) x n ~ -0.1 n at this tenor.
    return [Leg(_opt(u, e, k, "C"), -n), Leg(_opt(u, e, k, "P"), -n),
            Leg(f"{u}-PERP", round(0.08 * n, 4))]


def btc_eth_pair(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    btc = round(n * SPOT[u] / SPOT["BTC"], 4)
    eth = round(btc * SPOT["BTC"] / SPOT["ETH"], 2)
    sign = 1 if rng.random() < 0.5 else -1
    return [Leg("BTC-PERP", sign * btc), Leg("ETH-PERP", -sign * eth)]


def basis_trade(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e = rng.choice(DATED[2:])
    return [Leg(f"{u}-PERP", -n), Leg(f"{u}-{e}", n)]


def synthetic_forward(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    e, k = rng.choice(DATED), _strike(u, rng.uniform(0.95, 1.05))
    return [Leg(_opt(u, e, k, "C"), n), Leg(_opt(u, e, k, "P"), -n)]


def naked_future(rng: np.random.Generator, u: str, n: float) -> list[Leg]:
    return [Leg(f"{u}-{rng.choice(DATED[2:])}", n if rng.random() < 0.5 else -n)]


STRATEGIES: dict[str, Template] = {
    "naked short call": naked_short_call,
    "naked short put": naked_short_put,
    "covered call": covered_call,
    "protective put": protective_put,
    "long straddle": long_straddle,
    "short strangle": short_strangle,
    "bull call spread": bull_call_spread,
    "bear put spread": bear_put_spread,
    "iron condor": iron_condor,
    "calendar spread": calendar_spread,
    "delta-hedged short straddle": delta_hedged_short_straddle,
    "BTC/ETH pair": btc_eth_pair,
    "perp-future basis": basis_trade,
    "synthetic forward": synthetic_forward,
    "naked future": naked_future,
}
