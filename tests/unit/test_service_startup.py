"""The service's start-up: what it made is frozen out of the garbage collector's full
collections (which walked it on every one: 50-80 ms pauses under load, 21-25 ms after)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

from margin_engine.service.app import create_app
from margin_engine.service.settings import ServiceSettings


def test_start_up_freezes_what_it_made(tmp_path: Path) -> None:
    app = create_app(ServiceSettings(store=f"sqlite:{tmp_path / 'service.db'}"))

    async def start_and_stop() -> int:
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count()

    gc.unfreeze()
    try:
        assert asyncio.run(start_and_stop()) > 10_000  # the modules, the app, the state
    finally:
        gc.unfreeze()


def test_start_up_has_the_what_if_kernels_before_the_first_request(tmp_path: Path) -> None:
    """A new process: once the service has started, the liquidation search of every margin
    mode is compiled (or loaded from the cache) already: the first what-if does not wait for
    it (37.7 s from an empty cache, 0.4 s from a warm one)."""
    import subprocess
    import sys

    script = f"""
import asyncio
from margin_engine.liquidation.level_kernels import search_levels_nb
from margin_engine.service.app import create_app
from margin_engine.service.settings import ServiceSettings

app = create_app(ServiceSettings(store="sqlite:{tmp_path / 'service.db'}"))
before = len(search_levels_nb.signatures)

async def start() -> int:
    async with app.router.lifespan_context(app):
        return len(search_levels_nb.signatures)

print(before, asyncio.run(start()))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    before, after = (int(x) for x in out.stdout.split())
    assert before == 0
    assert after >= 3  # the portfolio, cross and isolated searches


def test_start_up_on_a_monitor_store_says_what_it_rebuilds(tmp_path: Path,
                                                           caplog: Any) -> None:
    """On a monitor's store the service rebuilds the monitor and applies every stored tick
    before it answers (96 s on a million accounts); it now says so, with the accounts, the
    ticks applied and the time, on uvicorn's log (before: nothing after 'Waiting for
    application startup')."""
    import logging

    from margin_engine.engine.session import open_session, setup_values
    from margin_engine.service.server import log_config
    from margin_engine.store.base import Tick, open_store
    from tests.conftest import MONITOR_MARKET, MONITOR_PORTFOLIO, NO_HAIRCUTS

    spec = f"sqlite:{tmp_path / 'm.db'}"
    store = open_store(spec)
    monitor, _ = open_session(store, setup_values(MONITOR_PORTFOLIO, MONITOR_MARKET,
                                                  NO_HAIRCUTS, "account"))
    t0 = 1_722_816_000 * 10**9
    monitor.run([Tick(k + 1, t0 + k * 60 * 10**9, "BTC", 50000.0 - 100 * k)
                 for k in range(4)])
    store.close()
    app = create_app(ServiceSettings(store=spec))

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with caplog.at_level(logging.INFO, logger="margin_engine.service"):
        asyncio.run(start())
    said = [r.getMessage() for r in caplog.records if r.name == "margin_engine.service"]
    assert said[0].startswith("rebuilding the monitor from the store's set-up")
    assert said[1].startswith("monitor rebuilt: 3 accounts in ")
    assert said[2].startswith("following the monitor from tick 4 (4 ticks applied")
    assert log_config()["loggers"]["margin_engine.service"]["handlers"] == ["default"]
