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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook, bind_market
from margin_engine.book.columnar import MODES_BY_CODE, book_subset
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.core.types import BoolArray, FloatArray, IntArray
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
LEVEL_CHUNK = 8  # grid levels evaluated together
VIEW_SHRINK = 0.5  # re-cut the evaluated view when its unsolved accounts fall to this share
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


@dataclass(frozen=True, slots=True)
class UnderlyingView:
    """The accounts exposed to one underlying (positions in it or its coin as collateral),
    as their own profile book: a move of that underlying changes nothing else."""

    underlying: int
    accounts: IntArray  # rows of the full book
    book: ProfileBook


def underlying_views(pb: ProfileBook) -> list[UnderlyingView]:
    exposed = np.zeros((pb.accounts, len(pb.underlyings)), dtype=np.bool_)
    exposed[pb.account[pb.live], pb.underlying[pb.live]] = True
    exposed |= pb.coin_exposure != 0.0
    views = []
    for u in range(len(pb.underlyings)):
        accounts = np.nonzero(exposed[:, u])[0]
        if accounts.size == 0:
            continue
        sub = pb if accounts.size == pb.accounts else pb.subset(accounts)
        views.append(UnderlyingView(underlying=u, accounts=accounts, book=sub))
    return views


@dataclass(frozen=True, slots=True)
class Targets:
    """The gaps whose roots are sought in one view: an account's shared gap (``row`` = its
    account in the view, ``rank`` 0) or an isolated position's own (``row`` = the position,
    ``rank`` = its order among the account's isolated positions of this underlying)."""

    account: IntArray
    rank: IntArray
    is_position: BoolArray
    row: IntArray

    def take(self, rows: IntArray) -> Targets:
        return Targets(account=self.account[rows], rank=self.rank[rows],
                       is_position=self.is_position[rows], row=self.row[rows])

    def values(self, shared: FloatArray, per_position: FloatArray | None) -> FloatArray:
        """(targets, k) gap values picked from the requirement's arrays."""
        out = np.empty((self.row.size, shared.shape[1]))
        out[~self.is_position] = shared[self.row[~self.is_position]]
        if per_position is not None and self.is_position.any():
            out[self.is_position] = per_position[self.row[self.is_position]]
        return out


def _targets(view: UnderlyingView, supported: BoolArray, isolated_acct: BoolArray,
             with_positions: bool) -> Targets:
    sb, u = view.book, view.underlying
    ok = supported[view.accounts]
    iso = isolated_acct[view.accounts]
    shared_rows = np.nonzero(ok & ~iso)[0]
    if with_positions:
        pos_rows = np.nonzero(iso[sb.account] & ok[sb.account] & (sb.underlying == u)
                              & sb.live)[0]
    else:
        pos_rows = np.zeros(0, dtype=np.int64)
    owners = sb.account[pos_rows]
    first = np.searchsorted(owners, owners, side="left")  # positions are grouped by account
    rank = np.arange(pos_rows.size) - first
    return Targets(account=np.concatenate([shared_rows, owners]).astype(np.int64),
                   rank=np.concatenate([np.zeros(shared_rows.size, dtype=np.int64), rank]),
                   is_position=np.concatenate([np.zeros(shared_rows.size, dtype=np.bool_),
                                               np.ones(pos_rows.size, dtype=np.bool_)]),
                   row=np.concatenate([shared_rows, pos_rows]).astype(np.int64))


