"""A seeded venue book for cascade studies, built directly as columns (100,000 accounts in
about a second, no per-account Python objects).

Accounts (all draws from one ``numpy`` generator, whole columns at a time):

* strategy: directional perps and futures, option sellers, delta-hedged market makers,
  basis traders (short future / long perp), pairs (long one perp, short the other);
* size: gross notional N = min_notional x (1 + Pareto(alpha)) x the strategy's multiplier,
  capped at max_notional (alpha 1.2; 100,000 accounts, seed 1: median 7,266 USD, mean
  35,636 USD, the largest 1 % hold 44 % of the gross notional, the largest 10 % 72 %);
* margin mode: drawn per strategy (market makers mostly portfolio, directional mostly isolated);
* collateral mix: a primary asset and, for some accounts, a second one (USDC, USDT, BTC, ETH,
  the venue token ``VTK`` and bridged ETH ``ETH@arbitrum``), as shares of the account's value;
* utilisation u = IM / equity after haircuts at the start (the leverage distribution: three
  bands, from careful to nearly maxed out).

Collateral amounts are not part of the population: ``fund`` sizes them for a margin model, so
that each account's equity after haircuts is IM / u (see ``CollateralSizing``).
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from margin_engine.book.bound import bind_market
from margin_engine.book.columnar import MODE_CODES, ColumnarBook, book_from_columns, book_subset
from margin_engine.collateral.haircuts import AssetHaircut, CollateralConfig
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import datetime_to_ns
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.domain.instruments import (
    Instrument,
    InstrumentKind,
    MarginMode,
    OptionRight,
)
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.run import AccountMargins
from margin_engine.market.snapshot import FlatVol, MarketSnapshot, UnderlyingMarket
from margin_engine.pricing.black76 import greeks

VENUE_TOKEN = "VTK"
BRIDGED_ETH = "ETH@arbitrum"
ASSETS = tuple(sorted(("USDC", "USDT", "BTC", "ETH", VENUE_TOKEN, BRIDGED_ETH)))
UNDERLYINGS = ("BTC", "ETH", VENUE_TOKEN)
DEFAULT_INDEX: Mapping[str, float] = {"BTC": 60_000.0, "ETH": 3_000.0, VENUE_TOKEN: 2.5}
VOLS: Mapping[str, float] = {"BTC": 0.55, "ETH": 0.70, VENUE_TOKEN: 1.20}
STRIKE_STEP = {"BTC": 1_000.0, "ETH": 50.0}
OPTION_UNDERLYINGS = ("BTC", "ETH")
EXPIRY_DAYS = (30, 91)
BASIS_PER_YEAR = 0.08  # futures marks at index x (1 + 8 % x T): a contango market
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class Strategy(enum.IntEnum):
    DIRECTIONAL = 0
    OPTION_SELLER = 1
    MARKET_MAKER = 2
    BASIS = 3
    PAIRS = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


class CollateralSizing(enum.Enum):
    """How ``fund`` sizes collateral when several margin modes are compared.

    ``per_mode``: each mode's own IM / u (the same traders at the same utilisation of what
    their mode allows); ``shared``: the largest IM of the compared modes / u, the same balances
    in every mode (every account could open its book under any of them)."""

    PER_MODE = "per-mode"
    SHARED = "shared"


@dataclass(frozen=True, slots=True, kw_only=True)
class VenueMix:
    """The population's distributions (shares sum to 1 where they are shares)."""

    strategies: tuple[float, ...] = (0.45, 0.15, 0.12, 0.15, 0.13)  # by Strategy
    # P(isolated, cross, portfolio) by Strategy
    modes: tuple[tuple[float, float, float], ...] = (
        (0.60, 0.35, 0.05), (0.20, 0.40, 0.40), (0.00, 0.30, 0.70), (0.10, 0.50, 0.40),
        (0.20, 0.60, 0.20))
    size_multiplier: tuple[float, ...] = (1.0, 2.0, 20.0, 5.0, 2.0)  # by Strategy
    primary_collateral: Mapping[str, float] = field(default_factory=lambda: {
        "USDT": 0.34, "USDC": 0.26, "BTC": 0.14, "ETH": 0.09, VENUE_TOKEN: 0.09,
        BRIDGED_ETH: 0.08})
    second_asset_probability: float = 0.45
    second_asset_share: tuple[float, float] = (0.15, 0.60)
    pareto_alpha: float = 1.2
    min_notional: float = 2_000.0
    max_notional: float = 2e8
    # utilisation bands (probability, low, high): IM / equity after haircuts at the start
    utilisation: tuple[tuple[float, float, float], ...] = (
        (0.45, 0.15, 0.50), (0.40, 0.50, 0.85), (0.15, 0.85, 0.97))
    entry_noise: float = 0.003  # entry = mark x (1 + N(0, noise)): some unrealised P&L
    directional_underlyings: tuple[float, float, float] = (0.50, 0.35, 0.15)  # BTC, ETH, VTK


