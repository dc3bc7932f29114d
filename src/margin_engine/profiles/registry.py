"""Venue profiles by name (the closed set a user picks from with ``--profile`` /
``--profiles``)."""

from __future__ import annotations

from collections.abc import Callable

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


def get_profile(name: str) -> VenueProfile:
    if name not in _FACTORIES:
        raise InputError(f"a venue profile, one of {list(PROFILE_NAMES)} (or 'all')",
                         field="--profiles", value=name)
    return _FACTORIES[name]()


def parse_profiles(spec: str) -> list[VenueProfile]:
    """``all`` or a comma-separated list of profile names (each once)."""
    names = list(PROFILE_NAMES) if spec.strip() == "all" else [
        n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise InputError(f"'all' or profile names from {list(PROFILE_NAMES)}",
                         field="--profiles", value=spec)
    if len(set(names)) != len(names):
        raise InputError("each profile once", field="--profiles", value=spec)
    return [get_profile(n) for n in names]
