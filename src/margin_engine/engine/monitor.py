"""Real-time margin monitor.

Each tick (symbol, price, time, source, sequence number) is checked (unknown symbol, sequence
out of range: rejected) and admitted by the tick guard (``engine/tick_guard.py``): a duplicate
sequence is skipped; a bad price, a sequence gap, a clock skew or a time going backwards is
rejected with a logged reason, state untouched; a jump beyond the vol bound is quarantined
(committed, nothing moves) until confirmed. An applied price goes through the oracle guard:
when the fresh sources of the symbol disagree, the median of the healthy ones (within the
oracle's max deviation of the last applied price) is used and ``oracle_flagged`` names the
sources dropped. The price moves the market (an underlying's index with its marks and coin
collateral, or a collateral asset's price), and then only the accounts holding that underlying
or asset are repriced and re-margined (their book slice is bound once at start and repriced in
place). A status change emits an event: ``margin_call`` (equity < IM), ``liquidation`` (below
MM), ``recovery``; a status improves only past its threshold by ``[monitor]
hysteresis_band``. Also ``breaker_on`` / ``breaker_off``, ``oracle_flagged`` /
``oracle_cleared`` and the quarantine events. Pool health is recorded every tick. The tick, its
events and metrics are committed in one transaction; the whole state is a function of the tick
log, so a restart replays the log (``commit=False``) and resumes after its last tick.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from margin_engine.book.bound import (
    BoundBook,
    asset_prices,
    bind_market,
    pinned_settlements,
    reprice,
)
from margin_engine.book.columnar import ColumnarBook, book_subset
from margin_engine.core.timeutil import NS_PER_SECOND, ns_to_iso
from margin_engine.engine.tick_guard import Admission, TickGuard, Verdict, symbol_vol
from margin_engine.liquidation.breaker import CircuitBreaker
from margin_engine.liquidation.shocks import marks_by_underlying, with_index
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.isolated import check_asked_margins
from margin_engine.margin.registry import get_model
from margin_engine.margin.run import AccountMargins, margins_by_mode
from margin_engine.market.oracle import OracleConfig, OracleSource, guard_price
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.store.base import Event, EventKind, Repository, SnapshotRow, Tick

log = logging.getLogger("margin_engine.monitor")
OK, CALL, LIQUIDATION = 0, 1, 2
STATUS_EVENT = {CALL: EventKind.MARGIN_CALL, LIQUIDATION: EventKind.LIQUIDATION,
                OK: EventKind.RECOVERY}


def canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


class TickStatus(StrEnum):
    APPLIED = "applied"  # moved the market
    QUARANTINED = "quarantined"  # a jump held until confirmed: logged, nothing moved
    REJECTED = "rejected"  # refused with a reason, state untouched
    DUPLICATE = "duplicate"  # a sequence already seen (a redelivery): skipped


@dataclass(slots=True)
class TickOutcome:
    status: TickStatus
    reason: str | None = None
    events: list[Event] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def accepted(self) -> bool:
        """Applied or quarantined: committed to the tick log and the transcript."""
        return self.status in (TickStatus.APPLIED, TickStatus.QUARANTINED)


@dataclass(slots=True)
class _Slice:
    accounts: np.ndarray  # global account indices
    bound: BoundBook
    portfolio: Any = None  # the last portfolio-model result, for incremental recomputes


class Monitor:
    def __init__(self, book: ColumnarBook, market: MarketSnapshot, config: RiskConfig, *,
                 model: str = "account", store: Repository | None = None,
                 oracle: OracleConfig | None = None, insurance_fund: float = 0.0,
                 publish: Callable[[Event], None] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.book, self.market, self.config, self.model = book, market, config, model
        self.store, self.publish, self.clock = store, publish, clock
        self.oracle = oracle or OracleConfig(max_age_seconds=3600.0, max_deviation=0.02)
        self.insurance_fund = insurance_fund
        names = {i.name: i.underlying for i in book.instruments.instruments}
        self.marked = marks_by_underlying(market, names)
        full = bind_market(book, market)
        check_asked_margins(full, config)
        # Settled expiries keep their settlement price while the index moves on.
        self.market = market = pinned_settlements(full)
        full = replace(full, market=market)  # same prices today: nothing to rebind
        n = book.account_count
        margins = self._margins(full)
        self.initial, self.maintenance = margins.initial, margins.maintenance
        self.equity, self.gap = margins.adjusted_equity, margins.gap(1.0)
        self.status = np.full(n, OK, dtype=np.int8)
        self.holding = np.bincount(full.position_account, weights=np.abs(book.size),
                                   minlength=n) > 0
        self.slices: dict[str, _Slice] = {}
        table = book.instruments
        for symbol in sorted(set(market.underlyings) | set(market.asset_prices)):
            mask = np.zeros(n, dtype=np.bool_)
            if symbol in table.underlyings:
                u = table.underlyings.index(symbol)
                rows = np.nonzero(table.underlying[book.position_instrument] == u)[0]
                mask[full.position_account[rows]] = True
            for col, asset in enumerate(book.assets):
                if asset.partition("@")[0] == symbol:
                    mask |= book.collateral[:, col] != 0
            accounts = np.nonzero(mask)[0]
            if accounts.size:
                self.slices[symbol] = _Slice(accounts, bind_market(
                    book_subset(book, accounts), market))
        self.guard = TickGuard.start(config.monitor, self.oracle.max_deviation, {
            **market.asset_prices, **{u: m.index for u, m in market.underlyings.items()}},
            market.timestamp_ns)
        self.sources: dict[str, dict[str, OracleSource]] = {}
        self.flagged: dict[str, tuple[str, ...]] = {}  # flagged symbol -> the sources dropped
        self.history: dict[str, deque[tuple[int, float]]] = {}
        self.breaker = CircuitBreaker(config=config.liquidation.breaker,
                                      window_seconds=config.liquidation.latency_seconds)
        self.multiplier = 1.0
        self.rejected: list[tuple[Tick, str]] = []
        self.row_of = {account: k for k, account in enumerate(book.account_ids)}
        self.transcript = hashlib.sha256()
        self._update_status(np.arange(n), Tick(0, market.timestamp_ns, "", 0.0), [])

    # ------------------------------------------------------------------ helpers
    def _compute(self, name: str, bound: BoundBook, piece: _Slice | None,
                 symbol: str | None) -> Any:
        """A model's result; the portfolio model recomputes only the moved underlying."""
        model = get_model(name)
        if name != "portfolio" or piece is None:
            return model.compute(bound, self.config)
        if piece.portfolio is not None and symbol in bound.underlyings:
            piece.portfolio = model.recompute(  # type: ignore[attr-defined]
                bound, self.config, piece.portfolio, symbol)
        else:
            piece.portfolio = model.compute(bound, self.config)
        return piece.portfolio

    def _margins(self, bound: BoundBook, piece: _Slice | None = None,
                 symbol: str | None = None) -> AccountMargins:
        """Margins of the accounts of ``bound``."""
        return margins_by_mode(bound, self.model,
                               lambda name: self._compute(name, bound, piece, symbol))

    @property
    def last_seq(self) -> int:
        """The sequence of the last accepted tick (0 before any)."""
        return self.guard.last_seq

    def _reject(self, tick: Tick, reason: str) -> TickOutcome:
        log.warning("tick %s %s rejected: %s", tick.seq, tick.symbol, reason)
        self.rejected.append((tick, reason))
        return TickOutcome(TickStatus.REJECTED, reason=reason)

    def _event(self, tick: Tick, kind: EventKind, account: str | None,
               payload: dict[str, Any]) -> Event:
        event = Event(tick.seq, kind.value, account, canonical(payload))
        self.transcript.update(f"E|{event.tick_seq}|{kind}|{account}|{event.payload}\n".encode())
        return event

    # ------------------------------------------------------------------ the tick path
    def validate(self, tick: Tick) -> str | None:
        """Why ``tick`` can never be processed (unknown symbol, sequence out of range), or
        None; everything that depends on the state is the tick guard's."""
        if tick.symbol not in self.market.underlyings and \
                tick.symbol not in self.market.asset_prices:
            return f"unknown symbol {tick.symbol!r}"
        if not 0 < tick.seq < 2**63:  # the stores keep sequences as signed 64-bit integers
            return f"sequence must be in [1, 2^63 - 1], got {tick.seq}"
        return None

    def process(self, tick: Tick, *, commit: bool = True) -> TickOutcome:
        """Admit, apply and commit one tick; ``commit=False`` rebuilds from the stored log
        (nothing written or published, no wall-clock checks: the ticks passed them)."""
        started = time.perf_counter()
        reason = self.validate(tick)
        if reason is not None:
            return self._reject(tick, reason)
        sigma = symbol_vol(self.market, self.config.haircuts, tick.symbol)
        admission = self.guard.admit(tick, sigma, self.clock() if commit else None)
        if admission.verdict is Verdict.DUPLICATE:
            log.info("tick %s %s skipped: %s", tick.seq, tick.symbol, admission.reason)
            return TickOutcome(TickStatus.DUPLICATE, reason=admission.reason)
        if admission.verdict is Verdict.REJECT:
            return self._reject(tick, admission.reason or "rejected")
        self.transcript.update(f"T|{tick.seq}|{tick.time_ns}|{tick.symbol}|"
                               f"{tick.price!r}|{tick.source}\n".encode())
        events = self._admission_events(tick, admission)
        if admission.verdict is Verdict.APPLY:
            self._apply(tick, admission, events)
        else:
            log.warning("tick %s %s quarantined: %s", tick.seq, tick.symbol, admission.reason)
        metrics = self._metrics(tick)
        self.transcript.update(f"M|{tick.seq}|{canonical(metrics)}\n".encode())
        snapshots = [SnapshotRow(tick.seq, e.account, *self._numbers(e.account))
                     for e in events if e.account is not None]
        if commit and self.store is not None:
            self.store.commit_tick(tick, events, canonical(metrics), snapshots)
        if commit and self.publish is not None:
            for event in events:
                self.publish(event)
        status = TickStatus.APPLIED if admission.verdict is Verdict.APPLY else \
            TickStatus.QUARANTINED
        return TickOutcome(status, reason=admission.reason, events=events, metrics=metrics,
                           seconds=time.perf_counter() - started)

    def _apply(self, tick: Tick, admission: Admission, events: list[Event]) -> None:
        """Move the market to the guarded price and re-margin the accounts holding it."""
        price = self._guard(tick, admission, events)
        self.guard.applied(tick.symbol, price, tick.time_ns)
        self._move_market(tick.symbol, price)
        self._breaker(tick, price, events)
        piece = self.slices.get(tick.symbol)
        if piece is None:
            return
        piece.bound = reprice(piece.bound, self.market)
        margins = self._margins(piece.bound, piece, tick.symbol)
        self.equity[piece.accounts] = margins.adjusted_equity
        self.gap[piece.accounts] = margins.gap(self.multiplier)
        self.initial[piece.accounts] = margins.initial
        self.maintenance[piece.accounts] = margins.maintenance
        self._update_status(piece.accounts, tick, events)

    def _admission_events(self, tick: Tick, admission: Admission) -> list[Event]:
        """Quarantine events: runs dropped, confirmed, or this tick held."""
        events = [self._event(tick, EventKind.QUARANTINE_DROPPED, None, {
            "symbol": tick.symbol, "source": d.held.source, "price": d.held.price,
            "ticks": len(d.held.prices), "reason": d.reason}) for d in admission.dropped]
        base = {"symbol": tick.symbol, "price": admission.price,
                "last_price": admission.last_price, "sigmas": admission.sigmas}
        if admission.confirmed:
            events.append(self._event(tick, EventKind.QUARANTINE_CONFIRMED, None, {
                **base, "sources": sorted({h.source for h in admission.confirmed}
                                          | {tick.source}),
                "ticks": sum(len(h.prices) for h in admission.confirmed)}))
        if admission.held is not None:
            events.append(self._event(tick, EventKind.TICK_QUARANTINED, None, {
                **base, "source": tick.source, "ticks": len(admission.held.prices)}))
        return events

    def _numbers(self, account_id: str) -> tuple[float, float, float]:
        a = self.row_of[account_id]
        return float(self.equity[a]), float(self.initial[a]), float(self.maintenance[a])

    def _guard(self, tick: Tick, admission: Admission, events: list[Event]) -> float:
        """The price to apply: the median of the fresh sources, or when they disagree the
        median of the healthy ones (within max_deviation of the last applied price, or of a
        just-confirmed jump; none healthy: of all fresh ones), flagged with the ones dropped."""
        sources = self.sources.setdefault(tick.symbol, {})
        for held in admission.confirmed:
            sources[held.source] = OracleSource(name=held.source, price=held.price,
                                                timestamp_ns=held.time_ns)
        price = float(tick.price)
        sources[tick.source] = OracleSource(name=tick.source, price=price,
                                            timestamp_ns=tick.time_ns)
        fresh = [s for s in sources.values()
                 if tick.time_ns - s.timestamp_ns <= self.oracle.max_age_seconds * NS_PER_SECOND]
        guarded = guard_price(tick.symbol, fresh, tick.time_ns, self.oracle,
                              frozenset({tick.symbol}))
        if not guarded.flagged:
            self._flag(tick, None, (), guarded.price, events)
            return guarded.price
        reference = price if admission.confirmed else self.guard.last[tick.symbol][0]
        healthy = [s for s in fresh
                   if abs(s.price / reference - 1.0) <= self.oracle.max_deviation] or fresh
        used = float(np.median([s.price for s in healthy]))
        dropped = tuple(sorted(s.name for s in fresh if s not in healthy))
        self._flag(tick, guarded.reason, dropped, used, events)
        return used

    def _flag(self, tick: Tick, reason: str | None, dropped: tuple[str, ...], price: float,
              events: list[Event]) -> None:
        """``oracle_flagged`` when the sources start to disagree or another set is dropped,
        ``oracle_cleared`` when they agree again."""
        was = self.flagged.get(tick.symbol)
        if reason is None:
            if was is not None:
                del self.flagged[tick.symbol]
                events.append(self._event(tick, EventKind.ORACLE_CLEARED, None, {
                    "symbol": tick.symbol, "reason": None, "price": price}))
            return
        if was != dropped:
            self.flagged[tick.symbol] = dropped
            events.append(self._event(tick, EventKind.ORACLE_FLAGGED, None, {
                "symbol": tick.symbol, "reason": reason, "price": price,
                "dropped": list(dropped)}))

    def _move_market(self, symbol: str, price: float) -> None:
        if symbol in self.market.underlyings:
            self.market = with_index(self.market, self.marked, symbol, price)
            if symbol in self.market.asset_prices:
                self.market = replace(self.market, asset_prices={
                    **self.market.asset_prices, symbol: price})
        else:
            self.market = replace(self.market, asset_prices={**self.market.asset_prices,
                                                             symbol: price})

    def _breaker(self, tick: Tick, price: float, events: list[Event]) -> None:
        history = self.history.setdefault(tick.symbol, deque())
        history.append((tick.time_ns, price))
        window = self.breaker.window_seconds * NS_PER_SECOND
        while len(history) > 1 and history[1][0] <= tick.time_ns - window:
            history.popleft()
        velocity = abs(history[-1][1] / history[0][1] - 1.0)
        self.multiplier, change = self.breaker.update(tick.time_ns, velocity)
        if change is not None:
            events.append(self._event(tick, EventKind(f"breaker_{change}"), None,
                                      {"symbol": tick.symbol, "velocity": velocity,
                                       "multiplier": self.multiplier}))

    def _new_status(self, accounts: np.ndarray) -> np.ndarray:
        """Statuses worsen at their thresholds and improve only past them by the band b: a
        liquidation (gap < 0: the account, or for isolated accounts one of its positions,
        below MM at the breaker multiplier m) lasts while gap < b x m x MM, a margin call
        (equity < IM x m) while equity < IM x m x (1 + b). b = 0: the bare thresholds."""
        m, band = self.multiplier, self.config.monitor.hysteresis_band
        equity, gap = self.equity[accounts], self.gap[accounts]
        initial = self.initial[accounts] * m
        was = self.status[accounts]
        liquidation = (gap < 0.0) | ((was == LIQUIDATION)
                                     & (gap < band * m * self.maintenance[accounts]))
        call = (equity < initial) | ((was != OK) & (equity < initial * (1.0 + band)))
        new = np.where(liquidation, LIQUIDATION, np.where(call, CALL, OK)).astype(np.int8)
        new[~self.holding[accounts]] = OK
        return new

    def _update_status(self, accounts: np.ndarray, tick: Tick, events: list[Event]) -> None:
        m = self.multiplier
        new = self._new_status(accounts)
        changed = np.nonzero(new != self.status[accounts])[0]
        for k in changed.tolist():
            a = int(accounts[k])
            if tick.seq > 0:
                events.append(self._event(tick, STATUS_EVENT[int(new[k])],
                                          self.book.account_ids[a], {
                                              "equity": float(self.equity[a]),
                                              "initial_margin": float(self.initial[a]),
                                              "maintenance_margin": float(self.maintenance[a]),
                                              "multiplier": m,
                                              "was": int(self.status[a])}))
            self.status[a] = new[k]

    def _metrics(self, tick: Tick) -> dict[str, Any]:
        prices = asset_prices(self.book, self.market)
        by_asset = (self.book.collateral * prices).sum(axis=0) if self.book.assets else []
        total = float(np.sum(by_asset))
        mm_total = float(self.maintenance.sum())
        shortfall = float(np.maximum(self.maintenance - self.equity, 0.0).sum())
        return {
            "tick": tick.seq, "time": ns_to_iso(tick.time_ns),
            "collateral_by_asset": {a: float(v) for a, v in
                                    zip(self.book.assets, by_asset, strict=True)},
            "coverage_ratio": float(self.equity.sum()) / mm_total if mm_total > 0 else None,
            "concentration": float(np.max(by_asset)) / total if total > 0 else None,
            "insurance_fund_cover": self.insurance_fund / shortfall if shortfall > 0 else None,
            "near_liquidation": int(np.sum(self.holding & (self.equity < 1.1 * self.maintenance)
                                           & (self.equity >= self.maintenance))),
            "margin_calls": int(np.sum(self.status == CALL)),
            "liquidatable": int(np.sum(self.status == LIQUIDATION)),
            "multiplier": self.multiplier,
        }

    def state_hash(self) -> str:
        """sha256 of every accepted tick, event and metric, then every account's numbers."""
        digest = self.transcript.copy()
        for a, account in enumerate(self.book.account_ids):
            digest.update(f"A|{account}|{self.equity[a]!r}|{self.initial[a]!r}|"
                          f"{self.maintenance[a]!r}|{int(self.status[a])}\n".encode())
        return digest.hexdigest()

    def run(self, ticks: Iterable[Tick], *, commit: bool = True,
            on_tick: Callable[[Tick, TickOutcome], None] | None = None) -> list[TickOutcome]:
        outcomes = []
        for tick in ticks:
            outcome = self.process(tick, commit=commit)
            outcomes.append(outcome)
            if on_tick is not None:
                on_tick(tick, outcome)
        return outcomes
