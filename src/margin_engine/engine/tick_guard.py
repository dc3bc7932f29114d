"""Tick admission: which ticks of a price feed may move the market, and at which price.

Per tick, in this order (the first that fails decides):

* DUPLICATE: seq <= the last accepted seq (a redelivery; not an error).
* REJECT (state untouched): price not finite, <= 0 or > ``MAX_PRICE``; seq more than
  ``max_seq_gap`` past the last accepted one; time more than ``max_clock_skew_seconds`` after
  max(wall clock, newest applied tick time); time before the last accepted tick of the same
  symbol and source. The gap and skew checks need the wall clock: a rebuild from the stored log
  (``now_ns=None``) skips them, its ticks passed them when received.
* QUARANTINE: a jump |ln(p / p_last)| > jump_sigmas x sigma x sqrt(max(dt, jump_min) / year),
  p_last the last applied price of the symbol, dt the seconds since it, sigma the symbol's
  current vol (``symbol_vol``). The price is held, not applied.
* APPLY otherwise, and when another fresh source's latest accepted price agrees with the jump
  (it was reported already), and when a held price is confirmed: ``confirm_ticks`` consecutive
  ticks of
  the symbol from one source, all quarantined and agreeing ((max - min) / median <=
  max_deviation), or one tick of another source agreeing with a held price (the tick's price
  is then applied, with the held sources). A tick of the symbol from another source ends the
  run of consecutive ticks: it drops the held prices it does not agree with, and so does a
  tick back within the bound from the holding source itself.

Everything but the two wall-clock checks is a function of the accepted ticks, so a rebuild
from the tick log reaches the same state. The caller applies the admitted price (possibly
combined with other sources) and reports it back with ``applied``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from margin_engine.collateral.haircuts import CollateralConfig
from margin_engine.core.timeutil import NS_PER_SECOND, ns_to_iso
from margin_engine.margin.config import MonitorConfig
from margin_engine.market.snapshot import AtmByExpiryVol, MarketSnapshot, SviVol
from margin_engine.store.base import Tick

MAX_PRICE = 1e15  # the input ceiling of every number (core/numbers.py MAX_MAGNITUDE)
YEAR_SECONDS = 365.0 * 86_400.0
DAY_YEARS = 1.0 / 365.0


class Verdict(StrEnum):
    APPLY = "apply"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Held:
    """A run of quarantined ticks of one symbol from one source."""

    source: str
    prices: tuple[float, ...]
    time_ns: int  # of the latest

    @property
    def price(self) -> float:
        return self.prices[-1]


@dataclass(frozen=True, slots=True)
class Dropped:
    held: Held
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """What to do with a tick. ``price``: APPLY the price to apply, QUARANTINE the held one;
    ``sigmas``: the move in units of sigma x sqrt(dt / year) (None: no jump check, or a zero
    vol); ``confirmed``: the held runs this tick confirms; ``dropped``: the runs it ends."""

    verdict: Verdict
    reason: str | None = None
    price: float | None = None
    last_price: float | None = None
    sigmas: float | None = None
    held: Held | None = None  # QUARANTINE: the run the tick joined or started
    confirmed: tuple[Held, ...] = ()
    dropped: tuple[Dropped, ...] = ()

    @property
    def accepted(self) -> bool:
        """Applied or quarantined: part of the tick log."""
        return self.verdict in (Verdict.APPLY, Verdict.QUARANTINE)


def agree(prices: list[float] | tuple[float, ...], max_deviation: float) -> bool:
    """(max - min) / median <= max_deviation: the oracle's agreement rule."""
    return (max(prices) - min(prices)) / float(np.median(prices)) <= max_deviation


