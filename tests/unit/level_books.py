"""Seeded random books for the liquidation-level tests: every kind of instrument the engine
knows (linear and inverse perps, futures with and without a market mark, options on forwards
and on the index, inverse options, spot, settled futures and options), collateral in
stablecoins, bridged stablecoins and coins (one a collateral-only underlying), every margin
mode, isolated margins and leverages, and accounts from deep in the money to under water."""

from __future__ import annotations

from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook, bind_market
from margin_engine.book.columnar import book_from_columns
from margin_engine.core.timeutil import parse_timestamp
from margin_engine.domain.instruments import (
    Instrument,
    InstrumentKind,
    OptionRight,
    Settlement,
    parse_shorthand,
)
from margin_engine.io.market_file import parse_market

SPOT = {"BTC": 50000.0, "ETH": 2000.0}
EXPIRIES = ("30MAY25", "6JUN25", "27JUN25", "26SEP25")  # the first one is settled


def level_market() -> dict[str, Any]:
    return {
        "schema": "margin-engine/market/v1",
        "timestamp": "2025-06-01T00:00:00Z",
        "underlyings": {
            "BTC": {"index": 50000, "vol": {"type": "atm_by_expiry",
                                            "points": {"6JUN25": 0.6, "27JUN25": 0.55,
                                                       "26SEP25": 0.5}}},
            "ETH": {"index": 2000, "vol": {"type": "flat", "sigma": 0.7}},
            "SOL": {"index": 150},
        },
        "assets": {"USDC": {"price": 0.999}, "USDT": {"price": 1.0},
                   "BTC": {"price": 50000}, "ETH": {"price": 2000}, "SOL": {"price": 150}},
        "marks": {"BTC-26SEP25": 50900, "ETH-27JUN25": 2010, "BTC-PERP": 50020},
        "correlation": {"BTC": {"ETH": 0.8, "SOL": 0.6}, "ETH": {"SOL": 0.5}},
        "settlements": {"BTC-30MAY25": 49500},
    }


def _instruments() -> list[Instrument]:
    names = []
    for u, spot in SPOT.items():
        names += [u, f"{u}-PERP"]
        names += [f"{u}-{e}" for e in EXPIRIES]
        for e in EXPIRIES:
            names += [f"{u}-{e}-{round(spot * m)}-{r}" for m in (0.7, 0.9, 1.0, 1.1, 1.4)
                      for r in "CP"]
    out = [i for i in (parse_shorthand(n) for n in names) if i is not None]
    expiry = parse_timestamp("2025-06-27T08:00:00Z", field="expiry")
    out += [
        Instrument(name="BTC-PERP-INV", kind=InstrumentKind.PERPETUAL, underlying="BTC",
                   settlement=Settlement.INVERSE, contract_size=10.0),
        Instrument(name="BTC-27JUN25-INV", kind=InstrumentKind.FUTURE, underlying="BTC",
                   settlement=Settlement.INVERSE, contract_size=100.0, expiry_ns=expiry),
        Instrument(name="BTC-27JUN25-52000-C-INV", kind=InstrumentKind.OPTION,
                   underlying="BTC", settlement=Settlement.INVERSE, expiry_ns=expiry,
                   strike=52000.0, right=OptionRight.CALL),
        Instrument(name="BTC-27JUN25-45000-P-INV", kind=InstrumentKind.OPTION,
                   underlying="BTC", settlement=Settlement.INVERSE, expiry_ns=expiry,
                   strike=45000.0, right=OptionRight.PUT),
    ]
    return out


