"""One risk step for the live monitor and the crash replay, so the two cannot diverge.

``RiskState.step(ticks)``: each tick is admitted by the tick guard (duplicate, rejected,
quarantined or applied; ``engine/tick_guard.py``); an applied price goes through the oracle
sources of its symbol (on disagreement the median of the healthy ones, flagged) and moves the
market (an underlying's index with its marks and coin collateral, or a collateral asset's
price); the clock moves if the step says so; the breaker takes the largest price velocity of
the step, |P_t / P_(t - window) - 1| per symbol with P_(t - window) the last applied price at
or before t - window; the accounts holding what moved are re-margined (``Remargin``: the
monitor's per-symbol slices, or the replay's whole book); statuses are updated with the
hysteresis band. Everything that happened is returned as typed events, in the order it
happened.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

import numpy as np
from numba import njit

from margin_engine.book.bound import BoundBook, bind_market, reprice
from margin_engine.book.columnar import MODE_CODES, ColumnarBook, book_subset
from margin_engine.core.timeutil import NS_PER_SECOND, ns_to_iso
from margin_engine.core.types import IntArray
from margin_engine.domain.instruments import MarginMode
from margin_engine.engine.tick_guard import Admission, TickGuard, Verdict, symbol_vol
from margin_engine.liquidation.breaker import CircuitBreaker
from margin_engine.liquidation.shocks import marks_by_underlying, with_index
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.portfolio import PortfolioModel
from margin_engine.margin.registry import get_model
from margin_engine.margin.run import BY_ACCOUNT_MODE, AccountMargins, margins_by_mode
from margin_engine.margin.tick import IncrementalSlice, SharedCells
from margin_engine.market.oracle import OracleConfig, OracleSource, guard_price
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.store.base import EventKind, Tick


class RiskStatus(IntEnum):
    OK = 0
    CALL = 1  # equity < IM x multiplier
    LIQUIDATION = 2  # below MM x multiplier (an isolated account: one of its positions)


PORTFOLIO = MODE_CODES[MarginMode.PORTFOLIO]

STATUS_EVENT = {RiskStatus.CALL: EventKind.MARGIN_CALL,
                RiskStatus.LIQUIDATION: EventKind.LIQUIDATION,
                RiskStatus.OK: EventKind.RECOVERY}


@dataclass(frozen=True, slots=True)
class RiskEvent:
    kind: EventKind
    account: str | None
    payload: dict[str, Any]


@dataclass(slots=True)
class StepResult:
    admissions: list[Admission]  # one per tick of the step, in order
    events: list[RiskEvent]
    moved: frozenset[str]  # symbols whose price was applied
    flagged: frozenset[str]  # symbols whose sources disagree after the step


# Re-margin after a market move: (accounts, their margins) for every group of accounts that
# holds something in ``moved`` (or every account when the clock moved).
Remargin = Callable[[MarketSnapshot, frozenset[str], bool], list[tuple[IntArray, AccountMargins]]]


@dataclass(slots=True)
class _Slice:
    accounts: IntArray  # global account indices
    bound: BoundBook  # bound at the last clock move (its prices: of the last generic step)
    portfolio: Any = None  # the last incremental model result
    fast: IncrementalSlice | None = None  # the portfolio model after moves of the symbol
    mixed: bool = False  # accounts of other modes under the account model


class SliceRemargin:
    """The monitor's re-margin: the accounts holding each underlying or collateral asset are a
    slice bound once at start and repriced in place; an incremental model (one with
    ``recompute``) recomputes only the moved underlying's scenarios.

    Where the portfolio model margins the slice (``model`` portfolio, or account with
    portfolio accounts in the slice), a move of the slice's underlying alone, the clock
    standing still, goes through ``IncrementalSlice``: only the instruments are repriced and
    only the underlying's positions revalued, the numbers equal to the path above bit for bit.
    Accounts in other modes are margined by their models on the slice repriced.

    An account holding several underlyings is in several slices; the portfolio cells (scan
    risk, contingency, worst scenario) each slice last computed are shared in one table per
    (account, underlying), so a slice re-margined for u takes the other underlyings' cells as
    their own slices last computed them (a cell depends on its underlying's prices only), not
    its own older copy. A clock move (an expiry) re-margins every slice from scratch.
    (tests/unit/test_incremental_slice.py)"""

    def __init__(self, full: BoundBook, model: str, config: RiskConfig) -> None:
        self.model, self.config = model, config
        book, market = full.book, full.market
        n = book.account_count
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
        # the latest portfolio cells of every (account, underlying), from whichever slice
        self.cells: dict[str, np.ndarray] = {}
        self.known = np.zeros((n, len(full.underlyings)), dtype=np.bool_)
        # each underlying's first tick takes the incremental path: its start needs the
        # slice's portfolio result, which ``_margins`` leaves in ``piece.portfolio``
        for symbol, piece in self.slices.items():
            if self._uses_portfolio(piece) and symbol in piece.bound.underlyings:
                self._margins(piece, symbol)
                piece.fast = self._incremental(piece, symbol)
        self._warm(market)

    def _warm(self, market: MarketSnapshot) -> None:
        """Compile (or load from the cache) the per-tick kernels now, not on the first ticks:
        from a cold cache the incremental slice's kernel took 4.75 s of the first tick of a
        100,000-account monitor. Each incremental slice is re-margined at today's market (the
        numbers it already holds: its kernel's arithmetic is the model's), and the cells are
        published and refreshed for no account."""
        fast = [piece.fast for piece in self.slices.values() if piece.fast is not None]
        for incremental in fast:
            incremental.tick(market, self.config)
            incremental.warm_moves(self.config)
        if not fast:
            return
        n_u = self.known.shape[1]
        none = np.empty(0, dtype=np.int64)
        scan, cont = np.zeros((0, n_u)), np.zeros((0, n_u))
        worst = np.zeros((0, n_u), dtype=np.int64)
        own = fast[0]
        _publish_cells_nb(none, self.known, scan, cont, worst, own.scan, own.cont, own.worst)
        _refresh_cells_nb(none, own.u, self.known, scan, cont, worst, own.scan, own.cont,
                          own.worst)

    def __call__(self, market: MarketSnapshot, moved: frozenset[str],
                 clock_moved: bool) -> list[tuple[IntArray, AccountMargins]]:
        groups = []
        for symbol in sorted(self.slices) if clock_moved else sorted(moved):
            piece = self.slices.get(symbol)
            if piece is None:
                continue
            if clock_moved:  # every time to expiry moved: every cell anew
                piece.portfolio, piece.fast = None, None
                piece.bound = bind_market(piece.bound.book, market)
            if piece.fast is not None:  # (refreshed and published in the slice's pass)
                groups.append((piece.accounts, self._fast_margins(piece, market)))
                continue
            if not clock_moved:
                piece.bound = reprice(piece.bound, market)
            if piece.portfolio is not None and symbol in piece.bound.underlyings:
                self._refresh(piece.accounts, piece.portfolio.per_underlying,
                              piece.bound.underlyings.index(symbol))
            groups.append((piece.accounts, self._margins(piece, symbol)))
            if piece.portfolio is not None:
                self._publish(piece.accounts, piece.portfolio.per_underlying)
            piece.fast = self._incremental(piece, symbol)
        return groups

    def _refresh(self, accounts: IntArray, cells: Mapping[str, np.ndarray], u: int) -> None:
        """Overwrite a slice's cells of the underlyings other than ``u`` with the latest any
        slice computed for its accounts (in place)."""
        if self.cells:
            _refresh_cells_nb(accounts, u, self.known, self.cells["scan_risk"],
                              self.cells["contingency"], self.cells["worst_scenario"],
                              cells["scan_risk"], cells["contingency"], cells["worst_scenario"])

    def _shared(self, accounts: IntArray) -> SharedCells:
        """The latest cells of every account, for an incremental slice's pass to refresh
        its accounts' cells from and publish them to (``_refresh`` and ``_publish`` in it)."""
        self._ensure_cells()
        return SharedCells(accounts, self.known, self.cells["scan_risk"],
                           self.cells["contingency"], self.cells["worst_scenario"])

    def _ensure_cells(self) -> None:
        if not self.cells:
            n, n_u = self.known.shape
            self.cells = {"scan_risk": np.zeros((n, n_u)), "contingency": np.zeros((n, n_u)),
                          "worst_scenario": np.zeros((n, n_u), dtype=np.int64)}

    def _publish(self, accounts: IntArray, cells: Mapping[str, np.ndarray]) -> None:
        """A slice's cells after its re-margin become the latest for its accounts."""
        self._ensure_cells()
        _publish_cells_nb(accounts, self.known, self.cells["scan_risk"],
                          self.cells["contingency"], self.cells["worst_scenario"],
                          cells["scan_risk"], cells["contingency"], cells["worst_scenario"])

    def _incremental(self, piece: _Slice, symbol: str) -> IncrementalSlice | None:
        """The slice's incremental portfolio path, when the portfolio model margins some of
        its accounts and ``symbol`` is one of its underlyings."""
        if (not self._uses_portfolio(piece) or piece.portfolio is None
                or symbol not in piece.bound.underlyings):
            return None
        piece.mixed = self.model == BY_ACCOUNT_MODE and bool(
            np.any(piece.bound.book.mode != PORTFOLIO))
        return IncrementalSlice.start(piece.bound, piece.portfolio, symbol, self.config)

    def _uses_portfolio(self, piece: _Slice) -> bool:
        """Whether the portfolio model margins some of the slice's accounts."""
        return self.model == PortfolioModel.name or (
            self.model == BY_ACCOUNT_MODE and bool(np.any(piece.bound.book.mode == PORTFOLIO)))

    def _fast_margins(self, piece: _Slice, market: MarketSnapshot) -> AccountMargins:
        """Margins after a move of the slice's underlying alone: the portfolio accounts from
        the incremental path; any others from their models on the slice repriced."""
        assert piece.fast is not None
        piece.portfolio = result = piece.fast.tick(market, self.config,
                                                   self._shared(piece.accounts))
        book = piece.bound.book
        if piece.mixed:
            piece.bound = bound = reprice(piece.bound, market)
            return margins_by_mode(bound, self.model, lambda name: result
                                   if name == PortfolioModel.name
                                   else get_model(name).compute(bound, self.config))
        equity = piece.fast.equity()
        every = np.ones(book.account_count, dtype=np.bool_)
        # the bound's prices are not this tick's: only the shared gap is formed from it
        return AccountMargins(result.initial_margin, result.maintenance_margin,
                              result.adjusted_equity(equity), ((every, result),),
                              piece.bound, equity)

    def _margins(self, piece: _Slice, symbol: str) -> AccountMargins:
        bound = piece.bound

        def compute(name: str) -> Any:
            model = get_model(name)
            recompute = model.recompute if model.incremental else None
            if recompute is None:
                return model.compute(bound, self.config)
            if piece.portfolio is not None and symbol in bound.underlyings:
                piece.portfolio = recompute(bound, self.config, piece.portfolio, symbol)
            else:
                piece.portfolio = model.compute(bound, self.config)
            return piece.portfolio

        return margins_by_mode(bound, self.model, compute)


