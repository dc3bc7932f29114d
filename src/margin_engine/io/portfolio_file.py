"""Portfolio JSON (``"schema": "margin-engine/portfolio/v1"``) -> Portfolio.

Every bad input is refused whole with the account, position index, field, value and expectation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from margin_engine.core.errors import InputError
from margin_engine.core.numbers import MAX_MAGNITUDE, parse_float
from margin_engine.core.timeutil import ns_to_iso, parse_timestamp
from margin_engine.domain.accounts import Account, Portfolio, Position
from margin_engine.domain.instruments import (
    Instrument,
    InstrumentKind,
    MarginMode,
    OptionRight,
    Settlement,
    parse_shorthand,
)
from margin_engine.io.jsonfields import (
    check_schema,
    load_document,
    require_list,
    require_name,
    require_object,
    require_string,
)

PORTFOLIO_SCHEMA = "margin-engine/portfolio/v1"
_ACCOUNT_FIELDS = frozenset(("id", "mode", "collateral", "positions"))
_POSITION_FIELDS = frozenset(("instrument", "size", "entry_price", "margin", "leverage"))
_T = TypeVar("_T")
_MODES = {mode.value: mode for mode in MarginMode}
_KINDS = {"spot": InstrumentKind.SPOT, "perpetual": InstrumentKind.PERPETUAL,
          "future": InstrumentKind.FUTURE, "option": InstrumentKind.OPTION}
_SETTLEMENTS = {"linear": Settlement.LINEAR, "inverse": Settlement.INVERSE}
_RIGHTS = {"call": OptionRight.CALL, "put": OptionRight.PUT}
# A JSON portfolio is parsed whole in memory (about 10x its size) at a few MB/s: up to 16 MiB
# (about 100,000 accounts) that is a few seconds and ~200 MB. Larger books take the bulk form.
MAX_JSON_BYTES = 16 * 2**20


def is_portfolio_file(path: Path) -> bool:
    """Whether a book given by path is a portfolio JSON (``.json``) rather than a bulk book
    (a CSV/Parquet positions file or a book folder)."""
    return path.suffix.lower() == ".json" and not path.is_dir()


def load_portfolio(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES) -> Portfolio:
    check_portfolio_size(path, max_bytes)
    return load_document(path, parse_portfolio)


def check_portfolio_size(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> None:
    """Refuse a JSON portfolio over ``max_bytes`` (it is parsed whole, slowly), pointing to
    the bulk form."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = 0  # reading names the missing or unreadable file
    if size > max_bytes:
        raise InputError(
            f"a JSON portfolio of at most {max_bytes:,} bytes; give larger books in the bulk "
            "form (a positions CSV/Parquet with --accounts, or a book folder; see README)",
            value=f"{size:,} bytes", source=str(path))


def parse_portfolio(document: Any) -> Portfolio:
    check_schema(document, expected=PORTFOLIO_SCHEMA)
    # "source": where the book came from (e.g. ccxt files and their snapshot), not read here
    require_object(document, field="", allowed=("schema", "accounts", "instruments", "source"),
                   required=("accounts",))
    declared = _parse_instruments(document.get("instruments", {}))
    raw_accounts = require_list(document["accounts"], field="accounts")
    if not raw_accounts:
        raise InputError("a portfolio with at least one account", field="accounts", value="[]")
    accounts: list[Account] = []
    seen: set[str] = set()
    instruments: dict[str, Instrument] = dict(declared)
    for index, raw in enumerate(raw_accounts):
        account = _parse_account(raw, index, declared, instruments)
        if account.id in seen:
            raise InputError("a unique account id", field="id", value=account.id,
                             account=account.id)
        seen.add(account.id)
        accounts.append(account)
    return Portfolio(accounts=tuple(accounts), instruments=instruments)


