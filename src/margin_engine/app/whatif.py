"""Pre-trade what-if: an account's margin and liquidation prices before and after some orders.

Each order (instrument, signed size, fill price) is merged into the account's position in that
instrument the way a venue books a fill, keeping every unrealised P&L exact:

* opening or adding (same sign, or no position): size s + o at the average entry that keeps
  the P&L of both legs at every mark, (s e + o p) / (s + o) (inverse perps and futures, whose
  P&L is in 1 / price: (s + o) / (s / e + o / p));
* reducing (opposite sign, |o| <= |s|): size s + o at the same entry; the closed part's P&L at
  the fill price is realised into USD cash (priced 1, no haircut);
* flipping (|o| > |s|): the whole position is closed (realised as above) and the rest opened at
  the fill price.

So the change in equity is o x (mark - p) for a linear instrument (the fill's P&L at the mark),
and the margins after are those of the merged book under the same model.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook, resized
from margin_engine.core.errors import InputError
from margin_engine.core.kept import Recent
from margin_engine.core.numbers import parse_float
from margin_engine.domain.instruments import (
    Instrument,
    InstrumentKind,
    MarginMode,
    Settlement,
    check_trades_at,
)
from margin_engine.margin.config import RiskConfig
from margin_engine.market.snapshot import MarketSnapshot

from .compute import LiquidationChoice, ModelChoice, bind, compute_bound, model_choice
from .results import AccountMargin

CASH = "USD"  # realised P&L is credited in USD cash
_MODES = {mode.value for mode in MarginMode}


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """A fill: ``size`` contracts (negative: sell) of ``instrument`` at ``price`` (the
    instrument's own price convention: USD per coin, or coin per coin for inverse options)."""

    instrument: str
    size: float
    price: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MarginChange:
    """After minus before."""

    equity: float
    adjusted_equity: float
    initial_margin: float
    maintenance_margin: float
    excess: float
    liquidation_prices: Mapping[str, float | None]  # per underlying: nearest after - before

    def to_json(self) -> dict[str, Any]:
        return {"equity": self.equity, "adjusted_equity": self.adjusted_equity,
                "initial_margin": self.initial_margin,
                "maintenance_margin": self.maintenance_margin, "excess": self.excess,
                "liquidation_prices": dict(self.liquidation_prices)}


@dataclass(frozen=True, slots=True, kw_only=True)
class WhatIf:
    account: str
    model: str
    orders: tuple[Order, ...]
    realised_pnl: float  # USD credited to cash by reducing or flipping orders
    before: AccountMargin
    after: AccountMargin
    change: MarginChange

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "model": self.model,
                "orders": [{"instrument": o.instrument, "size": o.size, "price": o.price}
                           for o in self.orders],
                "realised_pnl": self.realised_pnl, "before": self.before.to_json(),
                "after": self.after.to_json(), "change": self.change.to_json()}


def _instrument_of(name: str, declared: Mapping[str, Instrument], field: str) -> Instrument:
    from margin_engine.io.portfolio_file import resolve_instrument_name

    try:
        return resolve_instrument_name(name, declared)
    except ValueError as exc:
        raise InputError(str(exc), field=field, value=name) from None


def _realised_usd(instrument: Instrument, closed: float, entry: float, price: float,
                  index: float) -> float:
    """P&L in USD of closing ``closed`` contracts (signed like the position) at ``price``, in
    the engine's valuation: quantity x (price - entry) in USD."""
    size_cs = closed * instrument.contract_size
    inverse = instrument.settlement is Settlement.INVERSE
    if inverse and instrument.kind is not InstrumentKind.OPTION:
        return size_cs / entry * (price - entry)
    if inverse:  # inverse option: premiums in coin, valued at the index
        return size_cs * index * (price - entry)
    return size_cs * (price - entry)


def _average_entry(instrument: Instrument, size: float, entry: float, order: float,
                   price: float) -> float:
    total = size + order
    if instrument.settlement is Settlement.INVERSE and instrument.kind is not \
            InstrumentKind.OPTION:
        return total / (size / entry + order / price)
    return (size * entry + order * price) / total