@njit(cache=True)
def _refresh_cells_nb(accounts: IntArray, u: int, known: np.ndarray, scan: np.ndarray,
                      cont: np.ndarray, worst: np.ndarray, own_scan: np.ndarray,
                      own_cont: np.ndarray, own_worst: np.ndarray) -> None:
    """own[j, v] = shared[accounts[j], v] for every known cell of an underlying v != u."""
    for j in range(accounts.shape[0]):
        a = accounts[j]
        for v in range(known.shape[1]):
            if v != u and known[a, v]:
                own_scan[j, v] = scan[a, v]
                own_cont[j, v] = cont[a, v]
                own_worst[j, v] = worst[a, v]


@njit(cache=True)
def _publish_cells_nb(accounts: IntArray, known: np.ndarray, scan: np.ndarray,
                      cont: np.ndarray, worst: np.ndarray, own_scan: np.ndarray,
                      own_cont: np.ndarray, own_worst: np.ndarray) -> None:
    """shared[accounts[j], v] = own[j, v] for every underlying; the cells become known."""
    for j in range(accounts.shape[0]):
        a = accounts[j]
        for v in range(known.shape[1]):
            scan[a, v] = own_scan[j, v]
            cont[a, v] = own_cont[j, v]
            worst[a, v] = own_worst[j, v]
            known[a, v] = True