def liquidation_levels(profile: VenueProfile, pb: ProfileBook, supported: BoolArray,
                       requirement: Requirement, views: list[UnderlyingView] | None = None,
                       reference: bool = False) -> Levels:
    """Both levels per account and underlying (and per isolated position). Accounts sharing
    one equity are searched through the profile's ``moved_gap``; isolated positions, and
    every account with ``reference``, through ``requirement`` (the reference)."""
    n_a, n_u = pb.accounts, len(pb.underlyings)
    n_p = pb.account.shape[0]
    down, up = np.full((n_a, n_u), np.nan), np.full((n_a, n_u), np.nan)
    p_down, p_up = np.full(n_p, np.nan), np.full(n_p, np.nan)
    isolated_acct = np.zeros(n_a, dtype=np.bool_)
    if requirement.position_gap is not None:
        isolated_acct[pb.account[~np.isnan(requirement.position_gap[:, 0])]] = True
    position_row = np.arange(n_p)  # a view's positions back to the full book's rows
    for view in underlying_views(pb) if views is None else views:
        sb, u = view.book, view.underlying
        index = float(pb.index[u])
        targets = _targets(view, supported, isolated_acct,
                           requirement.position_gap is not None)
        if targets.row.size == 0:
            continue
        if requirement.position_gap is None and not reference:  # one equity each: fast
            part = profile.moved_gap(sb, u)
            today_gap = requirement.equity[view.accounts, 0] - requirement.threshold[
                view.accounts, 0]
            lo, hi = _levels_by_parts(part, targets.account, today_gap, index)
            down[view.accounts[targets.account], u] = lo
            up[view.accounts[targets.account], u] = hi
            continue
        grid = index * GRID
        values = np.concatenate([  # the grid a few levels at a time: arrays that fit in cache
            targets.values(*_gaps(profile, sb, u, np.broadcast_to(
                grid[j:j + LEVEL_CHUNK], (sb.accounts, grid[j:j + LEVEL_CHUNK].size)).copy()))
            for j in range(0, grid.size, LEVEL_CHUNK)], axis=1)
        lo, hi = _solve(profile, sb, u, targets, _brackets(values, grid, index))
        full_account = view.accounts[targets.account]
        shared_t = ~targets.is_position
        down[full_account[shared_t], u] = lo[shared_t]
        up[full_account[shared_t], u] = hi[shared_t]
        if targets.is_position.any():
            rows = position_row[pb.account.searchsorted(view.accounts, side="left")]
            # the view keeps each account's positions in order: full row = first row of the
            # account in the full book + offset within the account
            offset = targets.row[targets.is_position] - sb.account.searchsorted(
                targets.account[targets.is_position], side="left")
            full_rows = rows[targets.account[targets.is_position]] + offset
            p_down[full_rows] = lo[targets.is_position]
            p_up[full_rows] = hi[targets.is_position]
            # an isolated account's level: the nearest of its positions'
            for a, d, h in zip(full_account[targets.is_position].tolist(),
                               lo[targets.is_position].tolist(),
                               hi[targets.is_position].tolist(), strict=True):
                if not math.isnan(d):
                    down[a, u] = d if math.isnan(down[a, u]) else max(down[a, u], d)
                if not math.isnan(h):
                    up[a, u] = h if math.isnan(up[a, u]) else min(up[a, u], h)
    return Levels(down=down, up=up, position_down=p_down, position_up=p_up)


Part = Callable[[IntArray, FloatArray], FloatArray]


def _levels_by_parts(part: Part, accounts: IntArray, today_gap: FloatArray, index: float
                     ) -> tuple[FloatArray, FloatArray]:
    """(down, up) roots of every account's shared gap, gap(a, S) = g_a + part(a, S) with
    g_a = today's gap - part(a, index): the same grid, brackets and Illinois steps as the
    ``requirement`` search, each step evaluating only the unsolved (account, side) pairs."""
    base = today_gap[accounts] - part(accounts, np.full(accounts.size, index))

    def gap(rows: IntArray, levels: FloatArray) -> FloatArray:
        values: FloatArray = base[rows] + part(accounts[rows], levels)
        return values

    grid = index * GRID
    return _illinois(lambda rows, _sides, levels: gap(rows, levels),
                     _brackets(_scan(gap, accounts.size, grid, index), grid, index), index)


