"""Venue profiles: what every profile is, and the book view they all read.

A *profile* is a documented approximation of one venue's published margin method (with its
sources and the dates of its parameters). It is chosen by name from the registry and used only
through the :class:`VenueProfile` protocol.

Every profile evaluates a *state*: the book with one underlying's index moved to given levels
(``k`` levels per account at once, everything else fixed; marks of perps and futures, option
forwards and coin collateral of that underlying move in proportion, vols are sticky strike).
Today's margin is the state with every level at today's index. The same vectorised evaluation
gives liquidation prices: the levels where the venue's equity meets its liquidation threshold.

Units: every array is USD unless its name says otherwise; a position's ``quantity`` q turns a
USD price change into USD P&L (bound.py), ``size_cs`` is size x contract size (coins for linear
and inverse options, USD for inverse perps and futures).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from margin_engine.book.bound import BoundBook, asset_prices, bind_market
from margin_engine.book.columnar import MODE_CODES, book_subset
from margin_engine.core.types import BoolArray, FloatArray, IntArray
from margin_engine.domain.instruments import InstrumentKind, MarginMode
from margin_engine.pricing.black76 import price as black76_price


class Term(enum.Enum):
    """The additive parts a profile splits its initial margin into (shared vocabulary, so two
    venues' margins can be compared term by term)."""

    LINEAR_TIERS = "linear_tiers"  # notional x tier rate (perps and futures)
    OPTION_CHARGE = "option_charge"  # per-option standard margin (venues without scenarios)
    PRICE_SCENARIOS = "price_scenarios"  # worst loss on the standard price x vol grid
    EXTENDED_MOVES = "extended_moves"  # worst (dampened) tail move when it is the worst
    VOLATILITY = "volatility"  # vol-only charge (OKX vega, theta)
    BASIS = "basis"  # roll / basis shocks of futures and perps
    CONTINGENCY = "contingency"  # fixed add-ons: per short option, offsetting futures, perps
    MINIMUM_CHARGE = "minimum_charge"  # floor charges (OKX MR7)
    STABLECOIN = "stablecoin"  # depeg add-on
    ORACLE = "oracle"  # oracle-confidence add-on


class Unsupported(enum.Enum):
    """Why a venue cannot carry an account's book as given."""

    OPTIONS = "the venue lists no options in this product"
    DATED_FUTURES = "the venue lists no dated futures"
    INVERSE = "the venue lists no coin-settled (inverse) contracts in this product"
    SPOT = "spot positions are not margined products on this venue"
    COLLATERAL = "the venue accepts only stablecoin collateral here"
    SEVERAL_UNDERLYINGS = "one portfolio account per underlying on this venue"


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """A published page a profile's method or numbers come from."""

    title: str
    url: str
    published: str  # the page's own date (or "undated")
    read: str  # when it was read for this profile (ISO date)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileInfo:
    name: str
    venue: str
    summary: str
    parameters_as_of: str  # ISO date of the parameters the profile carries
    sources: tuple[Source, ...]
    leaves_out: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "venue": self.venue, "summary": self.summary,
                "parameters_as_of": self.parameters_as_of,
                "sources": [{"title": s.title, "url": s.url, "published": s.published,
                             "read": s.read} for s in self.sources],
                "leaves_out": list(self.leaves_out)}


