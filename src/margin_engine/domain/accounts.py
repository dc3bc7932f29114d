"""Positions, accounts and a portfolio (a set of accounts plus the instruments they reference)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from margin_engine.domain.instruments import Instrument, MarginMode


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """Signed size in contracts (negative = short) and average entry price.

    ``entry_price`` is USD per coin for linear instruments and inverse perps/futures, and coin per
    coin for inverse options.
    """

    instrument: str
    size: float
    entry_price: float
    margin: float | None = None  # isolated margin in USD, or
    leverage: float | None = None  # a leverage on the entry notional (isolated accounts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    id: str
    mode: MarginMode
    collateral: Mapping[str, float]
    positions: tuple[Position, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Portfolio:
    """Accounts in file order and every instrument they reference, by name."""

    accounts: tuple[Account, ...]
    instruments: Mapping[str, Instrument] = field(default_factory=dict)
