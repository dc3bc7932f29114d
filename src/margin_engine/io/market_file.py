"""Market JSON (``"schema": "margin-engine/market/v1"``) -> MarketSnapshot.

Vols are decimals (0.55), never percent; a vol above 10 (1000 %) is refused as a likely percent.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from margin_engine.core.correlation import check_pairs
from margin_engine.core.errors import InputError
from margin_engine.core.numbers import parse_float
from margin_engine.core.timeutil import (
    expiry_code_to_ns,
    ns_to_iso,
    parse_timestamp,
    year_fraction,
)
from margin_engine.domain.instruments import InstrumentKind, parse_shorthand
from margin_engine.io.jsonfields import (
    check_schema,
    load_document,
    require_name,
    require_object,
    require_string,
)
from margin_engine.market.snapshot import (
    AtmByExpiryVol,
    FlatVol,
    MarketSnapshot,
    SviVol,
    UnderlyingMarket,
    VolSurface,
)

MARKET_SCHEMA = "margin-engine/market/v1"
MAX_VOL = 10.0


def load_market(path: str | Path) -> MarketSnapshot:
    return load_document(path, parse_market)


def parse_market(document: Any) -> MarketSnapshot:
    check_schema(document, expected=MARKET_SCHEMA)
    obj = require_object(
        document, field="",
        allowed=("schema", "timestamp", "underlyings", "assets", "correlation", "marks",
                 "settlements"),
        required=("timestamp", "underlyings", "assets"),
    )
    timestamp = parse_timestamp(obj["timestamp"], field="timestamp")
    underlyings = _parse_underlyings(obj["underlyings"], timestamp)
    assets = _parse_assets(obj["assets"])
    marks = _parse_marks(obj.get("marks", {}))
    correlation = _parse_correlation(obj.get("correlation", {}), underlyings)
    check_pairs(correlation, underlyings, field="correlation")
    settlements = _parse_settlements(obj.get("settlements", {}), timestamp)
    return MarketSnapshot(timestamp_ns=timestamp, underlyings=underlyings, asset_prices=assets,
                          marks=marks, correlation=correlation, settlements=settlements)


SVI_PARAMS = ("a", "b", "rho", "m", "sigma")


def _parse_underlyings(raw: Any, timestamp: int) -> dict[str, UnderlyingMarket]:
    if not isinstance(raw, dict) or not raw:
        raise InputError("a non-empty object of underlying -> {index, vol}", field="underlyings",
                         value=raw if not isinstance(raw, dict) else "{}")
    result: dict[str, UnderlyingMarket] = {}
    for given, spec in raw.items():
        name = require_name(given, field="underlyings", expected="an underlying name")
        field = f"underlyings.{name}"
        obj = require_object(spec, field=field, allowed=("index", "vol"), required=("index",))
        index = parse_float(obj["index"], field=f"{field}.index", strictly_positive=True)
        vol = _parse_vol(obj["vol"], f"{field}.vol", timestamp, index) if "vol" in obj else None
        result[name] = UnderlyingMarket(index=index, vol=vol)
    return result


def _parse_vol(raw: Any, field: str, timestamp: int, index: float) -> VolSurface:
    obj = require_object(raw, field=field, allowed=("type", "sigma", "points", "slices"),
                         required=("type",))
    kind = obj["type"]
    if kind == "flat":
        require_object(raw, field=field, allowed=("type", "sigma"), required=("sigma",))
        return FlatVol(level=_vol_number(obj["sigma"], f"{field}.sigma"))
    if kind == "atm_by_expiry":
        require_object(raw, field=field, allowed=("type", "points"), required=("points",))
        points_raw = obj["points"]
        if not isinstance(points_raw, dict) or not points_raw:
            raise InputError("a non-empty object of expiry code (e.g. '27JUN25') -> vol",
                             field=f"{field}.points", value=points_raw)
        points: dict[int, float] = {}
        for code, level in points_raw.items():
            try:
                expiry = _expiry_code(code)
            except ValueError:
                raise InputError("an expiry code such as '27JUN25'", field=f"{field}.points",
                                 value=code) from None
            points[expiry] = _vol_number(level, f"{field}.points.{code}")
        return AtmByExpiryVol.from_expiries(timestamp, points)
    if kind == "svi":
        require_object(raw, field=field, allowed=("type", "slices"), required=("slices",))
        return _parse_svi(obj["slices"], f"{field}.slices", timestamp, index)
    raise InputError("vol type 'flat', 'atm_by_expiry' or 'svi'", field=f"{field}.type",
                     value=kind)


def _parse_svi(raw: Any, field: str, timestamp: int, index: float) -> SviVol:
    """Raw SVI slices in index log-moneyness; refused if a slice is not a valid smile."""
    if not isinstance(raw, dict) or not raw:
        raise InputError("a non-empty object of expiry code -> {a, b, rho, m, sigma}",
                         field=field, value=raw)
    slices: list[tuple[int, tuple[float, float, float, float, float]]] = []
    for code, spec in raw.items():
        where = f"{field}.{code}"
        try:
            expiry = _expiry_code(code)
        except ValueError:
            raise InputError("an expiry code such as '28JUN24'", field=field, value=code) from None
        if expiry <= timestamp:
            continue  # expired slices carry no information at this timestamp
        obj = require_object(spec, field=where, allowed=SVI_PARAMS, required=SVI_PARAMS)
        a = parse_float(obj["a"], field=f"{where}.a")
        b = parse_float(obj["b"], field=f"{where}.b", minimum=0.0)
        rho = parse_float(obj["rho"], field=f"{where}.rho", minimum=-1.0, maximum=1.0)
        m = parse_float(obj["m"], field=f"{where}.m")
        sigma = parse_float(obj["sigma"], field=f"{where}.sigma", strictly_positive=True)
        if abs(rho) >= 1.0:
            raise InputError("|rho| < 1", field=f"{where}.rho", value=obj["rho"])
        if a + b * sigma * math.sqrt(1 - rho * rho) < 0.0:
            raise InputError("a + b sigma sqrt(1 - rho^2) >= 0 (non-negative total variance)",
                             field=where, value=spec)
        slices.append((expiry, (a, b, rho, m, sigma)))
    if not slices:
        raise InputError("at least one slice expiring after the market timestamp", field=field)
    slices.sort()
    return SviVol(index=index, years=tuple(year_fraction(timestamp, e) for e, _ in slices),
                  params=tuple(p for _, p in slices))


def _expiry_code(code: str) -> int:
    """An expiry code in ASCII only (the code pattern's \\d also takes other scripts' digits)."""
    if not code.isascii():
        raise ValueError(f"not an expiry code like '27JUN25': {code!r}")
    return expiry_code_to_ns(code)


def _vol_number(value: Any, field: str) -> float:
    sigma = parse_float(value, field=field, strictly_positive=True)
    if sigma > MAX_VOL:
        raise InputError(f"a decimal vol such as 0.55 (<= {MAX_VOL:g}); percent is not accepted",
                         field=field, value=value)
    return sigma


def _parse_assets(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise InputError("an object of asset -> {price}", field="assets", value=raw)
    prices: dict[str, float] = {}
    for given, spec in raw.items():
        name = require_name(given, field="assets", expected="an asset symbol")
        obj = require_object(spec, field=f"assets.{name}", allowed=("price",),
                             required=("price",))
        prices[name] = parse_float(obj["price"], field=f"assets.{name}.price",
                                   strictly_positive=True)
    return prices


def _parse_marks(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise InputError("an object of instrument -> mark price", field="marks", value=raw)
    return {
        require_name(name, field="marks", expected="an instrument name"): parse_float(
            value, field=f"marks.{name}", strictly_positive=True
        )
        for name, value in raw.items()
    }


def _parse_settlements(raw: Any, timestamp: int) -> dict[tuple[str, int], float]:
    """``{"BTC-27JUN25": 61234.5}``: the settlement price of an underlying's expiry (USD per
    coin), for expiries at or before the market time."""
    if not isinstance(raw, dict):
        raise InputError("an object of UNDERLYING-EXPIRY -> settlement price",
                         field="settlements", value=raw)
    out: dict[tuple[str, int], float] = {}
    for name, value in raw.items():
        field = f"settlements.{require_string(name, field='settlements')}"
        try:
            instrument = parse_shorthand(name) if name.isascii() else None
        except ValueError:
            instrument = None
        if instrument is None or instrument.kind is not InstrumentKind.FUTURE:
            raise InputError("a key UNDERLYING-EXPIRY such as 'BTC-27JUN25'", field=field,
                             value=name)
        assert instrument.expiry_ns is not None  # futures are dated
        if instrument.expiry_ns > timestamp:
            raise InputError(f"an expiry at or before the market time "
                             f"{ns_to_iso(timestamp)} (it expires "
                             f"{ns_to_iso(instrument.expiry_ns)})", field=field, value=name)
        out[(instrument.underlying, instrument.expiry_ns)] = parse_float(
            value, field=field, strictly_positive=True)
    return out


def _parse_correlation(
    raw: Any, underlyings: dict[str, UnderlyingMarket]
) -> dict[tuple[str, str], float]:
    if not isinstance(raw, dict):
        raise InputError("an object such as {'BTC': {'ETH': 0.8}}", field="correlation",
                         value=raw)
    pairs: dict[tuple[str, str], float] = {}
    for a, row in raw.items():
        if not isinstance(row, dict):
            raise InputError("an object of underlying -> correlation",
                             field=f"correlation.{a}", value=row)
        for b, value in row.items():
            field = f"correlation.{a}.{b}"
            for name in (a, b):
                if name not in underlyings:
                    raise InputError(f"an underlying of this market {sorted(underlyings)}",
                                     field=field, value=name)
            rho = parse_float(value, field=field, minimum=-1.0, maximum=1.0)
            if a == b:
                if rho != 1.0:
                    raise InputError("1 on the diagonal", field=field, value=value)
                continue
            key = (a, b) if a < b else (b, a)
            if key in pairs and pairs[key] != rho:
                raise InputError(f"the same value as the symmetric entry ({pairs[key]})",
                                 field=field, value=value)
            pairs[key] = rho
    return pairs