def group_sum(groups: IntArray, values: FloatArray, count: int) -> FloatArray:
    """out[g] = sum of the rows values[i] with groups[i] == g, (count, ...) from (n, ...): the
    rows of each group are added in their order (as ``np.add.at`` does), one ``reduceat``
    over the rows sorted by group (stable) instead of one scatter per element."""
    out = np.zeros((count, *values.shape[1:]))
    if groups.size == 0:
        return out
    if groups.size > 1 and bool(np.any(groups[1:] < groups[:-1])):
        order = np.argsort(groups, kind="stable")
        groups, values = groups[order], values[order]
    starts = np.flatnonzero(np.concatenate(([True], groups[1:] != groups[:-1])))
    out[groups[starts]] = np.add.reduceat(values, starts, axis=0)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileBook:
    """A bound book flattened for profiles (per position, per account, per underlying)."""

    bound: BoundBook
    account: IntArray  # per position
    underlying: IntArray
    kind: IntArray  # InstrumentKind codes
    inverse: BoolArray
    option: BoolArray  # live options
    live: BoolArray
    quantity: FloatArray
    size_cs: FloatArray
    entry_usd: FloatArray
    strike: FloatArray
    is_call: BoolArray
    years: FloatArray
    sigma: FloatArray
    forward_ratio: FloatArray  # option forward (or delta-one mark) / index today
    mark: FloatArray  # USD per coin today
    index: FloatArray  # per underlying
    collateral_value: FloatArray  # per account, USD at market
    coin_exposure: FloatArray  # accounts x underlyings, USD of coin collateral
    stable_value: FloatArray  # per account, USD of stablecoin collateral
    non_stable_non_coin: FloatArray  # per account, USD of other collateral
    stable_face: FloatArray  # per account, stablecoin amount (units)
    mode: IntArray  # per account, MODE_CODES
    stablecoins: tuple[str, ...]
    # state-independent quantities a profile derives once per book (e.g. net short options)
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def accounts(self) -> int:
        return self.bound.account_count

    @property
    def underlyings(self) -> tuple[str, ...]:
        return self.bound.underlyings

    def account_sum(self, per_position: FloatArray) -> FloatArray:
        """Segment sum over positions of a (positions, ...) array into (accounts, ...)."""
        return group_sum(self.account, per_position, self.accounts)

    def cell_sum(self, per_position: FloatArray, group: IntArray, groups: int) -> FloatArray:
        """(accounts, groups, ...) sums of a (positions, ...) array by a per-position group."""
        flat = group_sum(self.account * groups + group, per_position, self.accounts * groups)
        return flat.reshape((self.accounts, groups, *per_position.shape[1:]))

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per book under ``key`` (for state-independent arrays)."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def subset(self, accounts: IntArray) -> ProfileBook:
        """The same book restricted to some accounts (in the given order), bound to the same
        market: every per-account number of a kept account is unchanged."""
        sub = book_subset(self.bound.book, accounts)
        return ProfileBook.from_bound(bind_market(sub, self.bound.market), self.stablecoins)

    def is_mode(self, mode: MarginMode) -> BoolArray:
        flags: BoolArray = self.mode == MODE_CODES[mode]
        return flags

    @staticmethod
    def from_bound(bound: BoundBook, stablecoins: tuple[str, ...]) -> ProfileBook:
        book, table = bound.book, bound.book.instruments
        inst = book.position_instrument
        index = bound.index
        und = table.underlying[inst].astype(np.int64)
        live = bound.live[inst]
        prices = asset_prices(book, bound.market)
        values = book.collateral * prices[np.newaxis, :] if book.assets else np.zeros(
            (book.account_count, 0))
        coins = np.array([a.partition("@")[0] in bound.underlyings for a in book.assets],
                         dtype=np.bool_)
        stable = np.array([a.partition("@")[0] in stablecoins for a in book.assets],
                          dtype=np.bool_)
        return ProfileBook(
            bound=bound, account=bound.position_account, underlying=und,
            kind=table.kind[inst].astype(np.int64), inverse=table.inverse[inst],
            option=table.is_option[inst] & live, live=live, quantity=bound.quantity,
            size_cs=book.size * table.contract_size[inst], entry_usd=bound.entry_usd,
            strike=table.strike[inst], is_call=table.is_call[inst], years=bound.years[inst],
            sigma=bound.sigma[inst], forward_ratio=bound.base_price[inst] / index[und],
            mark=bound.mark[inst], index=index, collateral_value=bound.collateral_value,
            coin_exposure=bound.collateral_exposure,
            stable_value=values[:, stable].sum(axis=1) if values.size else np.zeros(
                book.account_count),
            non_stable_non_coin=values[:, ~stable & ~coins].sum(axis=1) if values.size
            else np.zeros(book.account_count),
            stable_face=book.collateral[:, stable].sum(axis=1) if book.assets else np.zeros(
                book.account_count),
            mode=book.mode.astype(np.int64), stablecoins=stablecoins)


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """The book at ``k`` index levels per account of one underlying (or today's, k = 1).

    ``factor``: per position, level / today's index for positions in the moved underlying,
    else 1. ``mark``: per position USD per coin at that level. ``collateral``: per account
    USD value of all collateral. ``index``: per position, its underlying's index level.
    """

    factor: FloatArray  # (positions, k)
    mark: FloatArray
    index: FloatArray
    forward: FloatArray  # options: forward at the level; delta-one: the mark
    collateral: FloatArray  # (accounts, k)
    coin_factor: FloatArray  # (accounts, underlyings, k): coin price / today's
    pnl: FloatArray  # (positions, k) q x (mark - entry_usd)

    @property
    def k(self) -> int:
        return int(self.factor.shape[1])


