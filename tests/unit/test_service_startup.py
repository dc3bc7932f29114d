"""The service's start-up: what it made is frozen out of the garbage collector's full
collections (which walked it on every one: 50-80 ms pauses under load, 21-25 ms after)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

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