def random_level_book(accounts: int, seed: int, *, max_positions: int = 6,
                      modes: tuple[int, ...] = (0, 1, 2),
                      asked_margins: bool = True) -> BoundBook:
    """A seeded book bound to ``level_market()``; account modes drawn from ``modes``; with
    ``asked_margins`` some isolated positions ask for their own margin or leverage (which may
    exceed the collateral: the models hold what was asked, the readers refuse it)."""
    rng = np.random.default_rng(seed)
    instruments = _instruments()
    n_inst = len(instruments)
    counts = rng.integers(1, max_positions + 1, accounts)
    position_account = np.repeat(np.arange(accounts, dtype=np.int64), counts)
    inst = np.concatenate([rng.choice(n_inst, size=int(c), replace=False) for c in counts])
    n_pos = inst.size
    spot = np.array([SPOT[i.underlying] for i in instruments])[inst]
    inverse = np.array([i.settlement is Settlement.INVERSE for i in instruments])[inst]
    option = np.array([i.kind is InstrumentKind.OPTION for i in instruments])[inst]
    size = np.round(rng.normal(0.0, 1.0, n_pos) * np.where(spot > 10000, 1.0, 15.0), 3)
    size = np.where(inverse & ~option, np.round(size * 5000.0), size)
    size[size == 0.0] = 0.5
    entry = spot * rng.uniform(0.85, 1.15, n_pos)
    entry = np.where(option, spot * rng.uniform(0.005, 0.15, n_pos), entry)
    entry = np.where(inverse & option, rng.uniform(0.005, 0.1, n_pos), entry)
    assets = ("BTC", "ETH", "SOL", "USDC", "USDC@arbitrum", "USDT")
    collateral = np.zeros((accounts, len(assets)))
    scale = rng.choice([2e3, 2e4, 2e5], accounts)
    collateral[:, 3] = rng.uniform(0.0, 1.0, accounts) * scale
    pick = rng.random((accounts, len(assets)))
    collateral[:, 0] = np.where(pick[:, 0] < 0.3, rng.uniform(0.0, 3.0, accounts), 0.0)
    collateral[:, 1] = np.where(pick[:, 1] < 0.2, rng.uniform(0.0, 40.0, accounts), 0.0)
    collateral[:, 2] = np.where(pick[:, 2] < 0.15, rng.uniform(0.0, 500.0, accounts), 0.0)
    collateral[:, 4] = np.where(pick[:, 4] < 0.2, rng.uniform(0.0, 1.0, accounts) * scale, 0.0)
    collateral[:, 5] = np.where(pick[:, 5] < 0.2, rng.uniform(0.0, 1.0, accounts) * scale, 0.0)
    margin = np.where(rng.random(n_pos) < 0.1, rng.uniform(100.0, 5000.0, n_pos), np.nan)
    leverage = np.where((rng.random(n_pos) < 0.1) & np.isnan(margin),
                        rng.choice([5.0, 10.0, 20.0], n_pos), np.nan)
    book = book_from_columns(
        account_ids=[f"r{k}" for k in range(accounts)],
        mode=rng.choice(np.array(modes, dtype=np.int32), accounts),
        instruments=instruments, position_account=position_account,
        position_instrument=inst.astype(np.int32), size=size, entry_price=entry,
        assets=assets, collateral=collateral,
        position_margin=margin if asked_margins else None,
        position_leverage=leverage if asked_margins else None)
    return bind_market(book, parse_market(level_market()))


def declared_instruments_document() -> dict[str, Any]:
    """The book's non-shorthand instruments as a portfolio file declares them."""
    return {inst.name: instrument_document(inst) for inst in _instruments()
            if parse_shorthand(inst.name) is None}


def instrument_document(inst: Instrument) -> dict[str, Any]:
    """An instrument as a portfolio file's ``instruments`` entry, written here by hand."""
    from margin_engine.core.timeutil import ns_to_iso

    spec: dict[str, Any] = {"kind": inst.kind.name.lower(), "underlying": inst.underlying,
                            "settlement": inst.settlement.name.lower(),
                            "contract_size": inst.contract_size}
    if inst.expiry_ns is not None:
        spec["expiry"] = ns_to_iso(inst.expiry_ns)
    if inst.strike is not None and inst.right is not None:
        spec["strike"] = inst.strike
        spec["right"] = inst.right.name.lower()
    return spec
