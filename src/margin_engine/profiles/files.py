"""Profile files: a venue profile's parameters in TOML, so a venue's changed numbers (a new
bracket table, a wider price range, today's open interest) are a file edit, not a code change.

    profile = "binance-um"            # the method: one of the built-in profiles
    name = "binance-um-2026-12"       # shown in outputs (default: the file's stem)
    parameters_as_of = "2026-12-01"   # the date of the numbers below (required)
    source = "https://..."            # where they come from (optional)

    [parameters]                      # the method's parameters, merged over its built-in ones
    roll_rate = 0.005
    [parameters.ranges]               # per-underlying tables merge key by key
    BTC = 0.16

    [leverage_tiers]                  # bracket venues: ccxt fetch_leverage_tiers JSON
    file = "binance_tiers.json"       # relative to this file

``configs/profiles/`` ships one file per built-in profile holding exactly its built-in
parameters (a test keeps them equal), as the starting point for edits. Every number must be
finite, non-negative and within the bounds its field declares (``core/bounds.py``: a price
range below 1, fractions at most 1, MM at most IM, ...); unknown keys, wrong types, values out
of bounds and tiers given to a profile without brackets are refused naming the file, the key
and the value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from margin_engine.core.bounds import BOUNDS, Bounds
from margin_engine.core.errors import InputError
from margin_engine.core.names import check_name
from margin_engine.core.numbers import parse_float
from margin_engine.profiles.base import Source, VenueProfile

TOP_KEYS = ("profile", "name", "parameters_as_of", "source", "parameters", "leverage_tiers")


def override(default: Any, table: Any, *, where: str, source: str,
             settable: tuple[str, ...] | None = None) -> Any:
    """A copy of the frozen dataclass ``default`` with the keys of ``table`` replaced, each
    value checked against the type of the field's current value (nested dataclasses and
    per-underlying tables merge key by key); ``settable`` limits the keys (default: all)."""
    if not isinstance(table, Mapping):
        raise InputError("a table of parameters", field=where, value=table, source=source)
    fields = {f.name: f for f in dataclasses.fields(default) if not f.name.startswith("_")
              and (settable is None or f.name in settable)}
    changes: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{where}.{key}"
        if key not in fields:
            raise InputError(f"one of {sorted(fields)}", field=path, value=key, source=source)
        changes[key] = checked_value(getattr(default, key), value, where=path, source=source,
                                     bounds=fields[key].metadata.get(BOUNDS))
    return dataclasses.replace(default, **changes)


def checked_value(current: Any, value: Any, *, where: str, source: str,
                  bounds: Bounds | None = None) -> Any:
    """``value`` from a file checked against the type of ``current`` (merged into it when a
    table or a dataclass) and, for a number or a table of numbers, within ``bounds``."""
    if dataclasses.is_dataclass(current) and not isinstance(current, type):
        return override(current, value, where=where, source=source)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise InputError("true or false", field=where, value=value, source=source)
        return value
    if isinstance(current, int | float):
        if isinstance(value, bool):
            raise InputError("a number", field=where, value=value, source=source)
        try:
            number = parse_float(value, field=where, minimum=0.0)
        except InputError as exc:
            raise InputError(exc.expected, field=where, value=value, source=source) from None
        if bounds is not None and not bounds.holds(number):
            raise InputError(bounds.expected(), field=where, value=value, source=source)
        return number
    if isinstance(current, Mapping):
        if not isinstance(value, Mapping):
            raise InputError("a table of underlying = number", field=where, value=value,
                             source=source)
        merged = dict(current)
        for key, number in value.items():
            merged[str(key)] = checked_value(0.0, number, where=f"{where}.{key}", source=source,
                                             bounds=bounds)
        return merged
    raise InputError("a parameter that can be set from a file", field=where, value=value,
                     source=source)


def parameters_of(params: Any, settable: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A dataclass of parameters as the ``[parameters]`` table a profile file would hold."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        if f.name.startswith("_") or (settable is not None and f.name not in settable):
            continue
        value = getattr(params, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = parameters_of(value)
        elif isinstance(value, Mapping):
            out[f.name] = dict(value)
        else:
            out[f.name] = value
    return out


class ScenarioParameters:
    """What a scenario profile (one frozen dataclass of parameters in ``params``, built by
    ``type(self)(params)``) needs to be configured from a file."""

    params: Any
    uses_brackets = False

    def configured(self, parameters: Mapping[str, Any], tiers: Mapping[str, Any],
                   source: str) -> Any:
        """The same method with a profile file's parameters merged over these."""
        make: Any = type(self)  # each subclass is built from its parameters alone
        return make(override(self.params, parameters, where="parameters", source=source))

    def parameters(self) -> dict[str, Any]:
        return parameters_of(self.params)


