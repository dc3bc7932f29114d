"""Instruments: spot, perpetual, dated future, European option; linear or inverse settlement.

Shorthand names resolve to linear instruments with contract size 1 coin:
``BTC`` (spot), ``BTC-PERP``, ``BTC-27JUN25`` (future), ``BTC-27JUN25-70000-C`` (option),
each dated instrument expiring at 08:00 UTC on its date.

Units: a *linear* instrument's size is in contracts of ``contract_size`` coins and its prices are
USD per coin. An *inverse* perpetual or future has contracts of ``contract_size`` USD, prices in
USD per coin and P&L paid in coin. An *inverse* option has contracts of ``contract_size`` coins and
its premium is quoted in coin per coin (Deribit style).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import expiry_code_to_ns, ns_to_iso


class InstrumentKind(enum.IntEnum):
    SPOT = 0
    PERPETUAL = 1
    FUTURE = 2
    OPTION = 3


class Settlement(enum.IntEnum):
    LINEAR = 0
    INVERSE = 1


class OptionRight(enum.IntEnum):
    CALL = 0
    PUT = 1


class MarginMode(enum.Enum):
    ISOLATED = "isolated"
    CROSS = "cross"
    PORTFOLIO = "portfolio"


@dataclass(frozen=True, slots=True, kw_only=True)
class Instrument:
    """A tradable contract; ``expiry_ns``/``strike``/``right`` are set exactly where they apply."""

    name: str
    kind: InstrumentKind
    underlying: str
    settlement: Settlement = Settlement.LINEAR
    contract_size: float = 1.0
    expiry_ns: int | None = None
    strike: float | None = None
    right: OptionRight | None = None

    def __post_init__(self) -> None:
        dated = self.kind in (InstrumentKind.FUTURE, InstrumentKind.OPTION)
        if dated != (self.expiry_ns is not None):
            raise ValueError(f"{self.name}: expiry is required exactly for futures and options")
        is_option = self.kind is InstrumentKind.OPTION
        if is_option != (self.strike is not None) or is_option != (self.right is not None):
            raise ValueError(f"{self.name}: strike and right are required exactly for options")
        if not self.contract_size > 0:
            raise ValueError(f"{self.name}: contract size must be > 0")
        if self.strike is not None and not self.strike > 0:
            raise ValueError(f"{self.name}: strike must be > 0")
        if self.kind is InstrumentKind.SPOT and self.settlement is Settlement.INVERSE:
            raise ValueError(f"{self.name}: spot cannot be inverse")

    @property
    def is_option(self) -> bool:
        return self.kind is InstrumentKind.OPTION


_SYMBOL = r"[A-Z][A-Z0-9]{0,15}"
_SHORTHAND = re.compile(
    rf"^(?P<u>{_SYMBOL})"
    r"(?:-(?P<tail>PERP|(?P<exp>\d{1,2}[A-Z]{3}\d{2})"
    r"(?:-(?P<strike>\d+(?:\.\d+)?)-(?P<right>[CP]))?))?$",
    re.ASCII,
)


@functools.lru_cache(maxsize=16384)
def parse_shorthand(name: str) -> Instrument | None:
    """Shorthand name -> linear instrument of contract size 1, or None if it is not one
    (kept per name: instruments are immutable, and a book names the same ones again and again).

    Raises ValueError for names of the right shape with an impossible date or zero strike.
    """
    match = _SHORTHAND.match(name)
    if match is None:
        return None
    underlying = match.group("u")
    if match.group("tail") is None:
        return Instrument(name=name, kind=InstrumentKind.SPOT, underlying=underlying)
    if match.group("tail") == "PERP":
        return Instrument(name=name, kind=InstrumentKind.PERPETUAL, underlying=underlying)
    expiry = expiry_code_to_ns(match.group("exp"))
    if match.group("strike") is None:
        return Instrument(
            name=name, kind=InstrumentKind.FUTURE, underlying=underlying, expiry_ns=expiry
        )
    strike = float(match.group("strike"))
    if strike <= 0:
        raise ValueError(f"strike must be > 0 in {name!r}")
    right = OptionRight.CALL if match.group("right") == "C" else OptionRight.PUT
    return Instrument(
        name=name,
        kind=InstrumentKind.OPTION,
        underlying=underlying,
        expiry_ns=expiry,
        strike=strike,
        right=right,
    )


def resolve_name(name: str, declared: Mapping[str, Instrument]) -> Instrument | None:
    """A declared instrument by name, else the shorthand it spells, else None (also for names
    of a shorthand shape with an impossible date or strike)."""
    if name in declared:
        return declared[name]
    try:
        return parse_shorthand(name)
    except ValueError:
        return None


def check_trades_at(instrument: Instrument, timestamp_ns: int, *, field: str,
                    value: object) -> None:
    """InputError unless ``instrument`` still trades at ``timestamp_ns``: a dated one expired
    at or before it is settled (at 08:00 UTC of its expiry day), no longer traded."""
    if instrument.expiry_ns is not None and instrument.expiry_ns <= timestamp_ns:
        raise InputError(f"an instrument that trades at the market's time "
                         f"{ns_to_iso(timestamp_ns)} (it expired at "
                         f"{ns_to_iso(instrument.expiry_ns)}: settled, no longer traded)",
                         field=field, value=value)