@dataclass(frozen=True, slots=True, kw_only=True)
class VenuePopulation:
    """Positions of every account (``book``, collateral still zero), the market they were
    drawn at, and per account its strategy, utilisation and collateral shares."""

    book: ColumnarBook
    market: MarketSnapshot
    strategy: IntArray  # Strategy codes
    utilisation: FloatArray
    shares: FloatArray  # accounts x book.assets: share of the collateral value, rows sum to 1
    seed: int

    @property
    def account_count(self) -> int:
        return self.book.account_count


def venue_config(base: RiskConfig | None = None) -> RiskConfig:
    """The risk configuration with haircut parameters for the venue's own assets: the token
    (vol 120 %, 30 M USD daily volume: thin) and ETH bridged over a canonical bridge."""
    base = base or RiskConfig()
    haircuts: CollateralConfig = base.haircuts
    assets = dict(haircuts.assets)
    assets.setdefault(VENUE_TOKEN, AssetHaircut(annual_vol=VOLS[VENUE_TOKEN],
                                                average_daily_volume_usd=3e7))
    chains = dict(haircuts.chain_of)
    chains.setdefault("arbitrum", "canonical")
    return replace(base, haircuts=replace(haircuts, assets=assets, chain_of=chains))


def expiry_code(ns: int) -> str:
    """ns -> Deribit expiry code of its UTC date (``27JUN25``)."""
    day = dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=dt.UTC)
    return f"{day.day}{MONTHS[day.month - 1]}{day.year % 100:02d}"


