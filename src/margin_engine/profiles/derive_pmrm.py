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

from dataclasses import dataclass

import numpy as np

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
    net_short_option_contracts,
    revalue,
    worst,
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
    spot_range: float = 0.18
    vol: VolShockParams = VolShockParams(range_up=0.6, range_down=0.25)
    perp_factor: float = 0.03
    base_factor: float = 0.03
    option_factor: float = 0.02
    maintenance_factor: float = 0.8
    peg_factor: float = 4.0
    peg_threshold: float = 0.98
    confidence_threshold: float = 0.55
    oracle_confidence: float = 1.0

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


def profile(params: DeriveParams | None = None) -> DerivePortfolioMargin:
    return DerivePortfolioMargin(params)
