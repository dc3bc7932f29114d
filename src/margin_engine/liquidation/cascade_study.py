"""One population and one shock under several margin modes, and what the comparison says
about the "contained / propagated / complex" claims.

The population (accounts, strategies, positions, collateral mix, utilisation) is drawn once;
its collateral is sized per mode (``CollateralSizing``); every mode gets the same insurance
fund (a share of the open interest, which does not depend on the mode).

Claims, each with the numbers that decide it:

* contained: isolated margin keeps a failure where it starts: of the compared modes it has
  the least notional liquidated through contagion (collateral or shared equity) and no
  position liquidated through another position's loss (shared equity);
* propagated: cross margin spreads it from position to position: more contagion notional than
  isolated, some of it through shared equity;
* complex: portfolio margin is neither better nor worse across the board: of liquidated
  notional, bad debt, contagion notional and rounds it has alone the least of one and alone
  the most of another, or, against cross, its liquidated notional moves one way for hedged
  books (market makers, basis, pairs) and the other way for unhedged ones (directional, option
  sellers).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from margin_engine.core.errors import InputError
from margin_engine.liquidation.cascade import (
    CascadeConfig,
    CascadeResult,
    Channel,
    Progress,
    run_cascade,
)
from margin_engine.liquidation.cascade_shock import Shock, parse_shock
from margin_engine.liquidation.venue_population import (
    CollateralSizing,
    Strategy,
    VenueMix,
    fund,
    venue_config,
    venue_population,
)
from margin_engine.margin.config import RiskConfig


class CascadeMode(enum.StrEnum):
    """A margin mode the venue runs everyone under (``account``: each account's own)."""

    ISOLATED = "isolated"
    CROSS = "cross"
    PORTFOLIO = "portfolio"
    ACCOUNT = "account"


HEDGED = (Strategy.MARKET_MAKER, Strategy.BASIS, Strategy.PAIRS)
UNHEDGED = (Strategy.DIRECTIONAL, Strategy.OPTION_SELLER)


def parse_modes(text: str) -> tuple[CascadeMode, ...]:
    """``isolated,cross,portfolio`` -> modes (each once, in the order given)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    known = {m.value: m for m in CascadeMode}
    bad = [n for n in names if n not in known]
    if not names or bad:
        raise InputError(f"a comma-separated list of {', '.join(known)}", field="--modes",
                         value=text)
    if len(set(names)) != len(names):
        raise InputError("each mode once", field="--modes", value=text)
    return tuple(known[n] for n in names)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    name: str  # contained / propagated / complex
    statement: str
    held: bool | None  # None: the modes it needs were not compared
    evidence: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CascadeStudy:
    shock: Shock
    accounts: int
    seed: int
    sizing: CollateralSizing
    results: tuple[CascadeResult, ...]  # one per mode, in the order asked
    claims: tuple[Claim, ...]
    seconds: dict[str, float]


def contagion_notional(result: CascadeResult) -> float:
    return float(sum(v for r in result.rounds for h in r.hits for k, v in h.by_channel.items()
                     if k is not Channel.OWN_PRICE))


def channel_notional(result: CascadeResult, channel: Channel) -> float:
    return float(sum(h.by_channel.get(channel, 0.0) for r in result.rounds for h in r.hits))


def contagion_instruments(result: CascadeResult) -> list[str]:
    """Instruments liquidated at least once through contagion."""
    return sorted({h.instrument for r in result.rounds for h in r.hits
                   if any(k is not Channel.OWN_PRICE and v > 0 for k, v in h.by_channel.items())})


def unmoved_hits(result: CascadeResult) -> list[str]:
    """Instruments liquidated in a round in which their own underlying had not moved at all."""
    return sorted({h.instrument for r in result.rounds for h in r.hits if h.own_move == 1.0})


def strategy_notional(result: CascadeResult, strategies: Sequence[Strategy]) -> float:
    return float(sum(r.notional_by_strategy.get(int(s), 0.0) for r in result.rounds
                     for s in strategies))


def metrics(result: CascadeResult) -> dict[str, float]:
    """The systemic outcome of one mode, by name."""
    fund_path = [result.insurance_fund_start] + [r.insurance_fund for r in result.rounds]
    liquidated = result.liquidated_notional
    contagion = contagion_notional(result)
    return {
        "accounts_liquidated": float(result.accounts_liquidated),
        "liquidated_notional": liquidated,
        "bad_debt": result.bad_debt,
        "insurance_fund_used": float(sum(r.insurance_fund_used for r in result.rounds)),
        "insurance_fund_low": float(min(fund_path)),
        "insurance_fund_end": float(fund_path[-1]),
        "adl_count": float(sum(r.adl_count for r in result.rounds)),
        "adl_amount": float(sum(r.adl_amount for r in result.rounds)),
        "socialised_loss": float(sum(r.socialised_loss for r in result.rounds)),
        "unpaid_shortfall": float(sum(r.unpaid_shortfall for r in result.rounds)),
        "rounds": float(len(result.rounds)),
        # liquidated after round 1: what the forced sales of earlier rounds set off
        "knock_on_notional": float(sum(r.liquidated_notional for r in result.rounds[1:])),
        "contagion_notional": contagion,
        "contagion_share": contagion / liquidated if liquidated > 0 else 0.0,
        "collateral_channel_notional": channel_notional(result, Channel.COLLATERAL),
        "shared_equity_notional": channel_notional(result, Channel.SHARED_EQUITY),
        "contagion_instruments": float(len(contagion_instruments(result))),
        "contagion_underlyings": float(len({h.underlying for r in result.rounds for h in r.hits
                                            if h.by_channel.get(Channel.OWN_PRICE, 0.0)
                                            < h.notional})),
        "collateral_sold": float(sum(sum(r.collateral_sold.values()) for r in result.rounds)),
        "liquidatable_at_end": float(result.liquidatable_at_end),
    }


def run_study(*, shock_spec: str, accounts: int, modes: Sequence[CascadeMode], seed: int,
              data: Path, sizing: CollateralSizing = CollateralSizing.PER_MODE,
              cascade: CascadeConfig | None = None, config: RiskConfig | None = None,
              mix: VenueMix | None = None, progress: Progress | None = None,
              stage: Callable[[str], None] | None = None) -> CascadeStudy:
    """Draw the population, fund it per mode, run the cascade under each mode."""
    clock = time.perf_counter()
    shock = parse_shock(shock_spec, data)
    config = venue_config(config)
    if stage:
        stage(f"population: {accounts:,} accounts")
    population = venue_population(accounts, seed, index=shock.index,
                                  timestamp_ns=shock.timestamp_ns, mix=mix)
    market = population.market
    known = sorted((set(market.underlyings) | set(market.asset_prices)) - {"USD"})
    for move in shock.moves:  # refused before any collateral is sized
        if move.symbol not in known:
            raise InputError(f"a symbol of the venue's market {known}", field="--shock",
                             value=move.symbol)
    seconds = {"population": time.perf_counter() - clock}
    names = [m.value for m in modes]
    results = []
    shared = None
    if sizing is CollateralSizing.SHARED:
        began = time.perf_counter()
        if stage:
            stage("collateral (the largest IM of the modes)")
        shared = fund(population, config, names)
        seconds["funding"] = time.perf_counter() - began
    for mode in names:
        began = time.perf_counter()
        if stage and shared is None:
            stage(f"{mode}: collateral")
        funded = shared if shared is not None else fund(population, config, [mode])
        seconds[f"{mode}_funding"] = time.perf_counter() - began
        results.append(run_cascade(
            funded, population.market, shock, model=mode, config=config, cascade=cascade,
            strategy=population.strategy,
            strategy_labels={int(s): s.label for s in Strategy}, progress=progress))
        seconds[f"{mode}_cascade"] = results[-1].seconds["total"]
    seconds["total"] = time.perf_counter() - clock
    by_mode = dict(zip(names, results, strict=True))
    return CascadeStudy(shock=shock, accounts=accounts, seed=seed, sizing=sizing,
                        results=tuple(results), claims=claims(by_mode), seconds=seconds)


def _usd(value: float) -> str:
    return f"{value / 1e6:,.2f} M USD"


def claims(by_mode: dict[str, CascadeResult]) -> tuple[Claim, ...]:
    """The three claims, decided on the compared modes' numbers (module docstring)."""
    m = {mode: metrics(r) for mode, r in by_mode.items()}
    iso, cross, port = (m.get(x) for x in ("isolated", "cross", "portfolio"))
    contained = Claim(name="contained", held=None, statement=CONTAINED,
                      evidence="needs isolated and another mode")
    if iso is not None and len(m) > 1:
        least = min(v["contagion_notional"] for v in m.values())
        others = ", ".join(f"{k} {_usd(v['contagion_notional'])}" for k, v in m.items()
                           if k != "isolated")
        contained = Claim(
            name="contained", statement=CONTAINED,
            held=iso["contagion_notional"] <= least and iso["shared_equity_notional"] == 0.0,
            evidence=(f"liquidated through contagion: isolated "
                      f"{_usd(iso['contagion_notional'])} ({iso['contagion_share']:.1%} of its "
                      f"liquidations), {others}; isolated through shared equity "
                      f"{_usd(iso['shared_equity_notional'])}, through collateral prices "
                      f"{_usd(iso['collateral_channel_notional'])} (a position's margin is a "
                      f"share of collateral whose price fell); liquidated after round 1: "
                      + ", ".join(f"{k} {_usd(v['knock_on_notional'])}" for k, v in m.items())))
    propagated = Claim(name="propagated", held=None, statement=PROPAGATED,
                       evidence="needs isolated and cross")
    if iso is not None and cross is not None:
        propagated = Claim(
            name="propagated", statement=PROPAGATED,
            held=cross["contagion_notional"] > iso["contagion_notional"]
            and cross["shared_equity_notional"] > 0.0,
            evidence=(f"liquidated through contagion: cross {_usd(cross['contagion_notional'])}"
                      f" vs isolated {_usd(iso['contagion_notional'])}; through shared equity "
                      f"(one position's loss liquidating another): cross "
                      f"{_usd(cross['shared_equity_notional'])}, isolated "
                      f"{_usd(iso['shared_equity_notional'])}; instruments hit through "
                      f"contagion {cross['contagion_instruments']:.0f} vs "
                      f"{iso['contagion_instruments']:.0f}"))
    complex_ = Claim(name="complex", held=None, statement=COMPLEX,
                     evidence="needs portfolio and another mode")
    if port is not None and len(m) > 1:
        keys = ("liquidated_notional", "bad_debt", "contagion_notional", "rounds")
        best = [k for k in keys if _strictly(m, k, "portfolio", min)]
        worst = [k for k in keys if _strictly(m, k, "portfolio", max)]
        split = False
        by_strategy = ""
        if cross is not None:
            hedged = [strategy_notional(by_mode[x], HEDGED) for x in ("portfolio", "cross")]
            naked = [strategy_notional(by_mode[x], UNHEDGED) for x in ("portfolio", "cross")]
            split = (hedged[0] - hedged[1]) * (naked[0] - naked[1]) < 0.0
            by_strategy = (f"; liquidated, portfolio vs cross: hedged books (market makers, "
                           f"basis, pairs) {_usd(hedged[0])} vs {_usd(hedged[1])}, unhedged "
                           f"(directional, option sellers) {_usd(naked[0])} vs "
                           f"{_usd(naked[1])}")

        def names(found: list[str]) -> str:
            return ", ".join(k.replace("_", " ") for k in found) or "none"

        complex_ = Claim(
            name="complex", statement=COMPLEX, held=(bool(best) and bool(worst)) or split,
            evidence=(f"portfolio is the least of the modes on: {names(best)}; the most on: "
                      f"{names(worst)}{by_strategy}"))
    return contained, propagated, complex_


CONTAINED = "isolated margin keeps a failure where it starts"
PROPAGATED = "cross margin spreads a failure from position to position"
COMPLEX = ("portfolio margin is neither better nor worse across the board (best on some "
           "outcome and worst on another, or better for one kind of book and worse for the "
           "other)")


def _strictly(by_mode: dict[str, dict[str, float]], key: str, mode: str,
              pick: Callable[[list[float]], float]) -> bool:
    """``mode`` alone holds the least (``min``) or most (``max``) of ``key``."""
    values = [v[key] for v in by_mode.values()]
    if min(values) == max(values):
        return False
    target = pick(values)
    return by_mode[mode][key] == target and sum(v == target for v in values) == 1