def _expiries(timestamp_ns: int) -> tuple[int, ...]:
    start = dt.datetime.fromtimestamp(timestamp_ns // 1_000_000_000, tz=dt.UTC)
    return tuple(datetime_to_ns(dt.datetime(d.year, d.month, d.day, 8, tzinfo=dt.UTC))
                 for d in (start + dt.timedelta(days=days) for days in EXPIRY_DAYS))


def venue_market(index: Mapping[str, float], timestamp_ns: int) -> MarketSnapshot:
    """BTC, ETH and the venue token at ``index`` (defaults for missing ones) with flat vols,
    futures marks in contango, every collateral asset priced (stablecoins at 1)."""
    levels = {u: float(index.get(u, DEFAULT_INDEX[u])) for u in UNDERLYINGS}
    marks = {}
    for u in OPTION_UNDERLYINGS:
        for expiry in _expiries(timestamp_ns):
            years = (expiry - timestamp_ns) / 1e9 / (365 * 86400)
            marks[f"{u}-{expiry_code(expiry)}"] = levels[u] * (1.0 + BASIS_PER_YEAR * years)
    return MarketSnapshot(
        timestamp_ns=timestamp_ns,
        underlyings={u: UnderlyingMarket(index=levels[u], vol=FlatVol(level=VOLS[u]))
                     for u in UNDERLYINGS},
        asset_prices={"USD": 1.0, "USDC": 1.0, "USDT": 1.0, **levels},
        marks=marks,
        correlation={("BTC", "ETH"): 0.8, ("BTC", VENUE_TOKEN): 0.5,
                     ("ETH", VENUE_TOKEN): 0.5})


@dataclass(frozen=True, slots=True)
class _Listing:
    instruments: tuple[Instrument, ...]
    perp: dict[str, int]
    future: dict[tuple[str, int], int]  # (underlying, expiry slot) -> row
    option_base: dict[tuple[str, int, OptionRight], int]  # first strike's row
    strikes: dict[str, FloatArray]


def _listing(market: MarketSnapshot) -> _Listing:
    """Perps on every underlying; futures and options (strikes 60-140 % of the index on the
    listing grid, calls and puts) on BTC and ETH at two expiries."""
    expiries = _expiries(market.timestamp_ns)
    rows: list[Instrument] = []
    perp, future, option_base, strikes = {}, {}, {}, {}
    for u in UNDERLYINGS:
        perp[u] = len(rows)
        rows.append(Instrument(name=f"{u}-PERP", kind=InstrumentKind.PERPETUAL, underlying=u))
    for u in OPTION_UNDERLYINGS:
        step, level = STRIKE_STEP[u], market.underlyings[u].index
        grid = step * np.arange(max(1, math.ceil(0.6 * level / step)),
                                math.floor(1.4 * level / step) + 1)
        strikes[u] = grid.astype(np.float64)
        for slot, expiry in enumerate(expiries):
            code = expiry_code(expiry)
            future[(u, slot)] = len(rows)
            rows.append(Instrument(name=f"{u}-{code}", kind=InstrumentKind.FUTURE,
                                   underlying=u, expiry_ns=expiry))
            for right in (OptionRight.CALL, OptionRight.PUT):
                option_base[(u, slot, right)] = len(rows)
                letter = "C" if right is OptionRight.CALL else "P"
                rows.extend(Instrument(name=f"{u}-{code}-{int(k)}-{letter}",
                                       kind=InstrumentKind.OPTION, underlying=u,
                                       expiry_ns=expiry, strike=float(k), right=right)
                            for k in grid.tolist())
    return _Listing(tuple(rows), perp, future, option_base, strikes)


@dataclass(slots=True)
class _Legs:
    """Position columns as they are drawn."""

    account: list[IntArray] = field(default_factory=list)
    instrument: list[IntArray] = field(default_factory=list)
    coins: list[FloatArray] = field(default_factory=list)  # signed size in coins

    def add(self, account: IntArray, instrument: IntArray, coins: FloatArray) -> None:
        self.account.append(np.asarray(account, dtype=np.int64))
        self.instrument.append(np.asarray(instrument, dtype=np.int64))
        self.coins.append(np.asarray(coins, dtype=np.float64))


def venue_population(accounts: int, seed: int, *, index: Mapping[str, float] | None = None,
                     timestamp_ns: int | None = None, mix: VenueMix | None = None
                     ) -> VenuePopulation:
    """``accounts`` accounts drawn with ``seed`` (same inputs, same population)."""
    if accounts < 1:
        raise InputError("at least 1 account", field="population", value=accounts)
    mix = mix or VenueMix()
    _check_mix(mix)
    when = timestamp_ns if timestamp_ns is not None else datetime_to_ns(
        dt.datetime(2025, 6, 2, tzinfo=dt.UTC))
    market = venue_market(index or {}, when)
    listing = _listing(market)
    rng = np.random.default_rng(seed)
    n = accounts
    strategy = rng.choice(len(Strategy), size=n, p=np.asarray(mix.strategies))
    notional = mix.min_notional * (1.0 + rng.pareto(mix.pareto_alpha, size=n))
    notional = np.minimum(notional * np.asarray(mix.size_multiplier)[strategy],
                          mix.max_notional)
    mode_draw = rng.random(n)
    mode_p = np.cumsum(np.asarray(mix.modes), axis=1)[strategy]
    mode_index = (mode_draw[:, None] >= mode_p[:, :2]).sum(axis=1)
    modes = (MarginMode.ISOLATED, MarginMode.CROSS, MarginMode.PORTFOLIO)
    mode = np.array([MODE_CODES[m] for m in modes], dtype=np.int32)[mode_index]
    band = rng.choice(len(mix.utilisation), size=n,
                      p=np.asarray([b[0] for b in mix.utilisation]))
    low = np.asarray([b[1] for b in mix.utilisation])[band]
    high = np.asarray([b[2] for b in mix.utilisation])[band]
    utilisation = rng.uniform(low, high)
    shares = _collateral_shares(rng, n, mix)

    legs = _Legs()
    builders = (_directional, _option_sellers, _market_makers, _basis, _pairs)
    for code, build in enumerate(builders):
        members = np.nonzero(strategy == code)[0]
        if members.size:
            build(rng, members, notional[members], listing, market, mix, legs)
    account = np.concatenate(legs.account)
    instrument = np.concatenate(legs.instrument)
    coins = np.round(np.concatenate(legs.coins), 6)
    keep = coins != 0.0
    account, instrument, coins = account[keep], instrument[keep], coins[keep]
    fair = _fair_prices(listing, market)
    noise = rng.normal(0.0, mix.entry_noise, size=coins.size)
    is_option = np.array([i.is_option for i in listing.instruments])[instrument]
    # options: premium noise 10x the delta-one noise (a fill a few vol points off the mark)
    entry = fair[instrument] * (1.0 + np.where(is_option, 10.0, 1.0) * noise)
    entry = np.round(np.maximum(entry, 0.01 * fair[instrument]), 6)
    book = book_from_columns(
        account_ids=[f"v{k:06d}" for k in range(n)], mode=mode,
        instruments=listing.instruments, position_account=account,
        position_instrument=instrument.astype(np.int32), size=coins, entry_price=entry,
        assets=ASSETS, collateral=np.zeros((n, len(ASSETS))))
    return VenuePopulation(book=book, market=market, strategy=strategy.astype(np.int64),
                           utilisation=utilisation, shares=shares, seed=seed)


def _check_mix(mix: VenueMix) -> None:
    for name, values in (("strategies", mix.strategies),
                         ("primary_collateral", tuple(mix.primary_collateral.values()))):
        if not math.isclose(sum(values), 1.0, abs_tol=1e-9) or min(values) < 0:
            raise InputError("shares >= 0 that sum to 1", field=f"mix.{name}", value=values)
    if len(mix.strategies) != len(Strategy) or len(mix.modes) != len(Strategy) \
            or len(mix.size_multiplier) != len(Strategy):
        raise InputError(f"one entry per strategy ({len(Strategy)})", field="mix")
    unknown = set(mix.primary_collateral) - set(ASSETS)
    if unknown:
        raise InputError(f"collateral assets among {list(ASSETS)}",
                         field="mix.primary_collateral", value=sorted(unknown))
    if not mix.pareto_alpha > 0 or not 0 < mix.min_notional <= mix.max_notional:
        raise InputError("pareto_alpha > 0 and 0 < min_notional <= max_notional", field="mix")
    if any(not 0 < lo <= hi < 1 for _, lo, hi in mix.utilisation):
        raise InputError("utilisation bands within (0, 1)", field="mix.utilisation",
                         value=mix.utilisation)


def _collateral_shares(rng: np.random.Generator, n: int, mix: VenueMix) -> FloatArray:
    """Primary asset, and with some probability a second one holding a uniform share."""
    names = list(mix.primary_collateral)
    p = np.asarray([mix.primary_collateral[a] for a in names])
    column = np.array([ASSETS.index(a) for a in names])
    primary = rng.choice(len(names), size=n, p=p)
    second = rng.random(n) < mix.second_asset_probability
    # the second asset: any other one, by the same weights (shifted past the primary)
    offset = 1 + rng.choice(len(names) - 1, size=n)
    other = (primary + offset) % len(names)
    share = rng.uniform(*mix.second_asset_share, size=n)
    shares = np.zeros((n, len(ASSETS)))
    rows = np.arange(n)
    shares[rows, column[primary]] = np.where(second, 1.0 - share, 1.0)
    shares[rows[second], column[other[second]]] = share[second]
    return shares


def _fair_prices(listing: _Listing, market: MarketSnapshot) -> FloatArray:
    """Per instrument: its mark (perps at the index, futures at their mark, options at
    Black-76 on their expiry's future mark)."""
    out = np.empty(len(listing.instruments))
    options = []
    for row, inst in enumerate(listing.instruments):
        level = market.underlyings[inst.underlying].index
        if inst.kind is InstrumentKind.FUTURE:
            out[row] = market.marks[inst.name]
        elif inst.is_option:
            options.append(row)
        else:
            out[row] = level
    if options:
        forward, strike, years, sigma, call = _option_inputs(listing, market, options)
        out[options] = greeks(forward, strike, years, sigma, call)["price"]
    return out


def _option_inputs(listing: _Listing, market: MarketSnapshot, rows: Sequence[int]
                   ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, np.ndarray]:
    forward, strike, years, sigma, call = [], [], [], [], []
    for row in rows:
        inst = listing.instruments[row]
        assert inst.expiry_ns is not None
        assert inst.strike is not None
        forward.append(market.marks[f"{inst.underlying}-{expiry_code(inst.expiry_ns)}"])
        strike.append(inst.strike)
        years.append((inst.expiry_ns - market.timestamp_ns) / 1e9 / (365 * 86400))
        sigma.append(VOLS[inst.underlying])
        call.append(inst.right is OptionRight.CALL)
    return (np.asarray(forward), np.asarray(strike), np.asarray(years), np.asarray(sigma),
            np.asarray(call))


def _price_of(listing: _Listing, market: MarketSnapshot, rows: IntArray) -> FloatArray:
    fair = _fair_prices(listing, market)
    return np.asarray(fair[rows], dtype=np.float64)


def _option_rows(listing: _Listing, market: MarketSnapshot,
                 underlying: IntArray, slot: IntArray, right_is_call: np.ndarray,
                 moneyness: FloatArray) -> IntArray:
    """Rows of options nearest ``moneyness`` x index on each account's underlying, expiry and
    right."""
    out = np.empty(underlying.size, dtype=np.int64)
    for u_code, u in enumerate(OPTION_UNDERLYINGS):
        grid = listing.strikes[u]
        level = market.underlyings[u].index
        for s in range(len(EXPIRY_DAYS)):
            for right in (OptionRight.CALL, OptionRight.PUT):
                rows = np.nonzero((underlying == u_code) & (slot == s)
                                  & (right_is_call == (right is OptionRight.CALL)))[0]
                if rows.size == 0:
                    continue
                k = np.clip(np.searchsorted(grid, moneyness[rows] * level), 0, grid.size - 1)
                out[rows] = listing.option_base[(u, s, right)] + k
    return out


def _directional(rng: np.random.Generator, members: IntArray, notional: FloatArray,
                 listing: _Listing, market: MarketSnapshot, mix: VenueMix,
                 legs: _Legs) -> None:
    """One leg (70 %) or two on different underlyings; perps, or a future (15 % of BTC and
    ETH legs); long 55 %."""
    n = members.size
    two = rng.random(n) < 0.3
    first = rng.choice(len(UNDERLYINGS), size=n, p=np.asarray(mix.directional_underlyings))
    second = (first + 1 + rng.integers(0, 2, size=n)) % len(UNDERLYINGS)
    split = np.where(two, rng.uniform(0.3, 0.7, size=n), 1.0)
    for und, part, rows in ((first, split, np.arange(n)),
                            (second, 1.0 - split, np.nonzero(two)[0])):
        u, leg_notional = und[rows], notional[rows] * part[rows]
        long = rng.random(rows.size) < 0.55
        dated = (rng.random(rows.size) < 0.15) & (u < len(OPTION_UNDERLYINGS))
        slot = rng.integers(0, len(EXPIRY_DAYS), size=rows.size)
        perps = np.array([listing.perp[x] for x in UNDERLYINGS])[u]
        futures = np.array([[listing.future[(x, s)] for s in range(len(EXPIRY_DAYS))]
                            for x in OPTION_UNDERLYINGS] + [[-1] * len(EXPIRY_DAYS)])
        instrument = np.where(dated, futures[u, slot], perps)
        price = _price_of(listing, market, instrument)
        legs.add(members[rows], instrument, np.where(long, 1.0, -1.0) * leg_notional / price)


def _option_sellers(rng: np.random.Generator, members: IntArray, notional: FloatArray,
                    listing: _Listing, market: MarketSnapshot, mix: VenueMix,
                    legs: _Legs) -> None:
    """Short OTM puts (40 %), calls (25 %) or strangles (35 %) on BTC (60 %) or ETH."""
    n = members.size
    kind = rng.choice(3, size=n, p=np.array([0.40, 0.25, 0.35]))
    u = (rng.random(n) >= 0.6).astype(np.int64)
    slot = (rng.random(n) >= 0.6).astype(np.int64)
    level = np.array([market.underlyings[x].index for x in OPTION_UNDERLYINGS])[u]
    put_m, call_m = rng.uniform(0.75, 0.95, size=n), rng.uniform(1.05, 1.25, size=n)
    legs_count = np.where(kind == 2, 2.0, 1.0)
    coins = notional / legs_count / level
    puts = np.nonzero(kind != 1)[0]
    calls = np.nonzero(kind != 0)[0]
    for rows, moneyness, is_call in ((puts, put_m, False), (calls, call_m, True)):
        instrument = _option_rows(listing, market, u[rows], slot[rows],
                                  np.full(rows.size, is_call), moneyness[rows])
        legs.add(members[rows], instrument, -coins[rows])


def _market_makers(rng: np.random.Generator, members: IntArray, notional: FloatArray,
                   listing: _Listing, market: MarketSnapshot, mix: VenueMix,
                   legs: _Legs) -> None:
    """Three options near the money (60 % sold) on one underlying and expiry, delta-hedged
    with the perp: hedge = -sum of size x Black-76 delta."""
    n = members.size
    u = (rng.random(n) >= 0.6).astype(np.int64)
    slot = rng.integers(0, len(EXPIRY_DAYS), size=n)
    level = np.array([market.underlyings[x].index for x in OPTION_UNDERLYINGS])[u]
    delta = np.zeros(n)
    rows = np.arange(n)
    for _ in range(3):
        call = rng.random(n) < 0.5
        sold = rng.random(n) < 0.6
        moneyness = rng.uniform(0.85, 1.15, size=n)
        instrument = _option_rows(listing, market, u, slot, call, moneyness)
        coins = np.where(sold, -1.0, 1.0) * notional / 4.0 / level * rng.uniform(0.5, 1.0, n)
        coins = np.round(coins, 6)
        forward, strike, years, sigma, is_call = _option_inputs(listing, market,
                                                                instrument.tolist())
        delta += coins * greeks(forward, strike, years, sigma, is_call)["delta"]
        legs.add(members[rows], instrument, coins)
    perps = np.array([listing.perp[x] for x in OPTION_UNDERLYINGS])[u]
    legs.add(members, perps, -delta)


def _basis(rng: np.random.Generator, members: IntArray, notional: FloatArray,
           listing: _Listing, market: MarketSnapshot, mix: VenueMix, legs: _Legs) -> None:
    """Short a dated future, long the perp, the same coins (BTC 65 %, far expiry 60 %)."""
    n = members.size
    u = (rng.random(n) >= 0.65).astype(np.int64)
    slot = (rng.random(n) < 0.6).astype(np.int64)
    level = np.array([market.underlyings[x].index for x in OPTION_UNDERLYINGS])[u]
    coins = notional / 2.0 / level
    futures = np.array([[listing.future[(x, s)] for s in range(len(EXPIRY_DAYS))]
                        for x in OPTION_UNDERLYINGS])[u, slot]
    perps = np.array([listing.perp[x] for x in OPTION_UNDERLYINGS])[u]
    legs.add(members, futures, -coins)
    legs.add(members, perps, coins)


def _pairs(rng: np.random.Generator, members: IntArray, notional: FloatArray,
           listing: _Listing, market: MarketSnapshot, mix: VenueMix, legs: _Legs) -> None:
    """Long one of BTC and ETH perps, short the other, equal notional."""
    n = members.size
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    for u, side in (("BTC", sign), ("ETH", -sign)):
        level = market.underlyings[u].index
        legs.add(members, np.full(n, listing.perp[u]), side * notional / 2.0 / level)


# --------------------------------------------------------------------------- funding
def fund(population: VenuePopulation, config: RiskConfig, models: Sequence[str],
         iterations: int = 8) -> ColumnarBook:
    """The book with collateral: value V per account, split by its shares, such that equity
    after haircuts = IM / u under the largest IM of ``models`` (one model: its own IM;
    ``account``: each account's own mode).

    Per account the root of f(V) = min over models of u x AE(V) - IM(V): haircuts (square-root
    liquidity) and the portfolio model's revaluation of coin collateral (a short perp held
    against BTC: more BTC, less IM) make IM and AE move with V, so it is solved by secant
    steps kept inside a bracket [lo, hi] with f(lo) < 0 <= f(hi) (a step outside it bisects;
    without an upper end yet, V grows 4x). The book returned holds V = hi (IM / AE <= u);
    where u cannot be reached (BTC collateral behind a long BTC perp grows the portfolio IM
    by 16 % of V, faster than u x AE for u < 0.16) V is the last step's, above u. Accounts
    still below MM (a position on its own margin in loss) are topped up, V x 1.25, until
    none is."""
    book, market = population.book, population.market
    prices = np.array([market.asset_prices[a.partition("@")[0]] for a in book.assets])
    per_value = population.shares / prices  # units of each asset per USD of value
    u = population.utilisation
    n = book.account_count

    def at(value: FloatArray) -> tuple[ColumnarBook, FloatArray, FloatArray]:
        """The funded book, f(V) and the largest IM."""
        funded = replace(book, collateral=per_value * value[:, None])
        f, initial = np.full(n, np.inf), np.zeros(n)
        for model in models:
            result = _margins(funded, market, model, config)
            f = np.minimum(f, u * result.adjusted_equity - result.initial)
            initial = np.maximum(initial, result.initial)
        return funded, f, initial

    value = np.ones(n)
    _, f, initial = at(value)
    low, high = np.zeros(n), np.full(n, np.inf)
    previous, f_previous = value, f
    value = np.maximum(initial / u, 1.0)  # a first guess: equity = IM / u
    for _ in range(iterations):
        _, f, initial = at(value)
        below = f < 0.0
        low = np.where(below, np.maximum(low, value), low)
        high = np.where(below, high, np.minimum(high, value))
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (f - f_previous) / (value - previous)
            secant = value - f / slope
        previous, f_previous = value, f
        inside = np.isfinite(secant) & (secant > low) & (secant < high) & (slope > 0)
        middle = np.where(np.isfinite(high), 0.5 * (low + high), value * 4.0)
        value = np.where(inside, secant, middle)
    value = np.where(np.isfinite(high), high, np.maximum(value, low))
    check = np.arange(n)
    for _ in range(60):  # only the accounts still short are margined again
        part = book_subset(replace(book, collateral=per_value * value[:, None]), check)
        short = np.zeros(check.size, dtype=np.bool_)
        for model in models:
            short |= _margins(part, market, model, config).gap(1.0) < 0.0
        check = check[short]
        if check.size == 0:
            break
        value[check] *= 1.25
    return replace(book, collateral=per_value * value[:, None])


def _margins(book: ColumnarBook, market: MarketSnapshot, model: str,
             config: RiskConfig) -> AccountMargins:
    from margin_engine.engine.risk_state import whole_book_margins

    return whole_book_margins(bind_market(book, market), model, config)
