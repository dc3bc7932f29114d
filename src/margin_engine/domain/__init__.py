"""Immutable domain objects: instruments, positions, accounts, portfolios."""

from margin_engine.domain.accounts import Account, Portfolio, Position
from margin_engine.domain.instruments import (
    Instrument,
    InstrumentKind,
    MarginMode,
    OptionRight,
    Settlement,
    parse_shorthand,
)

__all__ = [
    "Account",
    "Instrument",
    "InstrumentKind",
    "MarginMode",
    "OptionRight",
    "Portfolio",
    "Position",
    "Settlement",
    "parse_shorthand",
]
