"""Venue profiles by name (the closed set a user picks from with ``--profile`` /
``--profiles``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from margin_engine.core.errors import InputError
from margin_engine.profiles import (
    binance_pm,
    binance_um,
    deribit_pm,
    derive_pmrm,
    dydx_v4,
    hyperliquid,
    okx_pm,
)
from margin_engine.profiles.base import VenueProfile

_FACTORIES: dict[str, Callable[[], VenueProfile]] = {
    "deribit-pm": deribit_pm.profile,
    "derive-pmrm": derive_pmrm.profile,
    "okx-pm": okx_pm.profile,
    "binance-um": binance_um.profile,
    "binance-pm": binance_pm.profile,
    "dydx-v4": dydx_v4.profile,
    "hyperliquid": hyperliquid.profile,
}
PROFILE_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def is_profile_file(spec: str) -> bool:
    """A ``--profile`` value naming a file rather than a built-in profile."""
    return spec.endswith(".toml") or "/" in spec


def get_profile(name: str, option: str = "--profiles") -> VenueProfile:
    """A built-in profile by name, or the profile a TOML file describes (profiles/files.py)."""
    if is_profile_file(name):
        from margin_engine.profiles.files import read_profile_file

        return read_profile_file(Path(name))
    if name not in _FACTORIES:
        raise InputError(f"a venue profile, one of {list(PROFILE_NAMES)}, or a profile file "
                         "(.toml)" + (" (or 'all')" if option == "--profiles" else ""),
                         field=option, value=name)
    return _FACTORIES[name]()


def parse_profiles(spec: str) -> list[VenueProfile]:
    """``all`` or a comma-separated list of profile names or files, each once (by name)."""
    names = list(PROFILE_NAMES) if spec.strip() == "all" else [
        n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise InputError(f"'all' or profile names from {list(PROFILE_NAMES)}",
                         field="--profiles", value=spec)
    if len(set(names)) != len(names):
        raise InputError("each profile once", field="--profiles", value=spec)
    profiles = [get_profile(n) for n in names]
    shown = [p.info.name for p in profiles]
    if len(set(shown)) != len(shown):
        raise InputError("profiles with different names (set name = ... in a profile file)",
                         field="--profiles", value=spec)
    return profiles
