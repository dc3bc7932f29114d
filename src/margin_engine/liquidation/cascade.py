"""Liquidation cascades: a shock, then rounds of forced selling and price impact until no
account is liquidatable.

Round r = 1, 2, ... (at most ``max_rounds``):

1. prices move, as ticks of one ``RiskState.step`` (the monitor's and the replay's step: tick
   guard, market move, every account re-margined, statuses); the clock moves on by
   ``round_seconds``. Round 1 moves by the shock, later rounds by the previous round's impact.
   The jump bound of the tick guard is off: a shock is given, not a print to doubt;
2. every account below MM is liquidated at the round's prices by the replay's
   ``liquidate_bar`` (partial liquidation, penalty to the insurance fund, bad debt paid by the
   fund, then ADL or a socialised loss, each a balanced ledger entry), the partial
   liquidations computed for all of them at once (``partial_batch``);
3. each account liquidated in the round whose settlement (USD) balance is negative sells
   collateral to cover it, riskiest asset first (highest volatility haircut), at the round's
   prices (a balanced exchange with the market);
4. the round's forced flows move prices (``impact``): per underlying, -(closed coins x delta)
   x index (closing a long sells), per collateral asset -(value sold).

The cascade stops when no account is liquidatable after a move, when a round closes nothing,
or after ``max_rounds`` (then the pending impact is applied once more, without liquidating, to
count who would be next).

Contagion: a liquidation of an instrument on underlying u is *caused by its own price* when the
account, as it stood in that round, would be below MM with only u moved (every other
underlying and collateral price at its level before the shock); otherwise it was hit through
what it shares with the rest of its account: a collateral asset whose price moved
(``collateral``) or the equity it shares with other positions (``shared_equity``).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook, asset_prices, bind_market
from margin_engine.book.columnar import ColumnarBook, book_subset
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import NS_PER_SECOND, ns_to_iso
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.engine.risk_state import RiskState, numbered, whole_book_margins
from margin_engine.engine.tick_guard import Verdict
from margin_engine.ledger.journal import (
    EXTERNAL,
    INSURANCE_FUND,
    MARKET,
    ZERO,
    Ledger,
    to_amount,
)
from margin_engine.liquidation.cascade_shock import Shock
from margin_engine.liquidation.config import BreakerConfig, LiquidationConfig
from margin_engine.liquidation.impact import Impact, ImpactConfig, apply_impact
from margin_engine.liquidation.partial import PartialLiquidation
from margin_engine.liquidation.partial_batch import group_by_model, partially_liquidate_many
from margin_engine.liquidation.replay import (
    account_model,
    follow_collateral,
    freeze_position_margins,
    liquidate_bar,
    open_ledger,
    settle_expired,
    with_settlement_asset,
)
from margin_engine.liquidation.shocks import with_index
from margin_engine.margin.config import RiskConfig, ShortfallRule, choice
from margin_engine.margin.run import AccountMargins
from margin_engine.market.oracle import OracleConfig
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.pricing.black76 import greeks

SETTLEMENT = "USD"
SOURCE = "cascade"


class EndReason(enum.StrEnum):
    """Why the cascade stopped."""

    NONE_LIQUIDATABLE = "none_liquidatable"  # no account below MM after the last move
    NOTHING_TO_CLOSE = "nothing_to_close"  # accounts below MM whose liquidation closes nothing
    ROUND_CAP = "round_cap"  # max_rounds reached


class Channel(enum.StrEnum):
    """Why an instrument was liquidated (module docstring)."""

    OWN_PRICE = "own_price"
    COLLATERAL = "collateral"
    SHARED_EQUITY = "shared_equity"


@dataclass(frozen=True, slots=True, kw_only=True)
class CascadeConfig:
    max_rounds: int = 10
    round_seconds: float = 60.0  # time between rounds (and the clock options decay by)
    impact: ImpactConfig = field(default_factory=ImpactConfig)
    penalty_rate: float = 0.01
    shortfall: str = "adl"  # a ShortfallRule: what pays bad debt beyond the fund
    # the insurance fund at the start: USD, else this share of the open interest (gross
    # notional at the start, the same in every margin mode)
    insurance_fund: float | None = None
    insurance_fund_share: float = 0.005
    collateral_sales: bool = True

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise InputError("at least 1 round", field="max_rounds", value=self.max_rounds)
        if not (math.isfinite(self.round_seconds) and self.round_seconds > 0):
            raise InputError("seconds > 0", field="round_seconds", value=self.round_seconds)
        if not (math.isfinite(self.penalty_rate) and 0 <= self.penalty_rate < 1):
            raise InputError("a fraction in [0, 1)", field="penalty_rate",
                             value=self.penalty_rate)
        object.__setattr__(self, "shortfall",
                           choice(ShortfallRule, self.shortfall, field="shortfall"))
        fund = self.insurance_fund
        if fund is not None and not (math.isfinite(fund) and fund >= 0):
            raise InputError("USD >= 0", field="insurance_fund", value=fund)
        if not (math.isfinite(self.insurance_fund_share) and self.insurance_fund_share >= 0):
            raise InputError("a share >= 0", field="insurance_fund_share",
                             value=self.insurance_fund_share)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    """Liquidations of one instrument in one round."""

    instrument: str
    underlying: str
    notional: float
    accounts: int
    by_channel: dict[Channel, float]  # notional
    accounts_by_channel: dict[Channel, int]
    own_move: float  # the underlying's price / its price before the shock, in that round


@dataclass(frozen=True, slots=True, kw_only=True)
class CascadeRound:
    number: int
    prices: dict[str, float]  # every symbol at the round's market
    moved: tuple[str, ...]  # what moved into the round (shock or impact)
    liquidatable: int
    liquidated_accounts: int
    liquidated_notional: float
    hits: tuple[Hit, ...]  # by instrument
    notional_by_strategy: dict[int, float]
    collateral_sold: dict[str, float]  # USD by asset
    flows: dict[str, float]  # net forced flow by symbol, USD (sales < 0)
    impact: tuple[Impact, ...]  # the moves these flows cause (into the next round)
    penalties: float
    bad_debt: float
    insurance_fund_used: float
    insurance_fund: float  # at the end of the round
    adl_count: int
    adl_amount: float
    socialised_loss: float
    unpaid_shortfall: float
    ledger_total: dict[str, str]  # per asset, every owner but the outside world (Decimal)
    ledger_imbalance: dict[str, str]  # per asset, every owner (must be 0)
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CascadeResult:
    model: str
    shock: Shock
    accounts: int
    positions: int
    open_interest: float  # gross notional at the start
    collateral_value: float  # at the start, USD
    insurance_fund_start: float
    deposits: dict[str, str]  # per asset: what came in (Decimal)
    liquidatable_before_shock: int
    rounds: tuple[CascadeRound, ...]
    end: EndReason
    liquidatable_at_end: int  # after the last round's impact (still to liquidate)
    start_prices: dict[str, float]
    end_prices: dict[str, float]
    accounts_liquidated: int  # distinct accounts over every round
    strategy_labels: dict[int, str]
    seconds: dict[str, float]
    ledger_total_end: dict[str, str]  # every balance summed again at the end
    ledger_imbalance_end: dict[str, str]

    @property
    def liquidated_notional(self) -> float:
        return float(sum(r.liquidated_notional for r in self.rounds))

    @property
    def bad_debt(self) -> float:
        return float(sum(r.bad_debt for r in self.rounds))


@dataclass(frozen=True, slots=True)
class RoundProgress:
    model: str
    round: int
    max_rounds: int
    liquidatable: int
    liquidated: int
    done: bool


Progress = Callable[[RoundProgress], None]


def _price_of(market: MarketSnapshot, symbol: str) -> float:
    if symbol in market.underlyings:
        return float(market.underlyings[symbol].index)
    return float(market.asset_prices[symbol])


def _symbols(market: MarketSnapshot) -> list[str]:
    return sorted((set(market.underlyings) | set(market.asset_prices)) - {SETTLEMENT})


def _at(market: MarketSnapshot, marked: dict[str, str], symbol: str, price: float
        ) -> MarketSnapshot:
    """The market with ``symbol`` at ``price`` (an underlying with its marks and coin)."""
    if symbol in market.underlyings:
        return with_index(market, marked, symbol, price)
    return replace(market, asset_prices={**market.asset_prices, symbol: price})


def run_cascade(book: ColumnarBook, market: MarketSnapshot, shock: Shock, *, model: str,
                config: RiskConfig, cascade: CascadeConfig | None = None,
                strategy: IntArray | None = None,
                strategy_labels: Mapping[int, str] | None = None,
                progress: Progress | None = None) -> CascadeResult:
    """The cascade of ``shock`` through ``book`` (collateral funded) margined by ``model``
    (``account``: each account's own mode); ``strategy``: per account, for the breakdown."""
    cascade = cascade or CascadeConfig()
    clock = time.perf_counter()
    symbols = _symbols(market)
    for move in shock.moves:
        if move.symbol not in symbols:
            raise InputError(f"a symbol of the market {symbols}", field="--shock",
                             value=move.symbol)
    gross = float(np.abs(bind_market(book, market).gross_notional).sum())
    fund = cascade.insurance_fund if cascade.insurance_fund is not None \
        else cascade.insurance_fund_share * gross
    liquidation = LiquidationConfig(penalty_rate=cascade.penalty_rate,
                                    latency_seconds=cascade.round_seconds,
                                    shortfall=ShortfallRule(cascade.shortfall),
                                    insurance_fund=fund,
                                    settlement_asset=SETTLEMENT,
                                    breaker=BreakerConfig(enabled=False))
    config = replace(config, liquidation=liquidation,
                     monitor=replace(config.monitor, jump_sigmas=math.inf))
    book, market = with_settlement_asset(book, market, SETTLEMENT)
    book = freeze_position_margins(book, market, model, config)
    settle = book.assets.index(SETTLEMENT)
    ledger = open_ledger(book, liquidation)
    audit = _Audit(ledger)
    deposits = audit.full()[0]
    size, collateral = book.size.copy(), book.collateral.copy()
    frozen = book.position_margin
    start_value = book.collateral @ asset_prices(book, market)
    n = book.account_count
    events: list[dict[str, Any]] = []
    totals: dict[str, Any] = {"liquidations": 0, "liquidated_notional": 0.0, "bad_debt": 0.0,
                              "insurance_fund_used": 0.0, "adl_count": 0,
                              "socialised_loss": 0.0, "settlements": 0}
    names = {inst.name: k for k, inst in enumerate(book.instruments.instruments)}
    index_of = {account: k for k, account in enumerate(book.account_ids)}
    last: dict[str, BoundBook] = {}

    def remargin(now: MarketSnapshot, moved: frozenset[str],
                 clock_moved: bool) -> list[tuple[IntArray, AccountMargins]]:
        """Every account at the round's market (the replay's re-margin)."""
        followed = follow_collateral(book, frozen, start_value, now)
        bound = bind_market(replace(followed, size=size, collateral=collateral), now)
        if settle_expired(bound, size, collateral, settle, ledger, events, totals,
                          now.timestamp_ns):
            bound = bind_market(replace(followed, size=size, collateral=collateral), now)
        last["bound"] = bound
        state.set_holding(np.bincount(bound.position_account, weights=np.abs(size),
                                      minlength=n) > 0)
        return [(np.arange(n), whole_book_margins(bound, model, config))]

    start = bind_market(replace(book, size=size, collateral=collateral), market)
    last["bound"] = start
    oracle = OracleConfig(max_age_seconds=2.0 * cascade.round_seconds)
    state = RiskState.start(start, config, model=model, oracle=oracle, remargin=remargin)
    before = int(state.liquidatable().sum())
    start_prices = {s: _price_of(market, s) for s in symbols}
    marked = state.marked
    setup_seconds = time.perf_counter() - clock

    pending = {m.symbol: start_prices[m.symbol] * m.ratio for m in shock.moves}
    rounds: list[CascadeRound] = []
    liquidated_ever = np.zeros(n, dtype=np.bool_)
    end, sequence = EndReason.ROUND_CAP, 0
    round_ns = int(round(cascade.round_seconds * NS_PER_SECOND))
    for number in range(1, cascade.max_rounds + 2):
        began = time.perf_counter()
        time_ns = market.timestamp_ns + number * round_ns
        ticks = numbered([(time_ns, s, p, SOURCE) for s, p in sorted(pending.items())],
                         start=sequence)
        sequence += len(ticks)
        step = state.step(ticks, clock_ns=time_ns)
        refused = [a for a in step.admissions if a.verdict is not Verdict.APPLY]
        if refused:
            raise RuntimeError(f"cascade ticks not applied: {refused}")
        below = state.liquidatable()
        count = int(below.sum())
        if number > cascade.max_rounds or count == 0:
            end = EndReason.NONE_LIQUIDATABLE if count == 0 else EndReason.ROUND_CAP
            if progress is not None:
                progress(RoundProgress(model, number - 1, cascade.max_rounds, count, 0, True))
            break
        now = state.market
        prices = {s: _price_of(now, s) for s in symbols}
        followed = follow_collateral(book, frozen, start_value, now)
        size_before, collateral_before = size.copy(), collateral.copy()

        def plan(accounts: list[int], followed: ColumnarBook = followed,
                 now: MarketSnapshot = now) -> dict[int, PartialLiquidation]:
            return _plan(accounts, followed, size, collateral, now, model, config,
                         liquidation, state.multiplier)

        first_event = len(events)
        liquidate_bar(below, followed, size, collateral, settle, now, config, liquidation,
                      model, state.multiplier, ledger, events, totals, time_ns, plan=plan)
        new = events[first_event:]
        closed = [(index_of[e["account"]], c) for e in new if e["type"] == "liquidation"
                  for c in e["closed"]]
        if not closed:  # below MM, yet nothing to close (e.g. only long options held alone)
            end = EndReason.NOTHING_TO_CLOSE
            if progress is not None:
                progress(RoundProgress(model, number - 1, cascade.max_rounds, count, 0, True))
            break
        accounts = sorted({a for a, _ in closed})
        liquidated_ever[accounts] = True
        sold = _sell_collateral(accounts, book, collateral, settle, ledger, now, config,
                                events, time_ns) if cascade.collateral_sales else {}
        flows = _flows(closed, names, last["bound"], now, book)
        for asset, value in sold.items():
            flows[asset] = flows.get(asset, 0.0) - value
        impact = apply_impact(cascade.impact, flows, prices, start_prices)
        channels = _channels(closed, names, book, size_before, collateral_before,
                             now, market, marked, start_prices, model, config, state.multiplier,
                             frozen, start_value)
        hits = _hits(closed, names, book, channels, prices, start_prices)
        by_strategy: dict[int, float] = {}
        if strategy is not None:
            for a, c in closed:
                key = int(strategy[a])
                by_strategy[key] = by_strategy.get(key, 0.0) + float(c["notional"])
        kinds = _by_kind(new)
        ledger_total, imbalance = audit.look()
        fund_after = ledger.balance(INSURANCE_FUND, SETTLEMENT)
        rounds.append(CascadeRound(
            number=number, prices=prices, moved=tuple(sorted(pending)), liquidatable=count,
            liquidated_accounts=len(accounts),
            liquidated_notional=float(sum(c["notional"] for _, c in closed)),
            hits=hits, notional_by_strategy=by_strategy, collateral_sold=sold, flows=flows,
            impact=tuple(impact.values()), penalties=kinds["penalty"],
            bad_debt=kinds["bad_debt"], insurance_fund_used=kinds["fund"],
            insurance_fund=float(fund_after), adl_count=int(kinds["adl_count"]),
            adl_amount=kinds["adl"], socialised_loss=kinds["socialised"],
            unpaid_shortfall=kinds["unpaid"], ledger_total=ledger_total,
            ledger_imbalance=imbalance, seconds=time.perf_counter() - began))
        if progress is not None:
            progress(RoundProgress(model, number, cascade.max_rounds, count, len(accounts),
                                   False))
        pending = {s: i.price_after for s, i in impact.items()}
    total_end, imbalance_end = audit.full()
    return CascadeResult(
        model=model, shock=shock, accounts=n, positions=book.position_count,
        open_interest=gross, collateral_value=float(start_value.sum()),
        insurance_fund_start=fund, deposits=deposits, liquidatable_before_shock=before,
        rounds=tuple(rounds), end=end,
        liquidatable_at_end=int(state.liquidatable().sum()), start_prices=start_prices,
        end_prices={s: _price_of(state.market, s) for s in symbols},
        accounts_liquidated=int(liquidated_ever.sum()),
        strategy_labels=dict(strategy_labels or {}),
        seconds={"setup": setup_seconds, "rounds": float(sum(r.seconds for r in rounds)),
                 "total": time.perf_counter() - clock},
        ledger_total_end=total_end, ledger_imbalance_end=imbalance_end)


def _plan(chosen: list[int], book: ColumnarBook, size: FloatArray, collateral: FloatArray,
          market: MarketSnapshot, model: str, config: RiskConfig,
          liquidation: LiquidationConfig, multiplier: float) -> dict[int, PartialLiquidation]:
    """The partial liquidation of every account ``chosen``, all at once per model."""
    accounts = np.asarray(chosen, dtype=np.int64)
    now = replace(book, size=size, collateral=collateral)
    models = [account_model(book, int(a), model) for a in accounts.tolist()]
    planned: dict[int, PartialLiquidation] = {}
    for name, rows in group_by_model(models).items():
        group = accounts[rows]
        outcomes = partially_liquidate_many(book_subset(now, group), market, name, config,
                                            liquidation, multiplier)
        planned.update(zip(group.tolist(), outcomes, strict=True))
    return planned


def _sell_collateral(accounts: list[int], book: ColumnarBook, collateral: FloatArray,
                     settle: int, ledger: Ledger, market: MarketSnapshot, config: RiskConfig,
                     events: list[dict[str, Any]], time_ns: int) -> dict[str, float]:
    """Each account's negative settlement balance covered by selling its collateral to the
    market at the round's price, highest volatility haircut first; USD sold per price symbol
    (``ASSET@CHAIN`` counts as ``ASSET``)."""
    haircuts = config.haircuts
    risk = {asset: haircuts.asset(asset.partition("@")[0]).annual_vol
            + haircuts.tier(asset.partition("@")[2] or "native").haircut
            for asset in book.assets}
    order = sorted((book.assets.index(asset) for asset in book.assets if asset != SETTLEMENT),
                   key=lambda col: (-risk[book.assets[col]], book.assets[col]))
    sold: dict[str, float] = {}
    when = ns_to_iso(time_ns)
    for a in accounts:
        account = book.account_ids[a]
        deficit = -ledger.balance(account, SETTLEMENT)
        if deficit <= 0:
            continue
        for col in order:  # the mirror of the ledger says which balances are there
            if deficit <= 0:
                break
            if collateral[a, col] <= 0:
                continue
            asset = book.assets[col]
            held = ledger.balance(account, asset)
            price = float(market.asset_prices[asset.partition("@")[0]])
            units = min(held, to_amount(float(deficit) / price))
            value = to_amount(float(units) * price)
            if units <= 0 or value <= 0:
                continue
            ledger.post("collateral_sale", [(account, asset, -units), (MARKET, asset, units),
                                            (MARKET, SETTLEMENT, -value),
                                            (account, SETTLEMENT, value)],
                        allow_negative=frozenset({EXTERNAL, MARKET, account}))
            deficit -= value
            symbol = asset.partition("@")[0]
            sold[symbol] = sold.get(symbol, 0.0) + float(value)
            collateral[a, col] = float(ledger.balance(account, asset))
            events.append({"time": when, "type": "collateral_sale", "account": account,
                           "asset": asset, "units": float(units), "value": float(value)})
        collateral[a, settle] = float(ledger.balance(account, SETTLEMENT))
    return sold


def _deltas(bound: BoundBook) -> FloatArray:
    """Coins of underlying per contract of every instrument: contract size for linear
    delta-one, contract size / mark for inverse perps and futures (USD contracts), contract
    size x Black-76 delta for options."""
    table = bound.book.instruments
    delta = np.where(table.inverse & ~table.is_option,
                     table.contract_size / np.maximum(bound.mark, 1e-300), table.contract_size)
    rows = np.nonzero(table.is_option & bound.live)[0]
    if rows.size:
        delta[rows] = table.contract_size[rows] * greeks(
            bound.base_price[rows], table.strike[rows], bound.years[rows], bound.sigma[rows],
            table.is_call[rows])["delta"]
    dead = np.nonzero(~bound.live)[0]
    delta[dead] = 0.0
    return np.asarray(delta, dtype=np.float64)


def _flows(closed: list[tuple[int, dict[str, Any]]], names: dict[str, int], bound: BoundBook,
           market: MarketSnapshot, book: ColumnarBook) -> dict[str, float]:
    """Net USD flow per underlying of the round's closures: closing q contracts of delta d
    trades -q x d coins at the index (a long closed is sold)."""
    if not closed:
        return {}
    delta = _deltas(bound)
    table = book.instruments
    flows: dict[str, float] = {}
    for _, c in closed:
        row = names[c["instrument"]]
        u = table.underlyings[int(table.underlying[row])]
        coins = float(c["size"]) * float(delta[row])
        flows[u] = flows.get(u, 0.0) - coins * float(market.underlyings[u].index)
    return flows


def _channels(closed: list[tuple[int, dict[str, Any]]], names: dict[str, int],
              book: ColumnarBook, size: FloatArray,
              collateral: FloatArray, now: MarketSnapshot, start_market: MarketSnapshot,
              marked: dict[str, str], start_prices: Mapping[str, float], model: str,
              config: RiskConfig, multiplier: float, frozen: FloatArray | None,
              start_value: FloatArray) -> dict[tuple[int, str], Channel]:
    """(account, underlying) -> Channel of every liquidation of the round (module docstring):
    the accounts' state before the round's liquidations, at a market where only u moved."""
    table = book.instruments
    by_underlying: dict[str, set[int]] = {}
    for a, c in closed:
        u = table.underlyings[int(table.underlying[names[c["instrument"]]])]
        by_underlying.setdefault(u, set()).add(a)
    moved = {s for s, p in start_prices.items() if _price_of(now, s) != p}
    coins_moved = np.array([asset.partition("@")[0] in moved for asset in book.assets])
    out: dict[tuple[int, str], Channel] = {}
    for u, members in sorted(by_underlying.items()):
        accounts = np.array(sorted(members), dtype=np.int64)
        alone = now
        for s in sorted(moved - {u}):  # everything else back where it was before the shock
            alone = _at(alone, marked, s, start_prices[s])
        held = follow_collateral(book, frozen, start_value, alone)
        bound = bind_market(book_subset(replace(held, size=size, collateral=collateral),
                                        accounts), alone)
        gap = whole_book_margins(bound, model, config).gap(multiplier)
        other_coins = coins_moved & np.array([asset.partition("@")[0] != u
                                              for asset in book.assets])
        # held now, or at the start (positions on their own margin keep a share of the start
        # collateral's value, sold or not)
        holds = (collateral[accounts] > 0) | (book.collateral[accounts] > 0)
        in_moved: np.ndarray = np.any(holds[:, other_coins], axis=1)
        for k, a in enumerate(accounts.tolist()):
            out[(a, u)] = Channel.OWN_PRICE if gap[k] < 0.0 else (
                Channel.COLLATERAL if in_moved[k] else Channel.SHARED_EQUITY)
    return out


def _hits(closed: list[tuple[int, dict[str, Any]]], names: dict[str, int], book: ColumnarBook,
          channels: dict[tuple[int, str], Channel], prices: Mapping[str, float],
          start_prices: Mapping[str, float]) -> tuple[Hit, ...]:
    table = book.instruments
    notional: dict[str, dict[Channel, float]] = {}
    owners: dict[str, dict[Channel, set[int]]] = {}
    for a, c in closed:
        name = c["instrument"]
        u = table.underlyings[int(table.underlying[names[name]])]
        channel = channels[(a, u)]
        cell = notional.setdefault(name, {})
        cell[channel] = cell.get(channel, 0.0) + float(c["notional"])
        owners.setdefault(name, {}).setdefault(channel, set()).add(a)
    out = []
    for name in sorted(notional):
        u = table.underlyings[int(table.underlying[names[name]])]
        everyone = set().union(*owners[name].values())
        out.append(Hit(instrument=name, underlying=u, notional=sum(notional[name].values()),
                       accounts=len(everyone), by_channel=notional[name],
                       accounts_by_channel={k: len(v) for k, v in owners[name].items()},
                       own_move=prices[u] / start_prices[u]))
    return tuple(out)


def _by_kind(new: list[dict[str, Any]]) -> dict[str, float]:
    out = {"penalty": 0.0, "bad_debt": 0.0, "fund": 0.0, "adl": 0.0, "adl_count": 0.0,
           "socialised": 0.0, "unpaid": 0.0}
    for e in new:
        kind = e["type"]
        if kind == "liquidation":
            out["penalty"] += float(e["penalty"])
        elif kind == "bad_debt":
            out["bad_debt"] += float(e["shortfall"])
            out["fund"] += float(e["insurance_fund"])
        elif kind == "adl":
            out["adl"] += float(e["amount"])
            out["adl_count"] += 1
        elif kind == "socialised_loss":
            out["socialised"] += float(e["amount"])
        elif kind == "unpaid_shortfall":
            out["unpaid"] += float(e["amount"])
    return out


@dataclass(slots=True)
class _Audit:
    """Per asset, the sum of every balance but the outside world's (what the venue holds) and
    of every balance (0 when every entry balanced). ``full`` sums every balance (and keeps a
    copy); ``look`` adds what the balances touched since (named by the journal's postings)
    moved by, so a round costs what it touched."""

    ledger: Ledger
    inside: dict[str, Decimal] = field(default_factory=dict)
    every: dict[str, Decimal] = field(default_factory=dict)
    seen: int = 0
    last: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # as last summed

    def full(self) -> tuple[dict[str, str], dict[str, str]]:
        inside: dict[str, Decimal] = {}
        every: dict[str, Decimal] = {}
        for (owner, asset), value in self.ledger.balances.items():
            every[asset] = every.get(asset, ZERO) + value
            if owner != EXTERNAL:
                inside[asset] = inside.get(asset, ZERO) + value
        self.inside, self.every = inside, every
        self.last = dict(self.ledger.balances)
        self.seen = len(self.ledger.journal)
        return self._shown()

    def look(self) -> tuple[dict[str, str], dict[str, str]]:
        balances = self.ledger.balances
        touched = {(p.owner, p.asset) for entry in self.ledger.journal[self.seen:]
                   for p in entry.postings}
        self.seen = len(self.ledger.journal)
        for key in touched:
            owner, asset = key
            now = balances.get(key, ZERO)
            moved = now - self.last.get(key, ZERO)
            self.every[asset] = self.every.get(asset, ZERO) + moved
            if owner != EXTERNAL:
                self.inside[asset] = self.inside.get(asset, ZERO) + moved
            self.last[key] = now
        return self._shown()

    def _shown(self) -> tuple[dict[str, str], dict[str, str]]:
        return ({a: str(v) for a, v in sorted(self.inside.items())},
                {a: str(v) for a, v in sorted(self.every.items())})