def _scan(gap: Part, n_t: int, grid: FloatArray, index: float) -> FloatArray:
    """(targets, levels) gaps on the grid, evaluated outwards from ``index`` a chunk of levels
    at a time and only until each side's first sign change (NaN beyond it): ``_brackets``
    finds on them what it finds on the whole grid (the closest changes below and above)."""
    values = np.full((n_t, grid.size), np.nan)
    below = grid[1:] <= index * (1 + 1e-12)  # per interval, a prefix
    centre = int(np.count_nonzero(below))  # the top level of the last interval below
    values[:, centre] = gap(np.arange(n_t), np.full(n_t, grid[centre]))
    for offset in range(1, max(centre, grid.size - centre), LEVEL_CHUNK):
        change = _changes(values)
        want_down = np.nonzero(~(change & below).any(axis=1))[0]
        want_up = np.nonzero(~(change & ~below).any(axis=1))[0]
        down = np.arange(centre - offset, max(centre - offset - LEVEL_CHUNK, -1), -1)
        up = np.arange(centre + offset, min(centre + offset + LEVEL_CHUNK, grid.size))
        rows = np.concatenate([np.repeat(want_down, down.size), np.repeat(want_up, up.size)])
        cols = np.concatenate([np.tile(down, want_down.size), np.tile(up, want_up.size)])
        if rows.size:
            values[rows, cols] = gap(rows, grid[cols])
    return values


def _changes(values: FloatArray) -> BoolArray:
    """Per interval of adjacent levels: the gap changes sign (or is 0 at its lower end)."""
    f0, f1 = values[:, :-1], values[:, 1:]
    with np.errstate(invalid="ignore"):
        change: BoolArray = np.isfinite(f0) & np.isfinite(f1) & ((f0 == 0.0)
                                                                 | (f0 * f1 < 0.0))
    return change


Evaluate = Callable[[IntArray, IntArray, FloatArray], FloatArray]


def _illinois(gap: Evaluate, brackets: FloatArray, index: float
              ) -> tuple[FloatArray, FloatArray]:
    """Illinois false position on every (target, side) bracket at once: (down roots, up
    roots); each step evaluates ``gap(rows, sides, levels)`` at the unsolved pairs only, and
    a root is taken when the step or the bracket is within ``TOLERANCE`` of the level, or
    the gap is 0."""
    x0, x1 = brackets[:, :, 0].copy(), brackets[:, :, 1].copy()
    f0, f1 = brackets[:, :, 2].copy(), brackets[:, :, 3].copy()
    act = ~np.isnan(x0)
    found = np.where(act & (f0 == 0.0), x0, np.nan)
    act &= f0 != 0.0
    last = np.zeros(x0.shape, dtype=np.int64)
    previous = np.full(x0.shape, np.nan)
    for _ in range(ITERATIONS):
        rows, sides = np.nonzero(act)
        if rows.size == 0:
            break
        x = np.where(act, (x0 * f1 - x1 * f0) / np.where(act, f1 - f0, 1.0), index)
        inside = (x > np.minimum(x0, x1)) & (x < np.maximum(x0, x1))
        x = np.where(act & ~inside, 0.5 * (x0 + x1), x)
        fx = np.full(x0.shape, np.nan)
        fx[rows, sides] = gap(rows, sides, x[rows, sides])
        step = np.abs(x - previous)
        done = act & ((fx == 0.0) | (np.abs(x1 - x0) <= TOLERANCE * np.abs(x))
                      | (step <= TOLERANCE * np.abs(x)))
        found = np.where(done, x, found)
        previous = x
        same = np.sign(fx) == np.sign(f0)
        new_x0, new_f0 = np.where(same, x, x0), np.where(same, fx, f0)
        new_x1, new_f1 = np.where(same, x1, x), np.where(same, f1, fx)
        new_f1 = np.where(same & (last == 1), new_f1 * 0.5, new_f1)
        new_f0 = np.where(~same & (last == -1), new_f0 * 0.5, new_f0)
        last = np.where(same, 1, -1)
        x0, f0, x1, f1 = new_x0, new_f0, new_x1, new_f1
        act &= ~done
    found = np.where(act, (x0 * f1 - x1 * f0) / np.where(act, f1 - f0, 1.0), found)
    return found[:, 0], found[:, 1]


