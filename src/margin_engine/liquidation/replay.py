"""Apply a real price path to a book and liquidate as a venue would.

Every bar is one step of the monitor's risk state (``engine/risk_state.py``): each path's
close is a tick of its underlying's index (marks and coin collateral move with it), an asset
path's close a tick of that asset's price, an oracle path's close a second source of its
underlying; they pass the same tick guard (jump quarantine) and oracle sources, the clock moves
by the elapsed path time (options decay, expiries settle), every account is margined, the
breaker takes the step's largest velocity. An account with equity < MM x breaker multiplier
(and no symbol flagged by disagreeing sources) is liquidated at the
prices ``latency_seconds`` later (between two closes: log-linear interpolation): partial
liquidation first; if its equity is still negative the shortfall is bad debt, paid by the
insurance fund, then by auto-deleveraging of profitable opposite positions (ranked by profit x
leverage) or as a socialised loss. Every money movement is a balanced ledger entry in the
settlement asset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook, asset_prices, bind_market
from margin_engine.book.columnar import MODES_BY_CODE, ColumnarBook, book_subset
from margin_engine.book.kernels import position_arrays_nb, unrealised_pnl_nb
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import NS_PER_SECOND, ns_to_iso
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.data.prices import PriceSeries, align
from margin_engine.engine.risk_state import RiskState, numbered, whole_book_margins
from margin_engine.engine.tick_guard import Verdict
from margin_engine.ledger.journal import EXTERNAL, INSURANCE_FUND, ZERO, Ledger, to_amount
from margin_engine.liquidation.config import AdlRanking, LiquidationConfig, ShortfallRule
from margin_engine.liquidation.partial import PartialLiquidation, partially_liquidate
from margin_engine.liquidation.shocks import marks_by_underlying, with_index
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.isolated import check_asked_margins
from margin_engine.margin.registry import ModelSelection, get_model
from margin_engine.margin.run import AccountMargins
from margin_engine.market.oracle import OracleConfig
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.store.base import Tick

BY_ACCOUNT = ModelSelection.ACCOUNT
# a profit at or below half the ledger quantum rounds to 0 (half-even): nothing to take by ADL
DUST = 5e-9


@dataclass(slots=True)
class ReplayResult:
    totals: dict[str, Any]
    events: list[dict[str, Any]]
    ledger: Ledger
    liquidatable_ever: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    times_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    below_by_bar: np.ndarray | None = None  # bars x accounts, recorded when execute=False


def with_settlement_asset(book: ColumnarBook, market: MarketSnapshot,
                          asset: str) -> tuple[ColumnarBook, MarketSnapshot]:
    """The book with a (zero) balance column and the market with a price (1) for the
    settlement asset, where they have none."""
    if asset not in book.assets:
        book = replace(book, assets=(*book.assets, asset),
                       collateral=np.column_stack([book.collateral,
                                                   np.zeros(book.account_count)]))
    if asset not in market.asset_prices:
        market = replace(market, asset_prices={**market.asset_prices, asset: 1.0})
    return book, market


def path_spans(series: Sequence[PriceSeries]) -> str:
    """Each series' file and first to last time, for an error about their overlap."""
    return "; ".join(
        f"{Path(x.source).name} {ns_to_iso(int(x.time_ns[0]))} to {ns_to_iso(int(x.time_ns[-1]))}"
        if x.size else f"{Path(x.source).name} empty" for x in series)


