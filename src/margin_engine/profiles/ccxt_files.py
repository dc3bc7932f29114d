"""Real account files in ccxt's unified structures, read offline (ccxt is a file format here,
not a dependency; nothing touches the network).

* ``fetch_positions`` JSON: a list of position structures (``symbol``, ``contracts``,
  ``contractSize``, ``side`` long/short, ``entryPrice``, ``markPrice``, ``marginMode``
  cross/isolated, ``collateral`` (isolated margin), ``timestamp`` / ``datetime``).
* ``fetch_balance`` JSON: ``{"total": {"USDT": ..., "BTC": ...}, "timestamp", "datetime"}``.
* ``fetch_leverage_tiers`` JSON: ``{symbol: [{"tier", "minNotional", "maxNotional",
  "maintenanceMarginRate", "maxLeverage", "info": {...}}]}``.

Unified symbols: ``BASE/QUOTE:SETTLE`` is a perpetual (linear when SETTLE is the quote, inverse
when it is the base), ``...-YYMMDD`` a dated future and ``...-YYMMDD-STRIKE-C|P`` an option,
expiring at 08:00 UTC on that date. A position becomes a portfolio position in contracts of its
``contractSize`` (coins for linear contracts, USD for inverse ones); an isolated position keeps
its ``collateral`` as its own margin. The snapshot date (the newest ``timestamp`` of the files)
is recorded with the portfolio.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from margin_engine.core.errors import InputError
from margin_engine.core.names import check_name
from margin_engine.core.numbers import parse_float
from margin_engine.io.jsonfields import loads_unique
from margin_engine.profiles.brackets import BracketTable, table_from_ccxt

_SYMBOL = re.compile(r"^(?P<base>[A-Z0-9]+)/(?P<quote>[A-Z0-9]+):(?P<settle>[A-Z0-9]+)"
                     r"(?:-(?P<date>\d{6})(?:-(?P<strike>\d+(?:\.\d+)?)-(?P<right>[CP]))?)?$")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


@dataclass(frozen=True, slots=True, kw_only=True)
class CcxtAccount:
    """A portfolio document (margin-engine/portfolio/v1) read from ccxt files, the snapshot
    time (ISO, UTC) and the marks the files carried (by instrument name)."""

    document: dict[str, Any]
    snapshot: str | None
    marks: dict[str, float]


def _load(path: Path) -> Any:
    try:
        return loads_unique(Path(path).read_text(encoding="utf-8"))
    except InputError as exc:
        raise exc.located(source=str(path)) from None
    except OSError as exc:
        raise InputError(f"a readable ccxt JSON file ({exc.strerror})", source=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"valid JSON ({exc.msg} at line {exc.lineno})",
                         source=str(path)) from None


def _timestamp(item: Mapping[str, Any], source: str, where: str) -> int | None:
    stamp = item.get("timestamp")
    if stamp is None:
        return None
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or stamp < 0:
        raise InputError("a timestamp in milliseconds since 1970 (ccxt's unit)",
                         field=f"{where}.timestamp", value=stamp, source=source)
    return int(stamp)


def instrument_of(symbol: str, contract_size: float, *, source: str, where: str
                  ) -> tuple[str, dict[str, Any]]:
    """(engine name, declared instrument) of a ccxt unified symbol."""
    match = _SYMBOL.match(symbol)
    if match is None:
        raise InputError("a ccxt unified derivatives symbol such as 'BTC/USDT:USDT', "
                         "'BTC/USD:BTC-250926' or 'BTC/USD:BTC-250926-70000-C'",
                         field=f"{where}.symbol", value=symbol, source=source)
    base, quote, settle = match.group("base"), match.group("quote"), match.group("settle")
    if settle not in (base, quote):
        raise InputError("a settlement currency equal to the base (inverse) or the quote "
                         "(linear)", field=f"{where}.symbol", value=symbol, source=source)
    inverse = settle == base
    spec: dict[str, Any] = {"underlying": base,
                            "settlement": "inverse" if inverse else "linear",
                            "contract_size": contract_size}
    date = match.group("date")
    if date is None:
        spec["kind"] = "perpetual"
        return f"{base}-{quote}-{settle}-PERP", spec
    try:
        day = dt.date(2000 + int(date[:2]), int(date[2:4]), int(date[4:]))
    except ValueError:
        raise InputError("an expiry date YYMMDD", field=f"{where}.symbol", value=symbol,
                         source=source) from None
    code = f"{day.day}{_MONTHS[day.month - 1]}{day.year % 100:02d}"
    spec["expiry"] = f"{day.isoformat()}T08:00:00Z"
    if match.group("strike") is None:
        spec["kind"] = "future"
        return f"{base}-{quote}-{settle}-{code}", spec
    spec.update(kind="option", strike=float(match.group("strike")),
                right="call" if match.group("right") == "C" else "put")
    return f"{base}-{quote}-{settle}-{code}-{match.group('strike')}-{match.group('right')}", spec


def read_ccxt_account(positions: Path, balance: Path, *, account_id: str = "account",
                      mode: str | None = None) -> CcxtAccount:
    """One account from a ``fetch_positions`` file and a ``fetch_balance`` file."""
    src_p, src_b = str(positions), str(balance)
    raw_positions = _load(positions)
    raw_balance = _load(balance)
    if not isinstance(raw_positions, list):
        raise InputError("a JSON list of ccxt position structures (fetch_positions)",
                         value=type(raw_positions).__name__, source=src_p)
    if not isinstance(raw_balance, Mapping) or not isinstance(raw_balance.get("total"),
                                                                Mapping):
        raise InputError("a ccxt balance structure with a 'total' object (fetch_balance)",
                         field="total", source=src_b)
    stamps: list[int] = []
    instruments: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    marks: dict[str, float] = {}
    isolated_flags: list[bool] = []
    for i, item in enumerate(raw_positions):
        where = f"[{i}]"
        if not isinstance(item, Mapping):
            raise InputError("a position object", field=where, value=item, source=src_p)
        contracts = parse_float(item.get("contracts"), field=f"{where}.contracts", minimum=0.0)
        if contracts == 0.0:
            continue  # ccxt lists flat symbols with 0 contracts
        side = item.get("side")
        if side not in ("long", "short"):
            raise InputError("'long' or 'short'", field=f"{where}.side", value=side,
                             source=src_p)
        size_of_contract = parse_float(item.get("contractSize", 1), field=f"{where}.contractSize",
                                       strictly_positive=True)
        name, spec = instrument_of(str(item.get("symbol")), size_of_contract, source=src_p,
                                   where=where)
        if name in instruments and instruments[name] != spec:
            raise InputError("one contract size per symbol", field=f"{where}.contractSize",
                             value=size_of_contract, source=src_p)
        instruments[name] = spec
        entry = parse_float(item.get("entryPrice"), field=f"{where}.entryPrice",
                            strictly_positive=True)
        margin_mode = item.get("marginMode")
        if margin_mode not in ("cross", "isolated", None):
            raise InputError("'cross', 'isolated' or null", field=f"{where}.marginMode",
                             value=margin_mode, source=src_p)
        isolated_flags.append(margin_mode == "isolated")
        row: dict[str, Any] = {"instrument": name,
                               "size": contracts if side == "long" else -contracts,
                               "entry_price": entry}
        if margin_mode == "isolated" and item.get("collateral") is not None:
            row["margin"] = parse_float(item["collateral"], field=f"{where}.collateral",
                                        strictly_positive=True)
        rows.append(row)
        if item.get("markPrice") is not None and spec["kind"] != "option":
            marks[name] = parse_float(item["markPrice"], field=f"{where}.markPrice",
                                      strictly_positive=True)
        stamp = _timestamp(item, src_p, where)
        if stamp is not None:
            stamps.append(stamp)
    if not rows:
        raise InputError("at least one open position (contracts > 0)", source=src_p)
    collateral: dict[str, float] = {}
    for asset, amount in raw_balance["total"].items():
        if amount is None:
            continue
        value = parse_float(amount, field=f"total.{asset}")
        if value != 0.0:
            collateral[check_name(str(asset), field="total", source=src_b)] = value
    stamp = _timestamp(raw_balance, src_b, "balance")
    if stamp is not None:
        stamps.append(stamp)
    if mode is None:
        mode = "isolated" if all(isolated_flags) else "cross"
    if mode == "cross" and any(isolated_flags):
        for row in rows:
            row.pop("margin", None)
    document = {"schema": "margin-engine/portfolio/v1", "instruments": instruments,
                "accounts": [{"id": account_id, "mode": mode, "collateral": collateral,
                              "positions": rows}]}
    snapshot = None
    if stamps:
        moment = dt.datetime.fromtimestamp(max(stamps) / 1000.0, tz=dt.UTC)
        snapshot = moment.isoformat().replace("+00:00", "Z")
    return CcxtAccount(document=document, snapshot=snapshot, marks=marks)


def read_ccxt_tiers(path: Path) -> dict[str, BracketTable]:
    """Bracket tables by underlying (the base of each symbol) from a ``fetch_leverage_tiers``
    file; a base listed under several symbols keeps the first."""
    raw = _load(path)
    if not isinstance(raw, Mapping) or not raw:
        raise InputError("an object of symbol -> leverage tiers (fetch_leverage_tiers)",
                         source=str(path))
    tables: dict[str, BracketTable] = {}
    for symbol, tiers in raw.items():
        base = str(symbol).split("/")[0]
        table = table_from_ccxt(str(symbol), tiers, source=str(path))
        tables.setdefault(base, table)
    return tables


def merge_ccxt_accounts(venues: list[tuple[str, Path, Path]], *, mode: str | None = None
                        ) -> dict[str, Any]:
    """One portfolio document from several venues' files, one account per venue (its id the
    venue's name); ``source`` records each account's files, snapshot time and the marks the
    files carried (the book still needs a market snapshot to be margined)."""
    if mode not in (None, "cross", "isolated", "portfolio"):
        raise InputError("cross, isolated or portfolio (default: from the files)",
                         field="--mode", value=mode)
    names = [name for name, _, _ in venues]
    if len(set(names)) != len(names):
        raise InputError("each venue name once", field="--venue", value=",".join(names))
    instruments: dict[str, dict[str, Any]] = {}
    accounts: list[dict[str, Any]] = []
    provenance: dict[str, Any] = {}
    for name, positions, balance in venues:
        read = read_ccxt_account(positions, balance, account_id=name, mode=mode)
        for symbol, spec in read.document["instruments"].items():
            if instruments.setdefault(symbol, spec) != spec:
                raise InputError("one contract size per instrument across venues",
                                 field=f"{name}: {symbol}.contract_size",
                                 value=spec["contract_size"], source=str(positions))
        accounts.extend(read.document["accounts"])
        provenance[name] = {"positions": str(positions), "balance": str(balance),
                            "snapshot": read.snapshot, "marks": read.marks}
    return {"schema": "margin-engine/portfolio/v1", "source": {
        "format": "ccxt fetch_positions + fetch_balance", "accounts": provenance},
        "instruments": instruments, "accounts": accounts}


def parse_venue_files(spec: str) -> tuple[str, Path, Path]:
    """``NAME=POSITIONS.json,BALANCE.json`` (the ``--venue`` option)."""
    name, sep, files = spec.partition("=")
    parts = [f.strip() for f in files.split(",")]
    if not sep or not name.strip() or len(parts) != 2 or not all(parts):
        raise InputError("NAME=POSITIONS.json,BALANCE.json (ccxt fetch_positions and "
                         "fetch_balance output)", field="--venue", value=spec)
    return check_name(name.strip(), field="--venue"), Path(parts[0]), Path(parts[1])