def merge_orders(positions: Mapping[str, tuple[float, float]], orders: Sequence[Order],
                 declared: Mapping[str, Instrument], market: MarketSnapshot
                 ) -> tuple[dict[str, tuple[float, float]], float]:
    """The positions (instrument -> (size, entry price)) after the orders, and the USD P&L
    they realise."""
    merged = dict(positions)
    realised = 0.0
    for k, order in enumerate(orders):
        field = f"orders[{k}]"
        instrument = _instrument_of(order.instrument, declared, f"{field}.instrument")
        # (parse_float: a number, not true or false, finite, of magnitude <= 1e15)
        o = parse_float(order.size, field=f"{field}.size")
        if o == 0.0:
            raise InputError("a non-zero signed size in contracts", field=f"{field}.size",
                             value=order.size)
        p = parse_float(order.price, field=f"{field}.price")
        if p < 0.0 or (p == 0.0 and instrument.kind is not InstrumentKind.OPTION):
            raise InputError("a price > 0 (>= 0 for an option premium)",
                             field=f"{field}.price", value=order.price)
        check_trades_at(instrument, market.timestamp_ns, field=f"{field}.instrument",
                        value=order.instrument)
        if instrument.underlying not in market.underlyings:
            raise InputError(f"an instrument on an underlying of the market "
                             f"{sorted(market.underlyings)}", field=f"{field}.instrument",
                             value=order.instrument)
        index = market.underlyings[instrument.underlying].index
        size, entry = merged.get(order.instrument, (0.0, 0.0))
        if size == 0.0 or (size > 0.0) == (o > 0.0):
            merged[order.instrument] = (size + o, p if size == 0.0 else
                                        _average_entry(instrument, size, entry, o, p))
            continue
        closed = size if abs(o) >= abs(size) else -o
        realised += _realised_usd(instrument, closed, entry, p, index)
        rest = size + o
        if rest == 0.0:
            del merged[order.instrument]
        else:
            merged[order.instrument] = (rest, entry if abs(o) < abs(size) else p)
    return merged, realised


def _account_document(account: Mapping[str, Any], positions: Mapping[str, tuple[float, float]],
                      cash: float) -> dict[str, Any]:
    collateral = dict(account.get("collateral", {}))
    if cash != 0.0:
        collateral[CASH] = float(collateral.get(CASH, 0.0)) + cash
    return {**account, "collateral": collateral,
            "positions": [{"instrument": name, "size": size, "entry_price": entry}
                          for name, (size, entry) in positions.items()]}


def bound_after(account: Mapping[str, Any], positions: Mapping[str, tuple[float, float]],
                cash: float, market: MarketSnapshot, instruments: Mapping[str, Any] | None
                ) -> BoundBook:
    """The account after the orders (``positions``, ``cash`` USD realised) bound to
    ``market``. A realised loss beyond the account's USD balance leaves that balance
    negative: a debt counted at face value (haircuts take nothing off a negative balance).
    A portfolio file holds no negative balance, so it is set on the bound book."""
    account_after = _account_document(account, positions, cash)
    owed = float(account_after["collateral"].get(CASH, 0.0))
    if owed < 0.0:
        account_after["collateral"][CASH] = 0.0
    document: dict[str, Any] = {"schema": "margin-engine/portfolio/v1",
                                "accounts": [account_after]}
    if instruments:
        document["instruments"] = dict(instruments)
    bound = bind(document, market)
    if owed >= 0.0:
        return bound
    collateral = bound.book.collateral.copy()
    collateral[0, bound.book.assets.index(CASH)] = owed
    return resized(bound, replace(bound.book, collateral=collateral))


