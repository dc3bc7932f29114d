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
log, so a restart replays the log (``commit=False``) and resumes after its last tick. The
risk step itself (admission, oracle, market, breaker, margins, statuses) is ``RiskState.step``,
the same one the crash replay runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from margin_engine.book.bound import asset_prices, bind_market, pinned_settlements
from margin_engine.book.columnar import ColumnarBook
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.engine.pool_health import PoolHealth, collateral_by_asset_nb, pool_health
from margin_engine.engine.risk_state import RiskEvent, RiskState, RiskStatus
from margin_engine.engine.tick_guard import TickGuard, Verdict
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.isolated import check_asked_margins
from margin_engine.market.oracle import OracleConfig
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.store.base import Event, Repository, SnapshotRow, Tick

log = logging.getLogger("margin_engine.monitor")


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
        """Applied or quarantined: committed to the store and the transcript."""
        return self.status in (TickStatus.APPLIED, TickStatus.QUARANTINED)


class Monitor:
    """The live loop around one ``RiskState``: checks, the transcript, the store, publishing
    and pool health."""

    def __init__(self, book: ColumnarBook, market: MarketSnapshot, config: RiskConfig, *,
                 model: str = "account", store: Repository | None = None,
                 oracle: OracleConfig | None = None, insurance_fund: float = 0.0,
                 publish: Callable[[Event], None] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.book, self.config, self.model = book, config, model
        self.store, self.publish, self.clock = store, publish, clock
        self.oracle = oracle or OracleConfig(max_age_seconds=3600.0, max_deviation=0.02)
        self.insurance_fund = insurance_fund
        full = bind_market(book, market)
        check_asked_margins(full, config)
        # Settled expiries keep their settlement price while the index moves on.
        full = replace(full, market=pinned_settlements(full))  # same prices: nothing to rebind
        self.state = RiskState.start(full, config, model=model, oracle=self.oracle)
        self.rejected: list[tuple[Tick, str]] = []
        self.row_of = {account: k for k, account in enumerate(book.account_ids)}
        self.transcript = hashlib.sha256()
        self._by_asset: tuple[tuple[float, ...] | None, Any] = (None, [])  # (key, values)
        self._warm()

    def _warm(self) -> None:
        """Compile (or load from numba's cache) the kernels of a tick's metrics now, not on
        the first tick (from a cold cache they took about 1 s of it): the collateral by asset
        kept for today's prices, the pool health computed and dropped."""
        self._collateral_by_asset()
        self._pool_health()

    # ------------------------------------------------------------------ the state's numbers
    @property
    def market(self) -> MarketSnapshot:
        return self.state.market

    @property
    def guard(self) -> TickGuard:
        return self.state.guard

    @property
    def equity(self) -> np.ndarray:
        return self.state.equity

    @property
    def initial(self) -> np.ndarray:
        return self.state.initial

    @property
    def maintenance(self) -> np.ndarray:
        return self.state.maintenance

    @property
    def gap(self) -> np.ndarray:
        return self.state.gap

    @property
    def status(self) -> np.ndarray:
        return self.state.status

    @property
    def holding(self) -> np.ndarray:
        return self.state.holding

    @property
    def multiplier(self) -> float:
        return self.state.multiplier

    @property
    def flagged(self) -> dict[str, tuple[str, ...]]:
        return self.state.flagged

    @property
    def last_seq(self) -> int:
        """The sequence of the last accepted tick (0 before any)."""
        return self.state.guard.last_seq

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
        step = self.state.step([tick], now_ns=self.clock() if commit else None,
                               follow_expiries=True)
        admission = step.admissions[0]
        if admission.verdict is Verdict.DUPLICATE:
            log.info("tick %s %s skipped: %s", tick.seq, tick.symbol, admission.reason)
            return TickOutcome(TickStatus.DUPLICATE, reason=admission.reason)
        if admission.verdict is Verdict.REJECT:
            return self._reject(tick, admission.reason or "rejected")
        self.transcript.update(f"T|{tick.seq}|{tick.time_ns}|{tick.symbol}|"
                               f"{tick.price!r}|{tick.source}\n".encode())
        events = [self._event(tick, e) for e in step.events]
        if admission.verdict is Verdict.QUARANTINE:
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

    def _reject(self, tick: Tick, reason: str) -> TickOutcome:
        log.warning("tick %s %s rejected: %s", tick.seq, tick.symbol, reason)
        self.rejected.append((tick, reason))
        return TickOutcome(TickStatus.REJECTED, reason=reason)

    def _event(self, tick: Tick, event: RiskEvent) -> Event:
        stored = Event(tick.seq, event.kind.value, event.account, canonical(event.payload))
        self.transcript.update(f"E|{stored.tick_seq}|{event.kind}|{event.account}|"
                               f"{stored.payload}\n".encode())
        return stored

    def _numbers(self, account_id: str) -> tuple[float, float, float]:
        a = self.row_of[account_id]
        return float(self.equity[a]), float(self.initial[a]), float(self.maintenance[a])

    def _collateral_by_asset(self) -> Any:
        """USD value of the book's collateral per asset, sum_a amount_a,c x price_c (kept
        while no asset price moves)."""
        prices = asset_prices(self.book, self.market)
        key = (id(self.book.collateral), *prices.tolist())
        if key != self._by_asset[0]:
            self._by_asset = (key, collateral_by_asset_nb(
                np.ascontiguousarray(self.book.collateral, dtype=np.float64), prices)
                if self.book.assets else np.zeros(0))
        return self._by_asset[1]

    def _pool_health(self) -> PoolHealth:
        return pool_health(self.equity, self.maintenance, self.holding, self.status,
                           int(RiskStatus.CALL), int(RiskStatus.LIQUIDATION))

    def _metrics(self, tick: Tick) -> dict[str, Any]:
        by_asset = self._collateral_by_asset()
        total = float(np.sum(by_asset))
        health = self._pool_health()
        mm_total, shortfall = health.maintenance, health.shortfall
        return {
            "tick": tick.seq, "time": ns_to_iso(tick.time_ns),
            "collateral_by_asset": {a: float(v) for a, v in
                                    zip(self.book.assets, by_asset, strict=True)},
            "coverage_ratio": health.equity / mm_total if mm_total > 0 else None,
            "concentration": float(np.max(by_asset)) / total if total > 0 else None,
            "insurance_fund_cover": self.insurance_fund / shortfall if shortfall > 0 else None,
            "near_liquidation": health.near_liquidation,
            "margin_calls": health.margin_calls,
            "liquidatable": health.liquidatable,
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