def resolve_instrument_name(name: str, declared: Mapping[str, Instrument]) -> Instrument:
    """Declared instrument, else shorthand; ValueError naming what is accepted otherwise."""
    if name in declared:
        return declared[name]
    try:
        # shorthands are ASCII: the pattern's \d would also take other scripts' digits
        instrument = parse_shorthand(name) if name.isascii() else None
    except ValueError as exc:
        raise ValueError(f"a valid instrument name ({exc})") from None
    if instrument is None:
        raise ValueError(
            "a known instrument: a shorthand such as 'BTC', 'BTC-PERP', 'BTC-27JUN25', "
            "'BTC-27JUN25-70000-C', or a name declared in 'instruments'"
        )
    if instrument.strike is not None and instrument.strike > MAX_MAGNITUDE:
        raise ValueError(f"a strike of magnitude <= {MAX_MAGNITUDE:g}")
    return instrument


def instrument_spec(instrument: Instrument) -> dict[str, Any]:
    """An instrument in the form of a portfolio's ``instruments`` entry (what
    ``_parse_instruments`` reads back to the same instrument)."""
    def text(value: Any, options: Mapping[str, Any]) -> str:
        return next(k for k, v in options.items() if v is value)

    spec: dict[str, Any] = {"kind": text(instrument.kind, _KINDS),
                            "underlying": instrument.underlying,
                            "settlement": text(instrument.settlement, _SETTLEMENTS),
                            "contract_size": instrument.contract_size}
    if instrument.expiry_ns is not None:
        spec["expiry"] = ns_to_iso(instrument.expiry_ns)
    if instrument.strike is not None and instrument.right is not None:
        spec["strike"] = instrument.strike
        spec["right"] = text(instrument.right, _RIGHTS)
    return spec


def resolves_by_name(instrument: Instrument) -> bool:
    """Whether the instrument's name alone (a shorthand) resolves to it: else a document
    holding it declares it."""
    try:
        return resolve_instrument_name(instrument.name, {}) == instrument
    except ValueError:
        return False


def _parse_account(
    raw: Any, index: int, declared: Mapping[str, Instrument], instruments: dict[str, Instrument]
) -> Account:
    field = f"accounts[{index}]"
    obj = require_object(raw, field=field, allowed=_ACCOUNT_FIELDS, required=("id", "mode"))
    account_id = require_name(obj["id"], field=f"{field}.id")
    try:
        mode = _choice(obj["mode"], _MODES, "mode")
        collateral = _parse_collateral(obj.get("collateral", {}))
        positions = _parse_positions(obj.get("positions", []), declared, instruments)
    except InputError as exc:
        raise exc.located(account=account_id) from None
    return Account(id=account_id, mode=mode, collateral=collateral,
                   positions=positions)