def _positions_of(account: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for item in account.get("positions", []):
        out[str(item["instrument"])] = (float(item["size"]), float(item["entry_price"]))
    return out


def account_margin(account: Mapping[str, Any], market: MarketSnapshot, config: RiskConfig, *,
                   model: str | ModelChoice = ModelChoice.ACCOUNT,
                   instruments: Mapping[str, Any] | None = None,
                   liquidation: bool = True, explain: bool = False) -> AccountMargin:
    """One account (a portfolio document's account object) margined at ``market``."""
    document: dict[str, Any] = {"schema": "margin-engine/portfolio/v1", "accounts": [account]}
    if instruments:
        document["instruments"] = dict(instruments)
    return _margin_of(bind(document, market), config, _own_model(account, model), liquidation,
                      explain)


def _own_model(account: Mapping[str, Any], model: str | ModelChoice) -> str | ModelChoice:
    """``account``: the account's own mode's model (the same numbers as running every
    model, without running the others)."""
    if model_choice(model) is ModelChoice.ACCOUNT and account.get("mode") in _MODES:
        return ModelChoice(account["mode"])
    return model


def _margin_of(bound: BoundBook, config: RiskConfig, model: str | ModelChoice,
               liquidation: bool, explain: bool = False) -> AccountMargin:
    report = compute_bound(bound, config, model=model, explain=explain,
                           liquidation=LiquidationChoice.ON if liquidation
                           else LiquidationChoice.OFF)
    return report.accounts[0]


def _with_cash(market: MarketSnapshot) -> MarketSnapshot:
    """``market`` with USD priced at 1 (the same object when it prices USD; else one kept
    per market)."""
    from margin_engine.core.kept import KEPT

    if CASH in market.asset_prices:
        return market
    return KEPT.get((market,), "with_cash", lambda: replace(
        market, asset_prices={**market.asset_prices, CASH: 1.0}))


def what_if(account: Mapping[str, Any], orders: Sequence[Order], market: MarketSnapshot,
            config: RiskConfig | None = None, *, model: str | ModelChoice = ModelChoice.ACCOUNT,
            instruments: Mapping[str, Any] | None = None, liquidation: bool = True,
            before: AccountMargin | None = None, content: Hashable | None = None) -> WhatIf:
    """``account`` (an account object of a portfolio document; ``instruments``: the
    portfolio's declared instruments) before and after ``orders`` at ``market``. ``before``:
    the account's margin already computed with the same inputs (a cache); ``content``: a key
    that stands for the account's and the instruments' content (by default their JSON), under
    which the account's bound book is kept between calls."""
    if not orders:
        raise InputError("at least one order", field="orders", value="[]")
    risk = config if config is not None else _default_config()
    declared = _declared(instruments)
    held = _positions_of(account)
    positions, realised = merge_orders(held, orders, declared, market)
    after_market = _with_cash(market) if realised != 0.0 else market
    if content is None:
        content = _content(account, instruments)
    bound = _kept_bound(account, market, instruments, content)
    if before is None:
        before = _account_before(account, market, risk, model, instruments, liquidation,
                                 content, bound)
    after_bound = None if bound is None else after_orders(bound, held, positions, realised)
    if after_bound is None:
        after_bound = bound_after(account, positions, realised, after_market, instruments)
    after = _margin_of(after_bound, risk, _own_model(account, model), liquidation)
    return WhatIf(account=before.id, model=before.model, orders=tuple(orders),
                  realised_pnl=realised, before=before, after=after,
                  change=change_of(before, after))


def forget_kept() -> None:
    """Drop the margins kept before orders and the instrument states kept for liquidation
    searches (benchmarks of the first what-if on an account)."""
    from margin_engine.core.kept import KEPT
    from margin_engine.liquidation.vector_levels import STATE_TABLES

    KEPT.clear()
    _BEFORE.clear()
    _BOUND.clear()
    STATE_TABLES.clear()


_DECLARED = Recent(16)  # declared instruments (JSON) -> parsed instruments
_BEFORE = Recent(256)  # account, model, instruments, liquidation -> (market, config, margin)
_BOUND = Recent(256)  # account, instruments -> (market, the account bound to it)
_DEFAULT: list[RiskConfig] = []


def _default_config() -> RiskConfig:
    if not _DEFAULT:
        _DEFAULT.append(RiskConfig())
    return _DEFAULT[0]


def _declared(instruments: Mapping[str, Any] | None) -> Mapping[str, Instrument]:
    """The portfolio's declared instruments, parsed (once per distinct declaration)."""
    from margin_engine.io.portfolio_file import parse_portfolio

    key = json.dumps(instruments, sort_keys=True, default=str) if instruments else "{}"
    found: Mapping[str, Instrument] | None = _DECLARED.get(key)
    if found is None:
        found = parse_portfolio({"schema": "margin-engine/portfolio/v1",
                                 "instruments": dict(instruments or {}),
                                 "accounts": [{"id": "-", "mode": "cross"}]}).instruments
        _DECLARED.put(key, found)
    return found


def _account_before(account: Mapping[str, Any], market: MarketSnapshot, config: RiskConfig,
                    model: str | ModelChoice, instruments: Mapping[str, Any] | None,
                    liquidation: bool, content: Hashable, bound: BoundBook | None = None
                    ) -> AccountMargin:
    """The account's margin before the orders: computed once per account content and
    declared instruments (``content``: their JSON), model, market and config (the same
    objects: both are immutable), then reused by the next what-ifs on that account.
    ``bound``: the account's kept book (``_kept_bound``), margined instead of binding the
    account again (its USD column adds exactly nothing)."""
    key = (content, str(model), liquidation)
    found = _BEFORE.get(key)
    if found is not None and found[0] is market and found[1] is config:
        margin: AccountMargin = found[2]
        return margin
    margin = account_margin(account, market, config, model=model, instruments=instruments,
                            liquidation=liquidation) if bound is None else \
        _margin_of(bound, config, _own_model(account, model), liquidation)
    _BEFORE.put(key, (market, config, margin))
    return margin


def _content(account: Mapping[str, Any], instruments: Mapping[str, Any] | None) -> str:
    """The account's and declared instruments' content as a key (JSON, keys sorted)."""
    return json.dumps([account, instruments or {}], sort_keys=True, default=str)


def _kept_bound(account: Mapping[str, Any], market: MarketSnapshot,
                instruments: Mapping[str, Any] | None, content: Hashable) -> BoundBook | None:
    """The account's one-account book bound to ``market`` with USD priced at 1 and a USD
    balance (0 when it holds none: the column the orders' realised P&L goes to; a zero
    balance adds exactly nothing to any sum), kept per account content and declared
    instruments (``content``: their JSON) and market, bound on first use. None when the
    account cannot be bound (the what-if then goes the whole way and reports the error)."""
    found = _BOUND.get(content)
    if found is not None and found[0] is market:
        bound: BoundBook = found[1]
        return bound
    with_cash = {**account, "collateral": {CASH: 0.0, **account.get("collateral", {})}}
    document: dict[str, Any] = {"schema": "margin-engine/portfolio/v1", "accounts": [with_cash]}
    if instruments:
        document["instruments"] = dict(instruments)
    try:
        bound = bind(document, _with_cash(market))
    except (InputError, TypeError, ValueError):
        return None
    _BOUND.put(content, (market, bound))
    return bound


def after_orders(bound: BoundBook, held: Mapping[str, tuple[float, float]],
                 positions: Mapping[str, tuple[float, float]], cash: float
                 ) -> BoundBook | None:
    """The one-account ``bound`` book (``_kept_bound``: holding ``held``, instrument ->
    (size, entry)) with ``positions`` instead and ``cash`` USD more: the book the account's
    document after the orders binds to, without parsing and binding it again (positions and
    collateral re-priced, the instruments' prices and everything derived from them kept).
    None when that book differs in more than sizes, entries and USD cash (an instrument
    opened or closed, isolated margins or leverage given per position, which the merged
    document does not carry)."""
    book = bound.book
    if book.account_count != 1 or CASH not in book.assets or list(held) != list(positions) \
            or book.position_margin is not None or book.position_leverage is not None:
        return None
    names = [book.instruments.instruments[int(i)].name for i in book.position_instrument]
    if names != list(positions):
        return None
    collateral = book.collateral
    if cash != 0.0:
        collateral = collateral.copy()
        column = book.assets.index(CASH)
        collateral[0, column] = float(collateral[0, column]) + cash
    size = np.array([positions[n][0] for n in names], dtype=np.float64)
    entry = np.array([positions[n][1] for n in names], dtype=np.float64)
    return resized(bound, replace(book, size=size, entry_price=entry, collateral=collateral))


def change_of(before: AccountMargin, after: AccountMargin) -> MarginChange:
    levels: dict[str, float | None] = {}
    for u in sorted(set(before.underlyings) | set(after.underlyings)):
        was = before.underlyings.get(u)
        now = after.underlyings.get(u)
        a = None if was is None or was.liquidation is None else was.liquidation.nearest
        b = None if now is None or now.liquidation is None else now.liquidation.nearest
        levels[u] = None if a is None or b is None else b - a
    return MarginChange(equity=after.equity - before.equity,
                        adjusted_equity=after.adjusted_equity - before.adjusted_equity,
                        initial_margin=after.initial_margin - before.initial_margin,
                        maintenance_margin=after.maintenance_margin - before.maintenance_margin,
                        excess=after.excess - before.excess, liquidation_prices=levels)