def whole_book_margins(bound: BoundBook, model: str, config: RiskConfig) -> AccountMargins:
    """Margins of every account of ``bound`` (each account's own mode for ``account``)."""
    return margins_by_mode(bound, model, lambda name: get_model(name).compute(bound, config))


@dataclass(slots=True)
class RiskState:
    """Margins, statuses, breaker, tick guard and oracle sources of a book on a moving market."""

    book: ColumnarBook
    market: MarketSnapshot
    config: RiskConfig
    oracle: OracleConfig
    remargin: Remargin
    equity: np.ndarray
    initial: np.ndarray
    maintenance: np.ndarray
    gap: np.ndarray  # adjusted equity - MM x multiplier (isolated: the worst position's)
    holding: np.ndarray  # accounts with a position: only they can be called or liquidated
    margins: AccountMargins
    guard: TickGuard
    breaker: CircuitBreaker
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    multiplier: float = 1.0
    marked: dict[str, str] = field(default_factory=dict)
    sources: dict[str, dict[str, OracleSource]] = field(default_factory=dict)
    flagged: dict[str, tuple[str, ...]] = field(default_factory=dict)  # symbol -> dropped
    history: dict[str, deque[tuple[int, float]]] = field(default_factory=dict)
    # (expiry ns, underlying) of the book's dated instruments still live, soonest first
    expiries: list[tuple[int, str]] = field(default_factory=list)

    @staticmethod
    def start(full: BoundBook, config: RiskConfig, *, model: str, oracle: OracleConfig,
              remargin: Remargin | None = None,
              margins: AccountMargins | None = None) -> RiskState:
        """The state of the bound book ``full`` at its market (statuses set, no events);
        ``remargin`` defaults to the monitor's per-symbol slices."""
        book, market = full.book, full.market
        margins = margins if margins is not None else whole_book_margins(full, model, config)
        n = book.account_count
        state = RiskState(
            book=book, market=market, config=config, oracle=oracle,
            remargin=remargin if remargin is not None else SliceRemargin(full, model, config),
            equity=margins.adjusted_equity.copy(), initial=margins.initial.copy(),
            maintenance=margins.maintenance.copy(), gap=margins.gap(1.0), margins=margins,
            holding=np.bincount(full.position_account, weights=np.abs(book.size),
                                minlength=n) > 0,
            guard=TickGuard.start(config.monitor, oracle.max_deviation, {
                **market.asset_prices,
                **{u: m.index for u, m in market.underlyings.items()}}, market.timestamp_ns),
            breaker=CircuitBreaker(config=config.liquidation.breaker,
                                   window_seconds=config.liquidation.latency_seconds),
            status=np.zeros(n, dtype=np.int8),
            marked=marks_by_underlying(market, {i.name: i.underlying
                                                for i in book.instruments.instruments}))
        state.status[:] = state._new_status(np.arange(n))
        state._warm()
        table = book.instruments
        state.expiries = sorted({(int(e), table.underlyings[int(u)]) for e, u in zip(
            table.expiry_ns.tolist(), table.underlying.tolist(), strict=True)
            if e > market.timestamp_ns})
        return state

    # ------------------------------------------------------------------ the step
    def step(self, ticks: Sequence[Tick], *, now_ns: int | None = None,
             clock_ns: int | None = None, follow_expiries: bool = False) -> StepResult:
        """Admit and apply ``ticks`` (``now_ns``: the wall clock for the gap and skew checks;
        None when rebuilding from a log), move the clock to ``clock_ns`` if given, then the
        breaker, the margins and the statuses. ``follow_expiries``: an admitted tick at or
        after one of the book's expiries first settles it at the index before that tick and
        moves the clock to the tick's time (the monitor; a replay moves its own clock)."""
        events: list[RiskEvent] = []
        admissions: list[Admission] = []
        velocity: dict[str, float] = {}
        for tick in ticks:
            sigma = symbol_vol(self.market, self.config.haircuts, tick.symbol)
            admission = self.guard.admit(tick, sigma, now_ns, self._others(tick))
            admissions.append(admission)
            if admission.verdict in (Verdict.DUPLICATE, Verdict.REJECT):
                continue
            if follow_expiries and self.expiries and tick.time_ns >= self.expiries[0][0]:
                events += self._settle_due(tick.time_ns)
                clock_ns = max(clock_ns or tick.time_ns, tick.time_ns)
            events += _admission_events(tick, admission)
            if admission.verdict is Verdict.APPLY:
                price = self._guarded(tick, admission, events)
                self.guard.applied(tick.symbol, price, tick.time_ns)
                self._move_market(tick.symbol, price)
                velocity[tick.symbol] = self._velocity(tick.symbol, tick.time_ns, price)
        clock_moved = clock_ns is not None and clock_ns != self.market.timestamp_ns
        if clock_ns is not None and clock_moved:
            self.market = replace(self.market, timestamp_ns=clock_ns,
                                  vol_as_of_ns=self.market.vol_as_of_ns or
                                  self.market.timestamp_ns)
        if velocity:
            time_ns = max(t.time_ns for t in ticks)
            fastest = max(velocity, key=lambda s: velocity[s])
            self._breaker(time_ns, fastest, velocity[fastest], events)
        moved = frozenset(velocity)
        if moved or clock_moved:
            for accounts, margins in self.remargin(self.market, moved, clock_moved):
                self.assign(accounts, margins)
                self._update_status(accounts, events)
        return StepResult(admissions, events, moved, frozenset(self.flagged))

    def assign(self, accounts: IntArray, margins: AccountMargins) -> None:
        """New margins for ``accounts`` (the gap at the breaker multiplier)."""
        if accounts.size == self.book.account_count:
            self.margins = margins
        if margins.shared_gap():  # one compiled pass, gap = adjusted equity - m x MM
            _assign_nb(np.asarray(accounts, dtype=np.int64), margins.adjusted_equity,
                       margins.initial, margins.maintenance, float(self.multiplier),
                       self.equity, self.gap, self.initial, self.maintenance)
            return
        self.equity[accounts] = margins.adjusted_equity
        self.gap[accounts] = margins.gap(self.multiplier)
        self.initial[accounts] = margins.initial
        self.maintenance[accounts] = margins.maintenance

    def set_holding(self, holding: np.ndarray) -> None:
        """Which accounts hold positions (after liquidations or settlements changed sizes)."""
        self.holding = holding

    # ------------------------------------------------------------------ the pieces
    def _others(self, tick: Tick) -> tuple[float, ...]:
        """Latest accepted prices of the symbol's other fresh sources."""
        max_age = self.oracle.max_age_seconds * NS_PER_SECOND
        return tuple(s.price for s in self.sources.get(tick.symbol, {}).values()
                     if s.name != tick.source and 0 <= tick.time_ns - s.timestamp_ns <= max_age)

    def _guarded(self, tick: Tick, admission: Admission, events: list[RiskEvent]) -> float:
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
            self._flag(tick.symbol, None, (), guarded.price, events)
            return guarded.price
        reference = price if admission.confirmed else self.guard.last[tick.symbol][0]
        healthy = [s for s in fresh
                   if abs(s.price / reference - 1.0) <= self.oracle.max_deviation] or fresh
        used = float(np.median([s.price for s in healthy]))
        dropped = tuple(sorted(s.name for s in fresh if s not in healthy))
        self._flag(tick.symbol, guarded.reason, dropped, used, events)
        return used

    def _flag(self, symbol: str, reason: str | None, dropped: tuple[str, ...], price: float,
              events: list[RiskEvent]) -> None:
        """``oracle_flagged`` when the sources start to disagree or another set is dropped,
        ``oracle_cleared`` when they agree again."""
        was = self.flagged.get(symbol)
        if reason is None:
            if was is not None:
                del self.flagged[symbol]
                events.append(RiskEvent(EventKind.ORACLE_CLEARED, None, {
                    "symbol": symbol, "reason": None, "price": price}))
            return
        if was != dropped:
            self.flagged[symbol] = dropped
            events.append(RiskEvent(EventKind.ORACLE_FLAGGED, None, {
                "symbol": symbol, "reason": reason, "price": price, "dropped": list(dropped)}))

    def _settle_due(self, time_ns: int) -> list[RiskEvent]:
        """Settle every expiry at or before ``time_ns``: its settlement price is the
        underlying's index now (the last one applied before the expiry), written into the
        market so that later index moves leave the settled cash alone."""
        events: list[RiskEvent] = []
        settlements = dict(self.market.settlements)
        while self.expiries and self.expiries[0][0] <= time_ns:
            expiry_ns, underlying = self.expiries.pop(0)
            price = float(self.market.underlyings[underlying].index)
            settlements.setdefault((underlying, expiry_ns), price)
            events.append(RiskEvent(EventKind.SETTLEMENT, None, {
                "underlying": underlying, "expiry": ns_to_iso(expiry_ns),
                "price": settlements[(underlying, expiry_ns)]}))
        self.market = replace(self.market, settlements=settlements)
        return events

    def _move_market(self, symbol: str, price: float) -> None:
        if symbol in self.market.underlyings:
            self.market = with_index(self.market, self.marked, symbol, price)
            if symbol in self.market.asset_prices:
                self.market = replace(self.market, asset_prices={
                    **self.market.asset_prices, symbol: price})
        else:
            self.market = replace(self.market, asset_prices={**self.market.asset_prices,
                                                             symbol: price})

    def _velocity(self, symbol: str, time_ns: int, price: float) -> float:
        history = self.history.setdefault(symbol, deque())
        history.append((time_ns, price))
        window = self.breaker.window_seconds * NS_PER_SECOND
        while len(history) > 1 and history[1][0] <= time_ns - window:
            history.popleft()
        return abs(history[-1][1] / history[0][1] - 1.0)

    def _breaker(self, time_ns: int, symbol: str, velocity: float,
                 events: list[RiskEvent]) -> None:
        self.multiplier, change = self.breaker.update(time_ns, velocity)
        if change is not None:
            events.append(RiskEvent(EventKind(f"breaker_{change}"), None, {
                "symbol": symbol, "velocity": velocity, "multiplier": self.multiplier}))

    def _new_status(self, accounts: IntArray) -> np.ndarray:
        """Statuses worsen at their thresholds and improve only past them by the band b: a
        liquidation (gap < 0: the account, or for isolated accounts one of its positions,
        below MM at the breaker multiplier m) lasts while gap < b x m x MM, a margin call
        (equity < IM x m) while equity < IM x m x (1 + b). b = 0: the bare thresholds."""
        new: np.ndarray = _status_nb(np.asarray(accounts, dtype=np.int64), self.equity,
                                     self.gap, self.initial, self.maintenance, self.status,
                                     self.holding, float(self.multiplier),
                                     float(self.config.monitor.hysteresis_band))
        return new

    def _warm(self) -> None:
        """Compile (or load from numba's cache) the kernels a step runs on its accounts now,
        on no account: the statuses that changed and the margins assigned."""
        none = np.empty(0, dtype=np.int64)
        _changed_nb(none, self._new_status(none), self.status)
        nothing = np.empty(0)
        _assign_nb(none, nothing, nothing, nothing, float(self.multiplier), self.equity,
                   self.gap, self.initial, self.maintenance)

    def _update_status(self, accounts: IntArray, events: list[RiskEvent]) -> None:
        new = self._new_status(accounts)
        changed = _changed_nb(np.asarray(accounts, dtype=np.int64), new, self.status)
        for k in changed.tolist():
            a = int(accounts[k])
            events.append(RiskEvent(STATUS_EVENT[RiskStatus(int(new[k]))],
                                    self.book.account_ids[a], {
                                        "equity": float(self.equity[a]),
                                        "initial_margin": float(self.initial[a]),
                                        "maintenance_margin": float(self.maintenance[a]),
                                        "multiplier": self.multiplier,
                                        "was": int(self.status[a])}))
            self.status[a] = new[k]

    def liquidatable(self) -> np.ndarray:
        """Accounts below MM x multiplier now (the bare threshold: execution never uses the
        hysteresis band, which only quiets the events)."""
        below: np.ndarray = (self.gap < 0.0) & self.holding
        return below