def _parse_collateral(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise InputError("an object of asset -> amount", field="collateral", value=raw)
    collateral: dict[str, float] = {}
    for asset, amount in raw.items():
        name = require_name(asset, field="collateral", expected="an asset symbol")
        collateral[name] = _number(amount, f"collateral.{name}", 0.0)
    return collateral


def _parse_positions(
    raw: Any, declared: Mapping[str, Instrument], instruments: dict[str, Instrument]
) -> tuple[Position, ...]:
    items = require_list(raw, field="positions")
    positions: list[Position] = []
    names: set[str] = set()
    for index, item in enumerate(items):
        try:
            obj = require_object(item, field="", allowed=_POSITION_FIELDS,
                                 required=("instrument", "size", "entry_price"))
            name = require_string(obj["instrument"], field="instrument",
                                  expected="an instrument name")
            try:
                instrument = instruments.get(name) or resolve_instrument_name(name, declared)
            except ValueError as exc:
                raise InputError(str(exc), field="instrument", value=name) from None
            if name in names:
                raise InputError("each instrument once per account (merge the two positions)",
                                 field="instrument", value=name)
            names.add(name)
            size, entry = obj["size"], obj["entry_price"]
            # a float within the bounds as it is (NaN and infinities fail ``<=``), else checked
            if type(size) is not float or not abs(size) <= MAX_MAGNITUDE:
                size = _number(size, "size")
            if type(entry) is not float or not 0.0 <= entry <= MAX_MAGNITUDE:
                entry = _number(entry, "entry_price", 0.0)
            if entry == 0.0 and not instrument.is_option:
                raise InputError("an entry price > 0 for a spot, perpetual or future",
                                 field="entry_price", value=obj["entry_price"])
            margin, leverage = _isolated_margin(obj) if "margin" in obj or "leverage" in obj \
                else (None, None)
        except InputError as exc:
            raise exc.located(position=index) from None
        instruments[name] = instrument
        positions.append(Position(instrument=name, size=size, entry_price=entry, margin=margin,
                                  leverage=leverage))
    return tuple(positions)


def _parse_instruments(raw: Any) -> dict[str, Instrument]:
    if not isinstance(raw, dict):
        raise InputError("an object of name -> instrument", field="instruments", value=raw)
    declared: dict[str, Instrument] = {}
    for given, spec in raw.items():
        name = require_name(given, field="instruments", expected="an instrument name")
        field = f"instruments.{name}"
        obj = require_object(
            spec, field=field,
            allowed=("kind", "underlying", "settlement", "contract_size", "expiry", "strike",
                     "right"),
            required=("kind", "underlying"),
        )
        kind = _choice(obj["kind"], _KINDS, f"{field}.kind")
        settlement = _choice(obj.get("settlement", "linear"), _SETTLEMENTS, f"{field}.settlement")
        underlying = require_name(obj["underlying"], field=f"{field}.underlying")
        contract_size = parse_float(obj.get("contract_size", 1), field=f"{field}.contract_size",
                                    strictly_positive=True)
        dated = kind in (InstrumentKind.FUTURE, InstrumentKind.OPTION)
        expiry = None
        if dated:
            if "expiry" not in obj:
                raise InputError("an expiry timestamp for a future or option",
                                 field=f"{field}.expiry")
            expiry = parse_timestamp(obj["expiry"], field=f"{field}.expiry")
        elif "expiry" in obj:
            raise InputError("no expiry for spot or perpetual", field=f"{field}.expiry",
                             value=obj["expiry"])
        strike = right = None
        if kind is InstrumentKind.OPTION:
            for key in ("strike", "right"):
                if key not in obj:
                    raise InputError("this field for an option", field=f"{field}.{key}")
            strike = parse_float(obj["strike"], field=f"{field}.strike", strictly_positive=True)
            right = _choice(obj["right"], _RIGHTS, f"{field}.right")
        else:
            for key in ("strike", "right"):
                if key in obj:
                    raise InputError("no strike or right for a non-option",
                                     field=f"{field}.{key}", value=obj[key])
        if kind is InstrumentKind.SPOT and settlement is Settlement.INVERSE:
            raise InputError("'linear' for spot", field=f"{field}.settlement", value="inverse")
        declared[name] = Instrument(
            name=name, kind=kind, underlying=underlying, settlement=settlement,
            contract_size=contract_size, expiry_ns=expiry, strike=strike, right=right,
        )
    return declared


def _number(value: Any, field: str, minimum: float | None = None) -> float:
    """``parse_float(value, field=field, minimum=minimum)``, with its result, for the plain
    numbers of a portfolio (a float, a finite Decimal, an int) taken without the exact decimal
    round trip; anything else, or out of bounds, goes through ``parse_float`` and its message.
    """
    kind = type(value)
    plain = kind is float or (kind is Decimal and value.is_finite()) or (
        kind is int and -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE)
    if plain:
        number = float(value)
        if (math.isfinite(number) and abs(number) <= MAX_MAGNITUDE
                and (minimum is None or number >= minimum)):
            return number
    return parse_float(value, field=field, minimum=minimum)


def _choice(value: Any, options: Mapping[str, _T], field: str) -> _T:
    if not isinstance(value, str) or value not in options:
        raise InputError(f"one of {sorted(options)}", field=field, value=value)
    return options[value]


def _isolated_margin(obj: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """A position's own isolated margin: ``margin`` (USD, >= 0) or ``leverage`` (> 0), not
    both."""
    if "margin" in obj and "leverage" in obj:
        raise InputError("either margin or leverage, not both", field="margin",
                         value=obj["margin"])
    margin = parse_float(obj["margin"], field="margin", minimum=0.0) if "margin" in obj \
        else None
    leverage = parse_float(obj["leverage"], field="leverage", strictly_positive=True) \
        if "leverage" in obj else None
    return margin, leverage