def replay(book: ColumnarBook, market: MarketSnapshot, paths: Mapping[str, PriceSeries], *,
           config: RiskConfig, liquidation: LiquidationConfig, model: str = BY_ACCOUNT,
           asset_paths: Mapping[str, PriceSeries] | None = None,
           oracle_paths: Mapping[str, PriceSeries] | None = None,
           oracle_max_deviation: float = 0.02, execute: bool = True,
           progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Run the path; ``execute=False`` only records who becomes liquidatable."""
    for u in paths:
        if u not in market.underlyings:
            raise InputError(f"an underlying of the market {sorted(market.underlyings)}",
                             field="--path", value=u)
    series = list(paths.values()) + list((asset_paths or {}).values()) + \
        list((oracle_paths or {}).values())
    times, closes = align(series)
    if times.size < 2:
        raise InputError("price paths with at least two common timestamps (their spans: "
                         f"{path_spans(series)})", field="--path")
    n_paths = len(paths)
    path_closes = closes[:, :n_paths]
    asset_closes = closes[:, n_paths:n_paths + len(asset_paths or {})]
    oracle_closes = closes[:, n_paths + len(asset_paths or {}):]
    bar_seconds = float(np.median(np.diff(times))) / NS_PER_SECOND
    delay = liquidation.latency_seconds / bar_seconds if bar_seconds else 0.0
    config = replace(config, liquidation=liquidation)  # the breaker and latency of this run

    book, market = with_settlement_asset(book, market, liquidation.settlement_asset)
    check_asked_margins(bind_market(book, market), config)
    book = freeze_position_margins(book, market, model, config)
    settle = book.assets.index(liquidation.settlement_asset)
    ledger = open_ledger(book, liquidation)
    size = book.size.copy()
    collateral = book.collateral.copy()
    marked = marks_by_underlying(market, {i.name: i.underlying
                                          for i in book.instruments.instruments})
    base_index = {u: market.underlyings[u].index for u in paths}

    def at(values: FloatArray, position: float) -> FloatArray:
        """Closes at a fractional bar position, log-linear between neighbouring closes."""
        low = min(int(math.floor(position)), times.size - 1)
        high = min(low + 1, times.size - 1)
        weight = position - low if high > low else 0.0
        result: FloatArray = values[low] * (values[high] / values[low]) ** weight
        return result

    def elapsed_ns(position: float) -> int:
        return int(round(position * bar_seconds * NS_PER_SECOND)) if position < times.size \
            else int(times[-1] - times[0])

    def market_at(position: float) -> MarketSnapshot:
        """The execution market ``position`` bars in (between closes: log-linear): index levels
        from the paths, and the clock moved on by the elapsed path time."""
        levels = at(path_closes, position)
        m = replace(market, timestamp_ns=market.timestamp_ns + elapsed_ns(position),
                    vol_as_of_ns=market.vol_as_of_ns or market.timestamp_ns)
        for k, u in enumerate(paths):
            m = with_index(m, marked, u, base_index[u] * levels[k] / path_closes[0, k])
        if asset_paths:
            prices = dict(m.asset_prices)
            stable = at(asset_closes, position)
            for j, asset in enumerate(asset_paths):
                prices[asset] = float(stable[j])
            m = replace(m, asset_prices=prices)
        return m

    def bar_ticks(t: int) -> list[Tick]:
        """The bar as ticks: each path's index level, each asset path's price, and each oracle
        path (a second source of its underlying, at the same scale as the path)."""
        rows = [(int(times[t]), u, float(base_index[u] * path_closes[t, k] / path_closes[0, k]),
                 "path") for k, u in enumerate(paths)]
        rows += [(int(times[t]), asset, float(asset_closes[t, j]), "path")
                 for j, asset in enumerate(asset_paths or {})]
        rows += [(int(times[t]), u, float(base_index[u] * oracle_closes[t, j]
                                          / path_closes[0, list(paths).index(u)]), "oracle")
                 for j, u in enumerate(oracle_paths or {})]
        return numbered(rows, start=t * len(rows))

    events: list[dict[str, Any]] = []
    totals: dict[str, Any] = {"liquidations": 0, "liquidated_notional": 0.0, "bad_debt": 0.0,
              "insurance_fund_used": 0.0, "adl_count": 0, "socialised_loss": 0.0,
              "flagged_bars_skipped": 0, "settlements": 0, "quarantined_ticks": 0}
    frozen = book.position_margin
    start_value = book.collateral @ asset_prices(book, market)
    clock = {"bar": int(times[0])}

    def remargin(bar_market: MarketSnapshot, moved: frozenset[str],
                 clock_moved: bool) -> list[tuple[IntArray, AccountMargins]]:
        """Every account at the bar's market: expiries settled, isolated margins following
        their collateral's value."""
        nonlocal book
        book = follow_collateral(book, frozen, start_value, bar_market)
        bound = bind_market(replace(book, size=size, collateral=collateral), bar_market)
        if settle_expired(bound, size, collateral, settle, ledger, events, totals,
                           clock["bar"]):
            bound = bind_market(replace(book, size=size, collateral=collateral), bound.market)
        state.set_holding(np.bincount(bound.position_account, weights=np.abs(size),
                                      minlength=book.account_count) > 0)
        return [(np.arange(book.account_count), whole_book_margins(bound, model, config))]

    oracle = OracleConfig(max_age_seconds=2.0 * max(bar_seconds, 1.0),
                          max_deviation=oracle_max_deviation)
    start = bind_market(replace(book, size=size, collateral=collateral), market)
    state = RiskState.start(start, config, model=model, oracle=oracle, remargin=remargin)
    ever = np.zeros(book.account_count, dtype=np.bool_)
    history = None if execute else np.zeros((times.size, book.account_count), dtype=np.bool_)
    for t in range(times.size):
        if progress is not None:
            progress(t, times.size)
        clock["bar"] = int(times[t])
        step = state.step(bar_ticks(t), clock_ns=market.timestamp_ns + elapsed_ns(t))
        totals["quarantined_ticks"] += sum(a.verdict is Verdict.QUARANTINE
                                           for a in step.admissions)
        events += [{"time": ns_to_iso(int(times[t])), "type": e.kind.value, **e.payload}
                   for e in step.events if e.account is None]
        multiplier = state.multiplier
        below = state.liquidatable()
        ever |= below
        if history is not None:
            history[t] = below
        if not below.any() or not execute:
            continue
        if step.flagged:
            totals["flagged_bars_skipped"] += 1
            events.append({"time": ns_to_iso(int(times[t])), "type": "liquidations_held",
                           "reason": "oracle sources disagree",
                           "symbols": sorted(step.flagged), "accounts_held": int(below.sum())})
            continue
        te = min(t + delay, float(times.size - 1))
        exec_market = market_at(te)
        exec_ns = int(times[t] + (te - t) * bar_seconds * NS_PER_SECOND)
        liquidate_bar(below, book, size, collateral, settle, exec_market, config, liquidation,
                      model, multiplier, ledger, events, totals, exec_ns)
    totals.update(accounts=book.account_count, bars=int(times.size),
                  bar_seconds=bar_seconds, latency_seconds=liquidation.latency_seconds,
                  breaker="on" if liquidation.breaker.enabled else "off",
                  insurance_fund_end=float(ledger.balance(INSURANCE_FUND,
                                                          liquidation.settlement_asset)),
                  liquidatable_accounts=int(ever.sum()),
                  start=ns_to_iso(int(times[0])), end=ns_to_iso(int(times[-1])))
    return ReplayResult(totals=totals, events=events, ledger=ledger, liquidatable_ever=ever,
                        times_ns=times, below_by_bar=history)


def open_ledger(book: ColumnarBook, liquidation: LiquidationConfig) -> Ledger:
    """A ledger with every account open, its collateral deposited, and the insurance fund
    seeded in the settlement asset."""
    ledger = Ledger()
    held = np.nonzero(book.collateral > 0)
    ledger.open_with_deposits(book.account_ids, [
        (book.account_ids[a], book.assets[col], to_amount(amount)) for a, col, amount in zip(
            held[0].tolist(), held[1].tolist(), book.collateral[held].tolist(), strict=True)])
    if liquidation.insurance_fund > 0:
        ledger.post("fund_seed", [(EXTERNAL, liquidation.settlement_asset,
                                   -to_amount(liquidation.insurance_fund)),
                                  (INSURANCE_FUND, liquidation.settlement_asset,
                                   to_amount(liquidation.insurance_fund))])
    return ledger


def follow_collateral(book: ColumnarBook, frozen: FloatArray | None, start_value: FloatArray,
                      market: MarketSnapshot) -> ColumnarBook:
    """Positions on their own margin (``frozen``: their margins at the start) hold it at the
    start collateral's value now: margin x value(market) / value(start)."""
    if frozen is None:
        return book
    value = book.collateral @ asset_prices(book, market)
    follows = np.divide(value, start_value, out=np.ones_like(value), where=start_value > 0.0)
    return replace(book, position_margin=frozen * follows[book.position_account()])


def freeze_position_margins(book: ColumnarBook, market: MarketSnapshot, model: str,
                             config: RiskConfig) -> ColumnarBook:
    """Positions on their own margin keep the share of the collateral they hold at the start
    (as a venue assigns it when the position opens): a loss elsewhere in the account cannot move
    it; its value follows the start collateral's prices."""
    bound = bind_market(book, market)
    frozen = np.full(book.position_count, np.nan) if book.position_margin is None \
        else book.position_margin.copy()
    names = [model] if model != BY_ACCOUNT else sorted(
        {MODES_BY_CODE[int(code)].value for code in np.unique(book.mode)})
    for name in names:
        held = get_model(name).compute(bound, config).per_position.get("margin_held")
        if held is None:
            continue
        accounts = np.ones(book.account_count, dtype=np.bool_) if model != BY_ACCOUNT else \
            np.array([MODES_BY_CODE[int(c)].value == name for c in book.mode])
        rows = accounts[bound.position_account]
        frozen[rows] = held[rows]
    if np.isnan(frozen).all():
        return book
    return replace(book, position_margin=frozen)


def settle_expired(bound: BoundBook, size: FloatArray, collateral: FloatArray, settle: int,
                    ledger: Ledger, events: list[dict[str, Any]], totals: dict[str, Any],
                    time_ns: int) -> bool:
    """Close every open position whose instrument has expired by the replay clock (the
    market's time plus the elapsed path time, ``book_time`` in the event; ``time`` is the path's
    bar, like every other event's): its P&L
    q x (settlement value - entry) is realised in the settlement asset and the size goes to 0.
    True when anything settled."""
    book = bound.book
    dead = np.nonzero((size != 0.0) & ~bound.live[book.position_instrument])[0]
    if dead.size == 0:
        return False
    asset = book.assets[settle]
    names = book.instruments.instruments
    for row in dead.tolist():
        a = int(bound.position_account[row])
        inst = int(book.position_instrument[row])
        pnl = float(bound.quantity[row] * (bound.mark[inst] - bound.entry_usd[row]))
        ledger.realise(book.account_ids[a], asset, to_amount(pnl),
                       memo=f"settlement {names[inst].name}")
        events.append({"time": ns_to_iso(time_ns), "type": "settlement",
                       "book_time": ns_to_iso(bound.market.timestamp_ns),
                       "account": book.account_ids[a], "instrument": names[inst].name,
                       "size": float(size[row]), "settlement_price": float(
                           bound.base_price[inst]), "value": float(bound.mark[inst]),
                       "pnl": pnl})
        size[row] = 0.0
        _sync(collateral, a, book, ledger)
        totals["settlements"] += 1
    return True


def _sync(collateral: FloatArray, a: int, book: ColumnarBook, ledger: Ledger) -> None:
    for col, asset in enumerate(book.assets):
        collateral[a, col] = float(ledger.balance(book.account_ids[a], asset))


# accounts -> their partial liquidations, computed together from their state now
Planner = Callable[[list[int]], Mapping[int, PartialLiquidation]]


def account_model(book: ColumnarBook, a: int, model: str) -> str:
    """The model account ``a`` is margined by (``account``: its own mode)."""
    return model if model != BY_ACCOUNT else MODES_BY_CODE[int(book.mode[a])].value


def liquidate_bar(below: np.ndarray, book: ColumnarBook, size: FloatArray,
                  collateral: FloatArray, settle: int, market: MarketSnapshot,
                  config: RiskConfig, liquidation: LiquidationConfig, model: str,
                  multiplier: float, ledger: Ledger, events: list[dict[str, Any]],
                  totals: dict[str, Any], time_ns: int, *,
                  plan: Planner | None = None) -> None:
    """Liquidate every account of ``below`` (a mask), in account order, at ``market``: partial
    liquidation, penalty, bad debt, insurance fund, ADL or socialised loss, each a balanced
    ledger entry; ``size`` and ``collateral`` follow the ledger.

    ``plan`` (for a whole book's round, not a replay's bar): computes the partial liquidations
    of many accounts at once from their state now (``partial_batch``): first of all of them,
    then again, together, of those not yet liquidated that an earlier liquidation of the bar
    has touched (by ADL or a socialised loss) when the first of them comes. ADL and socialised
    losses then rank and charge accounts from a ``CounterpartyView`` kept current
    incrementally, instead of binding the whole book again for every bankrupt account (equal
    up to the rounding of a sum)."""
    order = np.nonzero(below)[0].tolist()
    planned = dict(plan(order)) if plan is not None else {}
    stale: set[int] = set()
    index_of = {account: k for k, account in enumerate(book.account_ids)} if plan else {}
    view = _LazyView(book, size, collateral, market, ledger) if plan is not None else None
    for k, a in enumerate(order):
        if plan is not None and a in stale:
            again = [b for b in order[k:] if b in stale]
            planned.update(plan(again))
            stale.difference_update(again)
        start = len(ledger.journal)
        _liquidate_one(a, book, size, collateral, settle, market, config, liquidation, model,
                       multiplier, ledger, events, totals, time_ns, outcome=planned.get(a),
                       view=view)
        if plan is not None:
            for entry in ledger.journal[start:]:
                stale.update(index_of[p.owner] for p in entry.postings if p.owner in index_of)


class CounterpartyView:
    """Who can pay a bankrupt account's shortfall, at one market: per position its P&L and
    notional, per account its equity and gross notional, and per (underlying, side) the
    positions in profit (the only ADL candidates: within one market a position's P&L keeps
    its sign as it shrinks). ``refresh`` reprices only the accounts the ledger touched since
    the last look (a posting names them)."""

    def __init__(self, book: ColumnarBook, size: FloatArray, collateral: FloatArray,
                 market: MarketSnapshot, ledger: Ledger) -> None:
        self.bound = bind_market(replace(book, size=size, collateral=collateral), market)
        self.ledger, self.seen = ledger, len(ledger.journal)
        self.index_of = {account: k for k, account in enumerate(book.account_ids)}
        bound = self.bound
        self.quantity = bound.quantity.copy()
        self.notional = bound.signed_notional.copy()
        self.pnl = self.quantity * (bound.mark[book.position_instrument] - bound.entry_usd)
        self.equity = bound.equity()
        self.gross = bound.account_sum(np.abs(self.notional))
        self.underlying = book.instruments.underlying[book.position_instrument]
        self.pools: dict[tuple[int, float], IntArray] = {}
        sign = np.sign(self.quantity)
        for u in range(len(book.instruments.underlyings)):
            for side in (-1.0, 1.0):
                self.pools[(u, side)] = np.nonzero((self.underlying == u) & (sign == side)
                                                   & (self.pnl > 0))[0]

    def refresh(self, size: FloatArray, collateral: FloatArray) -> None:
        """The touched accounts' positions repriced with the market's instrument prices
        (``bind_market``'s kernels on their rows), their equity and gross notional summed."""
        owners = {p.owner for entry in self.ledger.journal[self.seen:] for p in entry.postings}
        self.seen = len(self.ledger.journal)
        touched = np.array(sorted(self.index_of[o] for o in owners if o in self.index_of),
                           dtype=np.int64)
        if touched.size == 0:
            return
        bound, book = self.bound, self.bound.book
        table = book.instruments
        part = book_subset(replace(book, size=size, collateral=collateral), touched)
        rows = book.offsets[touched][:, None] + np.arange(int(np.diff(book.offsets).max()))
        rows = rows[rows < book.offsets[touched + 1][:, None]]  # each account's rows, in order
        n = rows.size
        quantity, entry_usd, notional, gross = np.empty(n), np.empty(n), np.empty(n), \
            np.empty(n)
        position_arrays_nb(part.position_instrument, part.size, part.entry_price,
                           table.contract_size, table.inverse, table.is_option,
                           bound.index[table.underlying], bound.mark, quantity, entry_usd,
                           notional, gross)
        notional[~bound.live[part.position_instrument]] = 0.0  # settled: cash, no exposure
        self.quantity[rows] = quantity
        self.notional[rows] = notional
        self.pnl[rows] = quantity * (bound.mark[part.position_instrument] - entry_usd)
        value = part.collateral @ asset_prices(book, bound.market)
        self.equity[touched] = value + unrealised_pnl_nb(
            part.offsets, part.position_instrument, quantity, bound.mark, entry_usd)
        self.gross[touched] = np.bincount(part.position_account(), weights=np.abs(notional),
                                          minlength=touched.size)


class _LazyView:
    """A ``CounterpartyView`` made at its first use (most bars need none)."""

    def __init__(self, book: ColumnarBook, size: FloatArray, collateral: FloatArray,
                 market: MarketSnapshot, ledger: Ledger) -> None:
        self.args = (book, size, collateral, market, ledger)
        self.view: CounterpartyView | None = None

    def get(self) -> CounterpartyView:
        book, size, collateral, market, ledger = self.args
        if self.view is None:
            self.view = CounterpartyView(book, size, collateral, market, ledger)
        else:
            self.view.refresh(size, collateral)
        return self.view


def _liquidate_one(a: int, book: ColumnarBook, size: FloatArray, collateral: FloatArray,
                   settle: int, market: MarketSnapshot, config: RiskConfig,
                   liquidation: LiquidationConfig, model: str, multiplier: float,
                   ledger: Ledger, events: list[dict[str, Any]], totals: dict[str, Any],
                   time_ns: int, outcome: PartialLiquidation | None = None,
                   view: _LazyView | None = None) -> None:
    account = book.account_ids[a]
    asset = liquidation.settlement_asset
    rows = slice(int(book.offsets[a]), int(book.offsets[a + 1]))
    if outcome is None:
        single = book_subset(replace(book, size=size, collateral=collateral), [a])
        outcome = partially_liquidate(single, market, account_model(book, a, model), config,
                                      liquidation, multiplier)
    if not outcome.closures:
        return
    for closure in outcome.closures:
        ledger.realise(account, asset, to_amount(closure.realised_pnl), memo=closure.instrument)
        totals["liquidated_notional"] += closure.notional
    # The penalty comes only out of what is left: never into negative equity (the fund would
    # otherwise pay itself).
    penalties = sum(c.penalty for c in outcome.closures)
    if outcome.shortfall is None:
        left_before_penalty = outcome.equity + penalties
        charged = min(penalties, max(left_before_penalty, 0.0))
        equity_after = left_before_penalty - charged
    else:  # positions on their own margin: each one's deficit is bad debt on its own
        charged = outcome.charged_penalty or 0.0
        equity_after = -outcome.shortfall if outcome.shortfall > 0.0 else outcome.equity
    if charged > 0:
        ledger.post("liquidation_penalty", [(account, asset, -to_amount(charged)),
                                            (INSURANCE_FUND, asset, to_amount(charged))],
                    allow_negative=frozenset({EXTERNAL, "market", account}))
    size[rows] = outcome.book.size
    _sync(collateral, a, book, ledger)
    totals["liquidations"] += 1
    events.append({"time": ns_to_iso(time_ns), "type": "liquidation", "account": account,
                   "closed": [{"instrument": c.instrument, "size": c.size_closed,
                               "notional": c.notional, "penalty_due": c.penalty}
                              for c in outcome.closures],
                   # due: penalty_rate x closed notional; penalty: what was charged, never
                   # more than the equity left; the rest is not collected
                   "penalty_due": penalties, "penalty": charged,
                   "penalty_not_collected": penalties - charged, "equity_after": equity_after,
                   "target_reached": outcome.target_reached})
    if equity_after >= 0.0:
        return
    shortfall = to_amount(-equity_after)
    totals["bad_debt"] += float(shortfall)
    fund = max(ledger.balance(INSURANCE_FUND, asset), ZERO)
    covered = min(shortfall, fund)
    if covered > ZERO:
        ledger.transfer("bad_debt_cover", INSURANCE_FUND, account, asset, covered)
        totals["insurance_fund_used"] += float(covered)
    remaining = shortfall - covered
    events.append({"time": ns_to_iso(time_ns), "type": "bad_debt", "account": account,
                   "shortfall": float(shortfall), "insurance_fund": float(covered)})
    if remaining > ZERO:
        if liquidation.shortfall is ShortfallRule.ADL:
            sides = {}
            table = book.instruments
            names = {i.name: k for k, i in enumerate(table.instruments)}
            for closure in outcome.closures:
                sides[int(table.underlying[names[closure.instrument]])] = float(
                    np.sign(closure.size_closed))
            remaining = _auto_deleverage(a, book, size, collateral, market, ledger, liquidation,
                                         remaining, sides, events, totals, time_ns, view)
        if remaining > ZERO:
            _socialise(a, book, size, collateral, market, ledger, asset, remaining, events,
                       totals, time_ns, view)
    _sync(collateral, a, book, ledger)


def _auto_deleverage(a: int, book: ColumnarBook, size: FloatArray, collateral: FloatArray,
                     market: MarketSnapshot, ledger: Ledger, liquidation: LiquidationConfig,
                     remaining: Decimal, exposed: dict[int, float], events: list[dict[str, Any]],
                     totals: dict[str, Any], time_ns: int,
                     lazy: _LazyView | None = None) -> Decimal:
    """Close profitable positions opposite to the bankrupt account's liquidated ones (``exposed``:
    underlying -> side), best ranked first, taking from each at most its unrealised profit."""
    table = book.instruments
    if lazy is None:
        bound = bind_market(replace(book, size=size, collateral=collateral), market)
        owners, notional = bound.position_account, bound.signed_notional
        pnl = bound.quantity * (bound.mark[book.position_instrument] - bound.entry_usd)
        und = table.underlying[book.position_instrument]
        equity = bound.equity()
        gross = bound.account_sum(np.abs(bound.signed_notional))
        side = np.zeros(len(table.underlyings))  # 0: not exposed
        for u, sign in exposed.items():
            side[u] = sign
        # a counterparty: another account's profitable position on an exposed underlying, on
        # the other side of the bankrupt position (same side, or no side: not one)
        rows = np.nonzero((owners != a) & (pnl > DUST) & (side[und] != 0)
                          & (np.sign(bound.quantity) != side[und]))[0]
    else:
        view = lazy.get()
        owners, notional = view.bound.position_account, view.notional
        pnl, equity, gross = view.pnl, view.equity, view.gross
        pools = [view.pools[(u, -sign)] for u, sign in sorted(exposed.items()) if sign != 0]
        rows = np.concatenate(pools) if pools else np.zeros(0, dtype=np.int64)
        rows = rows[(owners[rows] != a) & (pnl[rows] > DUST)]  # ranked below: order is free
    profit = pnl[rows] / np.maximum(np.abs(notional[rows]), 1e-12)
    held = equity[owners[rows]]
    leverage = np.where(held > 0, gross[owners[rows]] / np.where(held > 0, held, 1.0), np.inf)
    rank = profit * leverage if liquidation.adl_ranking is AdlRanking.PROFIT_X_LEVERAGE \
        else profit
    asset = liquidation.settlement_asset
    for row in _best_first(rows, rank):
        if remaining <= ZERO:
            break
        owner = int(owners[row])
        name = book.account_ids[owner]
        take = min(remaining, to_amount(pnl[row]))
        if take <= ZERO:
            continue
        fraction = float(take) / float(pnl[row])
        ledger.realise(name, asset, to_amount(pnl[row] * fraction), memo="adl")
        # The winner's realised profit (just credited) goes to the bankrupt account; its
        # settlement balance may be negative already (equity held in other assets).
        ledger.post("adl", [(name, asset, -take), (book.account_ids[a], asset, take)],
                    allow_negative=frozenset({EXTERNAL, "market", name, book.account_ids[a]}))
        size[row] -= size[row] * fraction
        _sync(collateral, owner, book, ledger)
        remaining -= take
        totals["adl_count"] += 1
        events.append({"time": ns_to_iso(time_ns), "type": "adl", "account": name,
                       "for": book.account_ids[a], "amount": float(take),
                       "fraction_closed": fraction})
    return remaining


def _best_first(rows: IntArray, rank: FloatArray, first: int = 64) -> Iterator[int]:
    """``rows`` by rank, best first, ties in row order; the ``first`` best are sorted before
    the rest (a bankrupt account's shortfall is usually covered by a few)."""
    if rows.size > 4 * first:
        cut = np.partition(-rank, first)[first]  # every row ranked at least this well
        head = np.nonzero(-rank <= cut)[0]
        yield from rows[head[np.lexsort((rows[head], -rank[head]))]].tolist()
        tail = np.nonzero(-rank > cut)[0]
        yield from rows[tail[np.lexsort((rows[tail], -rank[tail]))]].tolist()
        return
    yield from rows[np.lexsort((rows, -rank))].tolist()  # best rank first, then row order


def _socialise(a: int, book: ColumnarBook, size: FloatArray, collateral: FloatArray,
               market: MarketSnapshot, ledger: Ledger, asset: str, remaining: Decimal,
               events: list[dict[str, Any]], totals: dict[str, Any], time_ns: int,
               lazy: _LazyView | None = None) -> None:
    if lazy is None:
        equity = bind_market(replace(book, size=size, collateral=collateral), market).equity()
    else:
        equity = lazy.get().equity
    held = np.nonzero(equity > 0)[0]
    held = held[held != a]
    # weights as the ledger counts them: an equity below half a quantum weighs nothing (and
    # when nobody weighs anything the shortfall is unpaid, not an error)
    weights = {book.account_ids[k]: to_amount(equity[k]) for k in held.tolist()}
    payers = {name: w for name, w in weights.items() if w > ZERO}
    held = np.array([k for k in held.tolist() if book.account_ids[k] in payers],
                    dtype=np.int64)
    if not payers:
        events.append({"time": ns_to_iso(time_ns), "type": "unpaid_shortfall",
                       "account": book.account_ids[a], "amount": float(remaining)})
        return
    ledger.socialise(book.account_ids[a], asset, remaining, payers)
    for k in held.tolist():
        _sync(collateral, k, book, ledger)
    totals["socialised_loss"] += float(remaining)
    events.append({"time": ns_to_iso(time_ns), "type": "socialised_loss",
                   "account": book.account_ids[a], "amount": float(remaining),
                   "payers": len(payers)})