@njit(cache=True)
def _assign_nb(accounts: IntArray, adjusted: np.ndarray, initial: np.ndarray,
               maintenance: np.ndarray, m: float, equity_out: np.ndarray, gap_out: np.ndarray,
               initial_out: np.ndarray, maintenance_out: np.ndarray) -> None:
    """``RiskState.assign`` when every account's gap is the shared one: for account
    accounts[k], equity = adjusted[k], gap = adjusted[k] - m x MM[k], IM and MM."""
    for k in range(accounts.shape[0]):
        a = accounts[k]
        equity_out[a] = adjusted[k]
        gap_out[a] = adjusted[k] - m * maintenance[k]
        initial_out[a] = initial[k]
        maintenance_out[a] = maintenance[k]


@njit(cache=True)
def _status_nb(accounts: IntArray, equity: np.ndarray, gap: np.ndarray, initial: np.ndarray,
               maintenance: np.ndarray, status: np.ndarray, holding: np.ndarray, m: float,
               band: float) -> np.ndarray:
    """``RiskState._new_status`` per account a of ``accounts``: LIQUIDATION when gap < 0 or
    (was LIQUIDATION and gap < band x m x MM), else CALL when equity < IM x m or (was not OK
    and equity < IM x m x (1 + band)), else OK; OK without positions."""
    new = np.empty(accounts.shape[0], dtype=np.int8)
    for k in range(accounts.shape[0]):
        a = accounts[k]
        if not holding[a]:
            new[k] = 0
            continue
        g, e, im, was = gap[a], equity[a], initial[a] * m, status[a]
        if g < 0.0 or (was == 2 and g < band * m * maintenance[a]):
            new[k] = 2
        elif e < im or (was != 0 and e < im * (1.0 + band)):
            new[k] = 1
        else:
            new[k] = 0
    return new