def make_state(pb: ProfileBook, moved: int, levels: FloatArray) -> State:
    """State with underlying ``moved`` at ``levels`` (accounts, k) for each account
    (``moved`` = -1: today's state, ``levels`` ignored beyond its k)."""
    k = levels.shape[1]
    n_pos = pb.account.shape[0]
    factor = np.ones((n_pos, k))
    coin_factor = np.ones((pb.accounts, len(pb.underlyings), k))
    if moved >= 0:
        ratio = levels / pb.index[moved]
        rows = pb.underlying == moved
        factor[rows] = ratio[pb.account[rows]]
        coin_factor[:, moved, :] = ratio
    live_factor = np.where(pb.live[:, None], factor, 1.0)
    index = pb.index[pb.underlying][:, None] * live_factor
    forward = (pb.forward_ratio * pb.index[pb.underlying])[:, None] * live_factor
    mark = pb.mark[:, None] * live_factor
    opt = np.nonzero(pb.option)[0]
    if opt.size:
        mark[opt] = black76_price(forward[opt], pb.strike[opt, None], pb.years[opt, None],
                                  pb.sigma[opt, None], pb.is_call[opt, None])
    collateral = pb.collateral_value[:, None] + np.einsum(
        "au,auk->ak", pb.coin_exposure, coin_factor - 1.0)
    pnl = pb.quantity[:, None] * (mark - pb.entry_usd[:, None])
    return State(factor=live_factor, mark=mark, index=index, forward=forward,
                 collateral=collateral, coin_factor=coin_factor, pnl=pnl)


def today(pb: ProfileBook) -> State:
    return make_state(pb, -1, np.ones((pb.accounts, 1)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Requirement:
    """A profile's numbers at a state, (accounts, k) arrays in USD.

    ``equity``: the venue's equity (after its collateral rates); ``threshold``: the equity
    below which the venue liquidates (MM, or MM x a ratio). ``position_gap``: for positions
    on their own (isolated) margin, per position equity - MM (NaN where shared).
    """

    initial: FloatArray
    maintenance: FloatArray
    equity: FloatArray
    threshold: FloatArray
    terms: Mapping[Term, FloatArray] = field(default_factory=dict)
    details: Mapping[str, FloatArray] = field(default_factory=dict)
    position_gap: FloatArray | None = None


class VenueProfile(Protocol):
    """A venue's margin method: pure function of a profile book and a state."""

    info: ProfileInfo
    uses_brackets: bool  # margined by notional brackets (leverage-tier files apply)

    def unsupported(self, pb: ProfileBook) -> list[Unsupported | None]:
        """Per account, why the venue cannot carry it (None: it can)."""
        ...

    def requirement(self, pb: ProfileBook, state: State) -> Requirement: ...

    def moved_gap(self, pb: ProfileBook, u: int
                  ) -> Callable[[IntArray, FloatArray], FloatArray]:
        """``evaluate(accounts, levels)``: the part of equity - threshold (of accounts sharing
        one equity) that moves with underlying ``u``, at those (account, level) pairs; today's
        gap minus it at today's index is the part that does not (the fast liquidation
        search; ``requirement`` stays the reference)."""
        ...

    def configured(self, parameters: Mapping[str, Any], tiers: Mapping[str, Any],
                   source: str) -> VenueProfile:
        """The same method with a profile file's parameters (and bracket tables by
        underlying, for bracket venues) over this one's."""
        ...

    def parameters(self) -> dict[str, Any]:
        """The parameters a profile file can set, as its ``[parameters]`` table."""
        ...


def kind_flags(pb: ProfileBook, kind: InstrumentKind) -> BoolArray:
    flags: BoolArray = pb.kind == int(kind)
    return flags


def first_reason(pb: ProfileBook, checks: list[tuple[BoolArray, Unsupported]]
                 ) -> list[Unsupported | None]:
    """Per account, the first reason whose per-position (or per-account) mask hits it."""
    reasons: list[Unsupported | None] = [None] * pb.accounts
    for mask, reason in checks:
        if mask.shape[0] == pb.accounts:
            hit = mask
        else:
            hit = np.zeros(pb.accounts, dtype=np.bool_)
            hit[pb.account[mask]] = True
        for a in np.nonzero(hit)[0].tolist():
            if reasons[a] is None:
                reasons[a] = reason
    return reasons
