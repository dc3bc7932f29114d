"""What a service is started with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSettings:
    """``store``: ``sqlite:PATH`` or ``postgresql://...``. ``market``, ``config`` and ``model``
    are used when the store holds no monitor set-up (a monitor's store brings its own market,
    moved by its ticks, its risk configuration and its model). ``rate_per_second`` and
    ``burst``: each key's token bucket unless the key sets its own. ``liquidation_limit``: the
    most accounts of a posted book that get liquidation prices (a root search each)."""

    store: str = "sqlite:out/service.db"
    market: Path | None = None
    config: Path | None = None
    model: str = "account"
    rate_per_second: float = 20.0
    burst: float = 40.0
    failed_auth_per_second: float = 1.0
    failed_auth_burst: float = 10.0
    liquidation_limit: int = 100
    max_body_bytes: int = 4 * 2**20
    stream_poll_seconds: float = 0.2