def _brackets(values: FloatArray, levels: FloatArray, index: float) -> FloatArray:
    """Per target, (closest sign change at or below ``index``, closest above) as an array
    (targets, 2 sides, 4: x0, x1, f0, f1), NaN where a side has none."""
    f0, f1 = values[:, :-1], values[:, 1:]
    change = _changes(values)
    below_ok = levels[1:] <= index * (1 + 1e-12)
    out = np.full((values.shape[0], 2, 4), np.nan)
    rows = np.arange(values.shape[0])
    n_int = levels.size - 1
    # closest below: the last qualifying interval; closest above: the first
    below = change & below_ok[None, :]
    last = n_int - 1 - np.argmax(below[:, ::-1], axis=1)
    has = below.any(axis=1)
    above = change & ~below_ok[None, :]
    first = np.argmax(above, axis=1)
    has_up = above.any(axis=1)
    for side, (j, ok) in enumerate(((last, has), (first, has_up))):
        r = rows[ok]
        jj = j[ok]
        out[r, side, 0] = levels[jj]
        out[r, side, 1] = levels[jj + 1]
        out[r, side, 2] = f0[r, jj]
        out[r, side, 3] = f1[r, jj]
    return out


def _solve(profile: VenueProfile, pb: ProfileBook, u: int, targets: Targets,
           brackets: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The Illinois steps with every gap from ``requirement``: each step evaluates the
    accounts that still have an unsolved side through their own view of the book, re-cut when
    they have fallen to half of the view."""
    index = float(pb.index[u])
    view: dict[str, Any] = {"accounts": None, "book": pb}

    def gap(rows: IntArray, sides: IntArray, levels: FloatArray) -> FloatArray:
        need = np.unique(targets.account[rows])
        if view["accounts"] is None or need.size <= VIEW_SHRINK * view["accounts"].size:
            view["accounts"] = need
            view["book"] = pb if need.size == pb.accounts else pb.subset(need)
        sub: ProfileBook = view["book"]
        local = _localised(pb, sub, view["accounts"], targets.take(rows))
        cols = 2 * local.rank + sides
        grid = np.full((sub.accounts, 2 * (int(local.rank.max()) + 1)), index)
        grid[local.account, cols] = levels
        picked = local.values(*_gaps(profile, sub, u, grid))
        values: FloatArray = picked[np.arange(rows.size), cols]
        return values

    return _illinois(gap, brackets, index)


def _localised(pb: ProfileBook, sub: ProfileBook, accounts: IntArray, targets: Targets
               ) -> Targets:
    """``targets`` of ``pb`` re-indexed into ``sub`` = ``pb`` cut to ``accounts`` (sorted)."""
    local = np.searchsorted(accounts, targets.account)
    rows = np.where(targets.is_position,
                    _position_rows(pb, sub, accounts, local, targets.row), local)
    return Targets(account=local, rank=targets.rank, is_position=targets.is_position, row=rows)


def _position_rows(pb: ProfileBook, sub: ProfileBook, accounts: IntArray, local: IntArray,
                   rows: IntArray) -> IntArray:
    """Position rows of ``pb`` (owned by ``accounts[local]``) as rows of ``sub``."""
    owner = accounts[local]
    offset = rows - pb.account.searchsorted(owner, side="left")
    result: IntArray = sub.account.searchsorted(local, side="left") + offset
    return result


def run_profile(profile: VenueProfile, pb: ProfileBook, with_liquidation: bool = True,
                views: list[UnderlyingView] | None = None, reference: bool = False
                ) -> ProfileRun:
    requirement = profile.requirement(pb, today(pb))
    reasons = profile.unsupported(pb)
    supported = np.array([r is None for r in reasons], dtype=np.bool_)
    levels = liquidation_levels(profile, pb, supported, requirement, views, reference) \
        if with_liquidation else None
    return ProfileRun(profile=profile, requirement=requirement, unsupported=reasons,
                      levels=levels)


def _nearest_level(down: float, up: float, index: float) -> float:
    """The level nearer to ``index`` in log distance (down on a tie; NaN when neither)."""
    if math.isnan(down):
        return up
    if math.isnan(up):
        return down
    return down if abs(math.log(down / index)) <= abs(math.log(up / index)) else up


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _level(price: float, index: float) -> dict[str, float] | None:
    if not math.isfinite(price):
        return None
    return {"price": price, "distance_pct": 100.0 * (price / index - 1.0)}


def exposure(pb: ProfileBook) -> BoolArray:
    """accounts x underlyings: a position in the underlying or its coin as collateral."""
    exposed = np.zeros((pb.accounts, len(pb.underlyings)), dtype=np.bool_)
    exposed[pb.account, pb.underlying] = True
    exposed |= pb.coin_exposure != 0.0
    return exposed


def account_entry(run: ProfileRun, pb: ProfileBook, a: int, gross: float,
                  exposed: BoolArray) -> dict[str, Any]:
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
            if not exposed[a, u_idx]:
                continue
            index = float(pb.index[u_idx])
            cells[u] = {"liquidation_price": _number(_nearest_level(down, up, index)),
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


PROFILE_CHUNK = 20_000  # accounts a venue is run on at once: its arrays are positions x
# states x scenarios (deribit-pm: about 22 KB a position), so a book is run a part at a time


def compare_profiles(bound: BoundBook, profiles: list[VenueProfile],
                     stablecoins: tuple[str, ...], with_liquidation: bool = True
                     ) -> dict[str, Any]:
    """The ``compare --profiles --json`` document."""
    return {**profiles_head(bound, profiles),
            "accounts": list(compared_accounts(bound, profiles, stablecoins, with_liquidation))}


def profiles_head(bound: BoundBook, profiles: list[VenueProfile]) -> dict[str, Any]:
    """The document's fields before its accounts."""
    return {"timestamp": ns_to_iso(bound.timestamp_ns),
            "profiles": [p.info.to_dict() for p in profiles], "terms": [t.value for t in Term]}


def compared_accounts(bound: BoundBook, profiles: list[VenueProfile],
                      stablecoins: tuple[str, ...], with_liquidation: bool = True
                      ) -> Iterator[dict[str, Any]]:
    """The document's accounts in book order, the profiles run on ``PROFILE_CHUNK`` accounts
    at a time (an account's numbers do not depend on the other accounts of its book)."""
    for a0 in range(0, bound.account_count, PROFILE_CHUNK):
        part = bound if bound.account_count <= PROFILE_CHUNK else bind_market(
            book_subset(bound.book, np.arange(a0, min(a0 + PROFILE_CHUNK,
                                                       bound.account_count))), bound.market)
        yield from _part_accounts(part, profiles, stablecoins, with_liquidation)


def _part_accounts(bound: BoundBook, profiles: list[VenueProfile],
                   stablecoins: tuple[str, ...], with_liquidation: bool
                   ) -> Iterator[dict[str, Any]]:
    pb = ProfileBook.from_bound(bound, stablecoins)
    views = underlying_views(pb) if with_liquidation else []
    runs = [run_profile(p, pb, with_liquidation, views) for p in profiles]
    gross = bound.account_gross_notional()
    exposed = exposure(pb)
    for a, account_id in enumerate(bound.book.account_ids):
        entries = {run.profile.info.name: account_entry(run, pb, a, float(gross[a]), exposed)
                   for run in runs}
        yield {"id": account_id, "mode": MODES_BY_CODE[int(bound.book.mode[a])].value,
               "gross_notional": float(gross[a]), "profiles": entries,
               "comparison": largest_difference(entries)}
