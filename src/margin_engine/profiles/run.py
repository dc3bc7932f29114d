"""Run venue profiles over a bound book: margins today, liquidation prices, and the
``compare --profiles`` document.

Liquidation prices: for each underlying u and each account exposed to it, the index levels of
u where the venue's equity meets its liquidation threshold, everything else fixed (for an
isolated position: where its margin + P&L meets its MM). The gap is evaluated for every account
at once on a log grid of levels in (0, 10 x index]; the sign change closest below today's index
and the one closest above bracket the two roots, which the Illinois variant of false position
pins (all accounts and sides in one vectorised step per iteration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.book.columnar import MODES_BY_CODE
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.core.types import FloatArray
from margin_engine.profiles.base import (
    ProfileBook,
    Requirement,
    Term,
    Unsupported,
    VenueProfile,
    make_state,
    today,
)

GRID = np.concatenate([np.geomspace(0.02, 1.0, 40, endpoint=False),
                       np.geomspace(1.0, 10.0, 25)])
ITERATIONS = 60
TOLERANCE = 1e-12


@dataclass(frozen=True, slots=True)
class Levels:
    """accounts x underlyings liquidation levels (NaN: none in (0, 10 x index])."""

    down: FloatArray
    up: FloatArray
    position_down: FloatArray  # per position (isolated), NaN elsewhere
    position_up: FloatArray

    @property
    def nearest(self) -> FloatArray:
        return _nearest(self.down, self.up)


def _nearest(down: FloatArray, up: FloatArray) -> FloatArray:
    # the closer in log distance to 1 after dividing by the index is chosen by the caller's
    # index; here both are already relative to the same index row
    with np.errstate(invalid="ignore", divide="ignore"):
        use_down = ~np.isnan(down) & (np.isnan(up) | (np.abs(np.log(down)) <= np.abs(np.log(up))))
    out: FloatArray = np.where(use_down, down, up)
    return out


@dataclass(frozen=True, slots=True)
class ProfileRun:
    profile: VenueProfile
    requirement: Requirement  # today's (k = 1)
    unsupported: list[Unsupported | None]
    levels: Levels | None


def _gaps(profile: VenueProfile, pb: ProfileBook, u: int, levels: FloatArray
          ) -> tuple[FloatArray, FloatArray | None]:
    req = profile.requirement(pb, make_state(pb, u, levels))
    shared: FloatArray = req.equity - req.threshold
    return shared, req.position_gap


def liquidation_levels(profile: VenueProfile, pb: ProfileBook, supported: np.ndarray,
                       requirement: Requirement) -> Levels:
    n_a, n_u = pb.accounts, len(pb.underlyings)
    n_p = pb.account.shape[0]
    down, up = np.full((n_a, n_u), np.nan), np.full((n_a, n_u), np.nan)
    p_down, p_up = np.full(n_p, np.nan), np.full(n_p, np.nan)
    isolated_acct = np.zeros(n_a, dtype=np.bool_)
    if requirement.position_gap is not None:
        isolated_acct[pb.account[~np.isnan(requirement.position_gap[:, 0])]] = True
    exposed = np.zeros((n_a, n_u), dtype=np.bool_)
    exposed[pb.account[pb.live], pb.underlying[pb.live]] = True
    exposed |= pb.coin_exposure != 0.0
    for u in range(n_u):
        index = float(pb.index[u])
        wanted = exposed[:, u] & supported
        if not wanted.any():
            continue
        levels = index * np.broadcast_to(GRID, (n_a, GRID.size))
        shared, per_position = _gaps(profile, pb, u, np.array(levels))
        # targets: (account, column of the account's levels, row into gap arrays, kind)
        shared_rows = np.nonzero(wanted & ~isolated_acct)[0]
        pos_rows = np.nonzero(isolated_acct[pb.account] & (pb.underlying == u) & pb.live
                              & wanted[pb.account])[0] if per_position is not None else \
            np.zeros(0, dtype=np.int64)
        rank = np.zeros(n_p, dtype=np.int64)
        seen: dict[int, int] = {}
        for p in pos_rows.tolist():
            a = int(pb.account[p])
            rank[p] = seen.get(a, 0)
            seen[a] = rank[p] + 1
        targets: list[tuple[int, int, bool, int]] = []  # (account, rank, is_position, row)
        targets += [(int(a), 0, False, int(a)) for a in shared_rows]
        targets += [(int(pb.account[p]), int(rank[p]), True, int(p)) for p in pos_rows]
        if not targets:
            continue
        values = np.array([(per_position[row] if is_pos and per_position is not None
                            else shared[row]) for _, _, is_pos, row in targets])
        brackets = [_brackets(values[t], GRID * index, index) for t in range(len(targets))]
        found = _solve(profile, pb, u, targets, brackets, n_a)
        for t, (a, _, is_pos, row) in enumerate(targets):
            lo, hi = found[t]
            if is_pos:
                p_down[row], p_up[row] = lo, hi
            else:
                down[a, u], up[a, u] = lo, hi
        for p in pos_rows.tolist():  # an isolated account's level: its first position's
            a = int(pb.account[p])
            if not np.isnan(p_down[p]):
                down[a, u] = p_down[p] if np.isnan(down[a, u]) else max(down[a, u], p_down[p])
            if not np.isnan(p_up[p]):
                up[a, u] = p_up[p] if np.isnan(up[a, u]) else min(up[a, u], p_up[p])
    return Levels(down=down, up=up, position_down=p_down, position_up=p_up)


def _brackets(values: FloatArray, levels: FloatArray, index: float
              ) -> tuple[tuple[float, float, float, float] | None,
                         tuple[float, float, float, float] | None]:
    """(closest sign change at or below ``index``, closest above) as (x0, x1, f0, f1)."""
    below = above = None
    for j in range(levels.size - 1):
        f0, f1 = float(values[j]), float(values[j + 1])
        if not (math.isfinite(f0) and math.isfinite(f1)):
            continue
        if f0 == 0.0 or f0 * f1 < 0.0:
            pair = (float(levels[j]), float(levels[j + 1]), f0, f1)
            if pair[1] <= index * (1 + 1e-12):
                below = pair
            elif above is None:
                above = pair
    return below, above


def _solve(profile: VenueProfile, pb: ProfileBook, u: int,
           targets: list[tuple[int, int, bool, int]],
           brackets: list[tuple[tuple[float, float, float, float] | None,
                                tuple[float, float, float, float] | None]],
           n_a: int) -> list[tuple[float, float]]:
    """Illinois false position on every (target, side) at once."""
    n_t = len(targets)
    width = 2 * (max(r for _, r, _, _ in targets) + 1)
    x0, x1 = np.full((n_t, 2), np.nan), np.full((n_t, 2), np.nan)
    f0, f1 = np.zeros((n_t, 2)), np.zeros((n_t, 2))
    for t, pair in enumerate(brackets):
        for side in (0, 1):
            b = pair[side]
            if b is not None:
                x0[t, side], x1[t, side], f0[t, side], f1[t, side] = b
    active = ~np.isnan(x0)
    root = np.where(active & (f0 == 0.0), x0, np.nan)
    active &= f0 != 0.0
    last = np.zeros((n_t, 2), dtype=np.int64)
    index = float(pb.index[u])
    for _ in range(ITERATIONS):
        if not active.any():
            break
        x = np.where(active, (x0 * f1 - x1 * f0) / np.where(active, f1 - f0, 1.0), index)
        x = np.where(active & ~((x > np.minimum(x0, x1)) & (x < np.maximum(x0, x1))),
                     0.5 * (x0 + x1), x)
        levels = np.full((n_a, width), index)
        for t, (a, r, _, _) in enumerate(targets):
            levels[a, 2 * r] = x[t, 0]
            levels[a, 2 * r + 1] = x[t, 1]
        shared, per_position = _gaps(profile, pb, u, levels)
        fx = np.empty((n_t, 2))
        for t, (_, r, is_pos, row) in enumerate(targets):
            src = per_position[row] if is_pos and per_position is not None else shared[row]
            fx[t] = src[2 * r], src[2 * r + 1]
        done = active & ((fx == 0.0) | (np.abs(x1 - x0) <= TOLERANCE * np.abs(x)))
        root = np.where(done, x, root)
        same = np.sign(fx) == np.sign(f0)
        # replace the endpoint with the same sign; halve the stale one's value (Illinois)
        new_x0 = np.where(same, x, x0)
        new_f0 = np.where(same, fx, f0)
        new_x1 = np.where(same, x1, x)
        new_f1 = np.where(same, f1, fx)
        new_f1 = np.where(same & (last == 1), new_f1 * 0.5, new_f1)
        new_f0 = np.where(~same & (last == -1), new_f0 * 0.5, new_f0)
        last = np.where(same, 1, -1)
        x0, f0, x1, f1 = new_x0, new_f0, new_x1, new_f1
        active &= ~done
    root = np.where(active, (x0 * f1 - x1 * f0) / np.where(active, f1 - f0, 1.0), root)
    return [(float(root[t, 0]), float(root[t, 1])) for t in range(n_t)]


def run_profile(profile: VenueProfile, pb: ProfileBook, with_liquidation: bool = True
                ) -> ProfileRun:
    requirement = profile.requirement(pb, today(pb))
    reasons = profile.unsupported(pb)
    supported = np.array([r is None for r in reasons], dtype=np.bool_)
    levels = liquidation_levels(profile, pb, supported, requirement) if with_liquidation \
        else None
    return ProfileRun(profile=profile, requirement=requirement, unsupported=reasons,
                      levels=levels)


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _level(price: float, index: float) -> dict[str, float] | None:
    if not math.isfinite(price):
        return None
    return {"price": price, "distance_pct": 100.0 * (price / index - 1.0)}


def account_entry(run: ProfileRun, pb: ProfileBook, a: int, gross: float) -> dict[str, Any]:
    reason = run.unsupported[a]
    if reason is not None:
        return {"supported": False, "unsupported_reason": reason.value}
    req = run.requirement
    im, mm = float(req.initial[a, 0]), float(req.maintenance[a, 0])
    equity, threshold = float(req.equity[a, 0]), float(req.threshold[a, 0])
    entry: dict[str, Any] = {
        "supported": True, "initial_margin": im, "maintenance_margin": mm,
        "equity": equity, "liquidation_threshold": threshold, "excess": equity - im,
        "efficiency": gross / im if im > 0.0 else None,
        "terms": {term.value: float(values[a, 0]) for term, values in req.terms.items()},
    }
    if req.details:
        entry["details"] = {k: _number(float(v[a, 0])) for k, v in req.details.items()}
    if run.levels is not None:
        cells: dict[str, Any] = {}
        for u_idx, u in enumerate(pb.underlyings):
            down, up = float(run.levels.down[a, u_idx]), float(run.levels.up[a, u_idx])
            exposed = bool(((pb.account == a) & (pb.underlying == u_idx)).any()
                           or pb.coin_exposure[a, u_idx] != 0.0)
            if not exposed:
                continue
            index = float(pb.index[u_idx])
            nearest = _nearest(np.array([down / index]), np.array([up / index]))[0] * index
            cells[u] = {"liquidation_price": _number(float(nearest)),
                        "liquidation_prices": {"down": _level(down, index),
                                               "up": _level(up, index)}}
        entry["underlyings"] = cells
    return entry


def largest_difference(entries: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Cheapest and dearest supported profile, and the term whose difference between the two
    is largest (terms missing from a profile count as 0)."""
    priced = {n: e for n, e in entries.items() if e.get("supported")}
    if not priced:
        return None
    cheapest = min(priced, key=lambda n: priced[n]["initial_margin"])
    dearest = max(priced, key=lambda n: priced[n]["initial_margin"])
    terms = set(priced[cheapest]["terms"]) | set(priced[dearest]["terms"])
    diffs = {t: priced[dearest]["terms"].get(t, 0.0) - priced[cheapest]["terms"].get(t, 0.0)
             for t in terms}
    term = max(diffs, key=lambda t: abs(diffs[t])) if diffs else None
    return {"cheapest": cheapest, "dearest": dearest,
            "initial_margin_difference": priced[dearest]["initial_margin"]
            - priced[cheapest]["initial_margin"],
            "driving_term": term, "driving_term_difference": diffs.get(term, 0.0)
            if term else 0.0}


def compare_profiles(bound: BoundBook, profiles: list[VenueProfile],
                     stablecoins: tuple[str, ...], with_liquidation: bool = True
                     ) -> dict[str, Any]:
    """The ``compare --profiles --json`` document."""
    pb = ProfileBook.from_bound(bound, stablecoins)
    runs = [run_profile(p, pb, with_liquidation) for p in profiles]
    gross = bound.account_gross_notional()
    accounts = []
    for a, account_id in enumerate(bound.book.account_ids):
        entries = {run.profile.info.name: account_entry(run, pb, a, float(gross[a]))
                   for run in runs}
        accounts.append({"id": account_id,
                         "mode": MODES_BY_CODE[int(bound.book.mode[a])].value,
                         "gross_notional": float(gross[a]), "profiles": entries,
                         "comparison": largest_difference(entries)})
    return {"timestamp": ns_to_iso(bound.timestamp_ns),
            "profiles": [run.profile.info.to_dict() for run in runs],
            "terms": [t.value for t in Term], "accounts": accounts}
