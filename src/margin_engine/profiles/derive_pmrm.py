"""`derive-pmrm`: Derive (formerly Lyra) portfolio margin, one underlying per account, in USD.

    maxLoss = max(0, -min over 23 spot x vol scenarios and 8 dampened tail scenarios)
    IM = (1 + depeg) x maxLoss + contingencies + oracle add-on
    MM = 0.8 x maxLoss + contingencies

Scenarios: spot +/-18 % in 4.5 % steps with vol up / static / down (the +/-18 % ends vol up
only); tail moves -66 %, -33 %, +50 %, +100 %, +200 %, +300 %, +400 %, +500 % (vol up) whose
loss is multiplied by the published dampening (0.21, 0.42, 0.27, 0.13, 0.069, 0.046, 0.034,
0.027), for every position and for coin collateral of the account's underlying.
Contingencies: 3 % of the index per perp contract (perp contingency), 3 % of coin collateral
(base contingency), 2 % of the index per net short option contract per strike and expiry
(naked-short contingency). Stablecoin depeg: when the cash asset trades below 0.98, IM's factor
rises by 4 x the shortfall (PEG_FACTOR 4). Oracle add-on: a feed confidence below 0.55 adds
(0.55 - confidence) x maxLoss to IM (the market snapshot carries no confidence: 0 here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from margin_engine.core.bounds import (
    FACTOR,
    FRACTION,
    MAINTENANCE_SHARE,
    PRICE_RANGE,
    bounded,
)
from margin_engine.core.types import BoolArray, FloatArray, IntArray
from margin_engine.domain.instruments import InstrumentKind
from margin_engine.profiles.base import (
    ProfileBook,
    ProfileInfo,
    Requirement,
    Source,
    State,
    Term,
    Unsupported,
    first_reason,
    kind_flags,
)
from margin_engine.profiles.files import ScenarioParameters
from margin_engine.profiles.scenarios import (
    Grid,
    Scenario,
    VolShock,
    VolShockParams,
    leg_mark,
    leg_scenarios,
    legs_of,
    net_short_option_contracts,
    option_scenarios,
    revalue,
    worst,
    worst_loss,
)

READ = "2026-12-02"
PM2 = Source(title="Derive docs: PM2 (Margin = MtM + im_factor x maxLoss + contingencies; "
                   "im_factor 1.0 IM / 0.8 MM)", url="https://docs.derive.xyz/docs/pm2",
             published="undated", read=READ)
PARAMS = Source(title="Derive docs: Portfolio Margin Parameters [New] (23 scenarios +/-18 % in "
                      "4.5 % steps; tail scenarios and dampening)",
                url="https://docs.derive.xyz/docs/portfolio-margin-parameters-new",
                published="undated", read=READ)
LEGACY = Source(title="Derive docs: Portfolio Margin Parameters (PEG_FACTOR 4, BASE_FACTOR "
                      "0.03, PERP_FACTOR 0.03, OPTION_FACTOR 0.02)",
                url="https://docs.derive.xyz/docs/portfolio-margin-parameters-1",
                published="undated", read=READ)
COMMON = Source(title="Derive docs: Common Parameters (CONFIDENCE_THRESHOLD 0.55)",
                url="https://docs.derive.xyz/common-parameters-parameters-that-are-not-specific-"
                    "to-one-margin-engine-listing-and-settlement-limits-the-oracle-feeds-both-"
                    "engines-read-and-the-fees-charged-on-trading-and-on-account-creation-per.md",
                published="undated", read=READ)

TAIL = ((-0.66, 0.21), (-0.33, 0.42), (0.50, 0.27), (1.0, 0.13), (2.0, 0.069), (3.0, 0.046),
        (4.0, 0.034), (5.0, 0.027))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeriveParams:
    spot_range: float = bounded(PRICE_RANGE, 0.18)
    vol: VolShockParams = VolShockParams(range_up=0.6, range_down=0.25)
    perp_factor: float = bounded(FRACTION, 0.03)
    base_factor: float = bounded(FRACTION, 0.03)
    option_factor: float = bounded(FRACTION, 0.02)
    maintenance_factor: float = bounded(MAINTENANCE_SHARE, 0.8)
    peg_factor: float = bounded(FACTOR, 4.0)
    peg_threshold: float = bounded(FRACTION, 0.98)
    confidence_threshold: float = bounded(FRACTION, 0.55)
    oracle_confidence: float = bounded(FRACTION, 1.0)

    def grid(self) -> Grid:
        scenarios: list[Scenario] = []
        for j in range(4, -5, -1):
            vols = (VolShock.UP,) if abs(j) == 4 else (VolShock.UP, VolShock.SAME,
                                                        VolShock.DOWN)
            scenarios += [Scenario(move=j / 4, vol=v) for v in vols]
        scenarios += [Scenario(move=m, vol=VolShock.UP, weight=w, scaled=False, extended=True)
                      for m, w in TAIL]
        return Grid(scenarios=tuple(scenarios), ranges={}, default_range=self.spot_range,
                    vol=self.vol, extended_moves_linear=True)


INFO = ProfileInfo(
    name="derive-pmrm", venue="Derive portfolio margin (PM2)",
    summary="One underlying per account: worst of 23 spot x vol scenarios (+/-18 % in 4.5 % "
            "steps) and 8 dampened tail moves, plus perp, base and naked-short contingencies, "
            "depeg and oracle-confidence add-ons to IM; MM uses 0.8 x maxLoss.",
    parameters_as_of="2025-06-01",
    sources=(PM2, PARAMS, LEGACY, COMMON),
    leaves_out=("skew scenarios and static discounts of PM2 (their values were not in the "
                "pages read)", "basis contingency (Derive lists no dated futures: accounts with "
                "them are unsupported)", "vol range down 0.25 and the 0.30 / 0.13 term powers "
                "are the Deribit family's (only vol up 0.6 is published in the pages read)",
                "cross-underlying accounts (refused by the venue: unsupported here)"))


class DerivePortfolioMargin(ScenarioParameters):
    def __init__(self, params: DeriveParams | None = None) -> None:
        self.params = params or DeriveParams()
        self.grid = self.params.grid()
        self.info = INFO

    def unsupported(self, pb: ProfileBook) -> list[Unsupported | None]:
        exposed = np.zeros((pb.accounts, len(pb.underlyings)), dtype=np.bool_)
        exposed[pb.account, pb.underlying] = True
        several = exposed.sum(axis=1) > 1
        return first_reason(pb, [
            (kind_flags(pb, InstrumentKind.FUTURE) & pb.live, Unsupported.DATED_FUTURES),
            (pb.inverse, Unsupported.INVERSE), (several, Unsupported.SEVERAL_UNDERLYINGS)])

    def requirement(self, pb: ProfileBook, state: State) -> Requirement:
        p, grid = self.params, self.grid
        n_u = len(pb.underlyings)
        reval = revalue(pb, state, grid)
        cells = pb.cell_sum(reval.pnl, pb.underlying, n_u)
        moves = np.array([s.move * p.spot_range if s.scaled else s.move
                          for s in grid.scenarios])
        exposure = pb.coin_exposure[:, :, None] * state.coin_factor
        cells += exposure[:, :, :, None] * moves
        loss, at = worst(cells, grid)  # (a, u, k)
        tail = np.array([s.extended for s in grid.scenarios])[at]
        max_loss = loss.sum(axis=1)
        perp = kind_flags(pb, InstrumentKind.PERPETUAL) & pb.live
        perp_cont = pb.cell_sum(np.where(perp[:, None], p.perp_factor * np.abs(
            pb.quantity)[:, None] * state.index, 0.0), pb.underlying, n_u).sum(axis=1)
        base_cont = p.base_factor * np.abs(exposure).sum(axis=1)
        short = net_short_option_contracts(pb)[:, :, None] * pb.index[None, :, None] \
            * state.coin_factor
        option_cont = p.option_factor * short.sum(axis=1)
        contingency = perp_cont + base_cont + option_cont
        stable = pb.stable_value / np.maximum(pb.stable_face, 1e-300)
        depeg = np.where(pb.stable_face > 0.0, p.peg_factor * np.maximum(
            0.0, p.peg_threshold - stable), 0.0)[:, None] * max_loss
        oracle = max(0.0, p.confidence_threshold - p.oracle_confidence) * max_loss
        initial = max_loss + contingency + depeg + oracle
        maintenance = p.maintenance_factor * max_loss + contingency
        return Requirement(
            initial=initial, maintenance=maintenance,
            equity=state.collateral + pb.account_sum(state.pnl), threshold=maintenance,
            terms={Term.PRICE_SCENARIOS: np.where(tail, 0.0, loss).sum(axis=1),
                   Term.EXTENDED_MOVES: np.where(tail, loss, 0.0).sum(axis=1),
                   Term.CONTINGENCY: contingency, Term.STABLECOIN: depeg,
                   Term.ORACLE: oracle},
            details={"max_loss": max_loss})


    def moved_gap(self, pb: ProfileBook, u: int
                  ) -> Callable[[IntArray, FloatArray], FloatArray]:
        """``evaluate(accounts, levels)``: the part of equity - maintenance that moves with
        underlying ``u`` at those (account, level) pairs (``requirement`` gives the rest):

            G = C_u (r - 1) + sum_u P&L - (mm x maxLoss_u + perp_u + base_u + option_u),

        r = level / index, C_u the account's coin collateral of u (USD today)."""
        p = self.params
        legs = legs_of(pb, u)
        sc = leg_scenarios(legs, self.grid, pb.underlyings[u])
        perp = legs.kind == int(InstrumentKind.PERPETUAL)
        short = np.ascontiguousarray(net_short_option_contracts(pb)[:, u])
        exposure = np.ascontiguousarray(pb.coin_exposure[:, u])
        index = float(pb.index[u])
        factors = np.array([p.perp_factor, p.base_factor, p.option_factor,
                            p.maintenance_factor])

        def evaluate(accounts: IntArray, levels: FloatArray) -> FloatArray:
            out = np.empty(accounts.size)
            _derive_part_nb(legs.start, legs.quantity, legs.mark, legs.forward, legs.entry,
                            legs.option, perp, legs.strike, legs.log_strike, legs.years,
                            legs.sigma, legs.is_call, sc.root, sc.growth, sc.log_growth,
                            sc.lin, sc.weight, short, exposure, index, factors,
                            accounts.astype(np.int64), levels / index, out)
            return out

        return evaluate