def _date(value: Any, source: str) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise InputError("the date of the parameters, YYYY-MM-DD", field="parameters_as_of",
                         value=value, source=source) from None


def read_profile_file(path: Path) -> VenueProfile:
    """The profile a TOML file describes (see the module docstring)."""
    from margin_engine.profiles.registry import PROFILE_NAMES, get_profile

    source = str(path)
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"a readable profile file ({exc.strerror})", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"valid TOML ({exc})", source=source) from None
    for key in document:
        if key not in TOP_KEYS:
            raise InputError(f"one of {list(TOP_KEYS)}", field=key, value=key, source=source)
    method = document.get("profile")
    if method not in PROFILE_NAMES:
        raise InputError(f"a built-in profile, one of {list(PROFILE_NAMES)}", field="profile",
                         value=method, source=source)
    if "parameters_as_of" not in document:
        raise InputError("the date of the parameters, YYYY-MM-DD", field="parameters_as_of",
                         value="missing", source=source)
    as_of = _date(document["parameters_as_of"], source)
    name = document.get("name", Path(path).stem)
    if not isinstance(name, str) or not name.strip():
        raise InputError("a non-empty name", field="name", value=name, source=source)
    check_name(name, field="name", source=source)
    built_in = get_profile(method)
    tiers = {}
    if "leverage_tiers" in document:
        if not built_in.uses_brackets:
            raise InputError(f"no leverage tiers ({method} margins by scenarios, not "
                             "brackets)", field="leverage_tiers",
                             value=document["leverage_tiers"], source=source)
        tiers = _tiers(document["leverage_tiers"], Path(path), source)
    parameters = document.get("parameters", {})
    if not isinstance(parameters, Mapping):
        raise InputError("a table of parameters", field="parameters", value=parameters,
                         source=source)
    profile = built_in.configured(parameters, tiers, source)
    cited = str(document.get("source", Path(path).resolve().as_uri()))
    profile.info = dataclasses.replace(
        profile.info, name=name, parameters_as_of=as_of,
        sources=(*profile.info.sources, Source(title=f"profile file {Path(path).name}",
                                               url=cited, published=as_of, read=as_of)))
    return profile


def _tiers(table: Any, path: Path, source: str) -> dict[str, Any]:
    from margin_engine.profiles.ccxt_files import read_ccxt_tiers

    if not isinstance(table, Mapping) or set(table) != {"file"} or not isinstance(
            table.get("file"), str):
        raise InputError('a table with one key, file = "TIERS.json" (ccxt '
                         "fetch_leverage_tiers)", field="leverage_tiers", value=table,
                         source=source)
    tiers_path = Path(table["file"])
    if not tiers_path.is_absolute():
        tiers_path = path.parent / tiers_path
    try:
        return dict(read_ccxt_tiers(tiers_path))
    except InputError as exc:
        raise InputError(exc.expected, field=exc.field, value=exc.value,
                         source=f"{source}, leverage_tiers.file {tiers_path}") from None