@njit(cache=True)
def _changed_nb(accounts: IntArray, new: np.ndarray, status: np.ndarray) -> IntArray:
    """The k where new[k] != status[accounts[k]], in order."""
    count = 0
    for k in range(accounts.shape[0]):
        count += new[k] != status[accounts[k]]
    out = np.empty(count, dtype=np.int64)
    count = 0
    for k in range(accounts.shape[0]):
        if new[k] != status[accounts[k]]:
            out[count] = k
            count += 1
    return out


def _admission_events(tick: Tick, admission: Admission) -> list[RiskEvent]:
    """Quarantine events: runs dropped, confirmed, or this tick held."""
    events = [RiskEvent(EventKind.QUARANTINE_DROPPED, None, {
        "symbol": tick.symbol, "source": d.held.source, "price": d.held.price,
        "ticks": len(d.held.prices), "reason": d.reason}) for d in admission.dropped]
    base = {"symbol": tick.symbol, "price": admission.price,
            "last_price": admission.last_price, "sigmas": admission.sigmas}
    if admission.confirmed:
        events.append(RiskEvent(EventKind.QUARANTINE_CONFIRMED, None, {
            **base, "sources": sorted({h.source for h in admission.confirmed} | {tick.source}),
            "ticks": sum(len(h.prices) for h in admission.confirmed)}))
    if admission.held is not None:
        events.append(RiskEvent(EventKind.TICK_QUARANTINED, None, {
            **base, "source": tick.source, "ticks": len(admission.held.prices)}))
    return events


def numbered(ticks: Iterable[tuple[int, str, float, str]], start: int = 0) -> list[Tick]:
    """Ticks numbered start + 1, start + 2, ... from (time, symbol, price, source)."""
    return [Tick(start + k, time_ns, symbol, price, source)
            for k, (time_ns, symbol, price, source) in enumerate(ticks, start=1)]