@njit(cache=True)
def _derive_part_nb(start: IntArray, quantity: FloatArray, mark: FloatArray,
                    forward: FloatArray, entry: FloatArray, option: BoolArray,
                    perp: BoolArray, strike: FloatArray, log_strike: FloatArray,
                    years: FloatArray, sigma: FloatArray, is_call: BoolArray,
                    root: FloatArray, growth: FloatArray, log_growth: FloatArray,
                    lin: FloatArray, weight: FloatArray, short: FloatArray,
                    exposure: FloatArray, index: float, factors: FloatArray,
                    accounts: IntArray, ratios: FloatArray, out: FloatArray) -> None:
    """out[j] = moved part of the gap of account accounts[j] at index ratio ratios[j]
    (see ``DerivePortfolioMargin.moved_gap``); factors = (perp, base, option, mm). Cell
    P&L: options q (V_s - V), delta-one q M m_s, coin collateral C r m_s."""
    n_s = weight.shape[0]
    for j in range(accounts.shape[0]):
        a, r = accounts[j], ratios[j]
        cell, value = np.zeros(n_s), np.empty(n_s)
        pnl = perp_cont = 0.0
        for i in range(start[a], start[a + 1]):
            f, m = leg_mark(forward[i], strike[i], years[i], sigma[i], is_call[i], option[i],
                            mark[i], r)
            q = quantity[i]
            pnl += q * (m - entry[i])
            if option[i]:
                option_scenarios(f, strike[i], log_strike[i], is_call[i], root[i], growth,
                                 log_growth, value)
                for s in range(n_s):
                    cell[s] += q * (value[s] - m)
            else:
                notional = q * m
                for s in range(n_s):
                    cell[s] += notional * lin[s]
                if perp[i]:
                    perp_cont += factors[0] * abs(q) * (index * r)
        held = exposure[a] * r
        for s in range(n_s):
            cell[s] += held * lin[s]
        contingency = perp_cont + factors[1] * abs(held) + factors[2] * (short[a] * index * r)
        out[j] = exposure[a] * (r - 1.0) + pnl - (factors[3] * worst_loss(cell, weight)
                                                  + contingency)


def profile(params: DeriveParams | None = None) -> DerivePortfolioMargin:
    return DerivePortfolioMargin(params)