def symbol_vol(market: MarketSnapshot, haircuts: CollateralConfig, symbol: str) -> float:
    """The symbol's current vol: an underlying's ATM implied vol at its nearest live expiry
    (a flat surface: its level), else the collateral asset's haircut vol."""
    underlying = market.underlyings.get(symbol)
    if underlying is None or underlying.vol is None:
        return haircuts.asset(symbol.partition("@")[0]).annual_vol
    now = float(market.vol_years(np.zeros(1))[0])  # today on the surface's own clock
    expiries = underlying.vol.years if isinstance(underlying.vol,
                                                  AtmByExpiryVol | SviVol) else ()
    live = [t for t in expiries if t > now]
    years = live[0] if live else now + DAY_YEARS  # none live: flat after the last one
    return float(underlying.vol.sigma(np.array([years]), np.array([underlying.index]))[0])


@dataclass(slots=True)
class TickGuard:
    """Admission state: last accepted seq, per symbol the last applied price and time, per
    (symbol, source) the last accepted time and the held run."""

    config: MonitorConfig
    max_deviation: float
    last: dict[str, tuple[float, int]]  # symbol -> (last applied price, its time)
    last_seq: int = 0
    newest_applied_ns: int | None = None
    source_time: dict[tuple[str, str], int] = field(default_factory=dict)
    held: dict[str, dict[str, Held]] = field(default_factory=dict)

    @staticmethod
    def start(config: MonitorConfig, max_deviation: float, prices: dict[str, float],
              time_ns: int) -> TickGuard:
        return TickGuard(config, max_deviation, {s: (p, time_ns) for s, p in prices.items()})

    # ------------------------------------------------------------------ checks
    def _refusal(self, tick: Tick, now_ns: int | None) -> Admission | None:
        """DUPLICATE or REJECT, or None when the tick may go on to the jump check."""
        if tick.seq <= self.last_seq:
            return Admission(verdict=Verdict.DUPLICATE, reason=(
                f"duplicate sequence {tick.seq}" if tick.seq == self.last_seq else
                f"out-of-order sequence {tick.seq} after {self.last_seq}"))
        reason = _price_fault(tick.price)
        if reason is None and now_ns is not None:
            reason = self._clock_fault(tick, now_ns)
        last_ns = self.source_time.get((tick.symbol, tick.source))
        if reason is None and last_ns is not None and tick.time_ns < last_ns:
            reason = (f"time {ns_to_iso(tick.time_ns)} before the last {tick.symbol} tick of "
                      f"{tick.source!r} at {ns_to_iso(last_ns)}")
        return None if reason is None else Admission(verdict=Verdict.REJECT, reason=reason)

    def _clock_fault(self, tick: Tick, now_ns: int) -> str | None:
        gap = tick.seq - self.last_seq
        if gap > self.config.max_seq_gap:
            return (f"sequence {tick.seq} jumps {gap} past the last accepted {self.last_seq} "
                    f"(max_seq_gap {self.config.max_seq_gap})")
        reference = max(now_ns, self.newest_applied_ns or now_ns)
        lead = (tick.time_ns - reference) / NS_PER_SECOND
        if lead > self.config.max_clock_skew_seconds:
            return (f"time {ns_to_iso(tick.time_ns)} is {lead:.0f} s ahead of the clock "
                    f"{ns_to_iso(reference)} (max_clock_skew_seconds "
                    f"{self.config.max_clock_skew_seconds:g})")
        return None

    def jump_sigmas(self, tick: Tick, sigma: float) -> tuple[float, float, bool]:
        """(last applied price, the move in sigmas or inf, within the bound)."""
        last_price, last_ns = self.last[tick.symbol]
        move = abs(math.log(tick.price / last_price))
        dt = max((tick.time_ns - last_ns) / NS_PER_SECOND, self.config.jump_min_seconds)
        scale = sigma * math.sqrt(dt / YEAR_SECONDS)
        sigmas = move / scale if scale > 0 else (0.0 if move == 0 else math.inf)
        limit = self.config.jump_sigmas
        return last_price, sigmas, math.isinf(limit) or sigmas <= limit

    # ------------------------------------------------------------------ admission
    def admit(self, tick: Tick, sigma: float, now_ns: int | None,
              corroborating: tuple[float, ...] = ()) -> Admission:
        """The verdict on ``tick`` (symbol known, seq in range: the caller checked) with the
        symbol's vol ``sigma``; ``now_ns`` the wall clock, None on a rebuild from the log;
        ``corroborating``: the latest accepted prices of the symbol's other fresh sources (a
        jump one of them already reported, within max_deviation, is not held)."""
        refusal = self._refusal(tick, now_ns)
        if refusal is not None:
            return refusal
        last_price, sigmas, within = self.jump_sigmas(tick, sigma)
        shown = None if math.isinf(sigmas) else sigmas
        self.last_seq = tick.seq
        self.source_time[(tick.symbol, tick.source)] = tick.time_ns
        runs = self.held.setdefault(tick.symbol, {})
        price = float(tick.price)
        confirming = any(source != tick.source and agree([held.price, price], self.max_deviation)
                         for source, held in runs.items()) or \
            any(agree([other, price], self.max_deviation) for other in corroborating)
        if not (within or confirming):
            return self._hold(runs, tick, price, last_price, shown)
        confirmed, dropped = self._close(runs, tick, price)
        return Admission(verdict=Verdict.APPLY, price=price, last_price=last_price,
                         sigmas=shown, confirmed=confirmed, dropped=dropped)

    def _close(self, runs: dict[str, Held], tick: Tick, price: float
               ) -> tuple[tuple[Held, ...], tuple[Dropped, ...]]:
        """An applied tick ends every held run of its symbol: those agreeing with its price are
        confirmed, the others dropped."""
        confirmed: list[Held] = []
        dropped: list[Dropped] = []
        for source in sorted(runs):
            held = runs.pop(source)
            if agree([held.price, price], self.max_deviation):
                confirmed.append(held)
            else:
                dropped.append(Dropped(held, "back within the bound" if source == tick.source
                                       else f"{tick.source!r} ticked {price!r}"))
        return tuple(confirmed), tuple(dropped)

    def _hold(self, runs: dict[str, Held], tick: Tick, price: float, last_price: float,
              sigmas: float | None) -> Admission:
        """A quarantined tick joins its source's run if it agrees with it (else starts one)
        and ends the other sources' runs; a run of ``confirm_ticks`` is applied."""
        own = runs.pop(tick.source, None)
        dropped = [Dropped(held, f"{tick.source!r} ticked {price!r}")
                   for _, held in sorted(runs.items())]
        runs.clear()
        if own is not None and agree([*own.prices, price], self.max_deviation):
            run = Held(tick.source, (*own.prices, price), tick.time_ns)
        else:
            if own is not None:
                dropped.append(Dropped(own, f"{tick.source!r} moved on to {price!r}"))
            run = Held(tick.source, (price,), tick.time_ns)
        if len(run.prices) >= self.config.confirm_ticks:
            return Admission(verdict=Verdict.APPLY, price=price, last_price=last_price,
                             sigmas=sigmas, confirmed=(run,), dropped=tuple(dropped))
        runs[tick.source] = run
        return Admission(verdict=Verdict.QUARANTINE, price=price, last_price=last_price,
                         sigmas=sigmas, held=run, dropped=tuple(dropped),
                         reason=_jump_reason(sigmas, self.config.jump_sigmas))

    def applied(self, symbol: str, price: float, time_ns: int) -> None:
        """The caller moved ``symbol`` to ``price`` on a tick at ``time_ns``."""
        self.last[symbol] = (price, time_ns)
        self.newest_applied_ns = max(time_ns, self.newest_applied_ns or time_ns)


def _price_fault(price: float) -> str | None:
    if not (isinstance(price, float | int) and math.isfinite(price) and 0 < price <= MAX_PRICE):
        return f"price must be a finite number in (0, {MAX_PRICE:g}], got {price!r}"
    return None


def _jump_reason(sigmas: float | None, limit: float) -> str:
    size = "a zero-vol symbol moved" if sigmas is None else f"{sigmas:.1f} sigma"
    return f"jump held until confirmed: {size} > {limit:g} sigma"
