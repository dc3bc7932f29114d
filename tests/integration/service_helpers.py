"""The real service for tests: the app served by uvicorn on a free loopback port in a thread,
and the stores it serves (a monitor's store of a real crash window, or a plain one)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from margin_engine.service.app import create_app
from margin_engine.service.keys import create_key, parse_scopes
from margin_engine.service.settings import ServiceSettings
from margin_engine.store.base import open_store

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CRASH_FEED = ("file:BTC={d}/binance_btcusdt_perp_15m_window_2024-08-05.csv,"
              "ETH={d}/binance_ethusdt_perp_15m_window_2024-08-05.csv")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving ``create_app(settings)`` in a daemon thread."""

    def __init__(self, settings: ServiceSettings) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 120.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the service did not start (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start within {timeout} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0)


@contextmanager
def live_server(settings: ServiceSettings) -> Iterator[LiveServer]:
    server = LiveServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


def make_key(store: str, scope: str, account: str | None = None, **options: Any) -> str:
    repository: Any = open_store(store)
    try:
        repository.initialise_service()
        return create_key(repository, scopes=parse_scopes(scope), account=account,
                          **options).token
    finally:
        repository.close()


def crash_store(path: Path, population: int, max_ticks: int | None = None) -> str:
    """A SQLite store written by the monitor over the 2024-08-05 crash window."""
    from margin_engine.engine.run import run_monitor
    from margin_engine.margin.config import RiskConfig

    spec = f"sqlite:{path}"
    run_monitor(feed=CRASH_FEED.format(d=SHARED_DATA), store_spec=spec, book=None,
                population=population, seed=1, market=None, config=RiskConfig(),
                model="account", speed=0.0, max_ticks=max_ticks, idle_seconds=1.0,
                live=False)
    return spec


def stored_metrics(store: str) -> list[dict[str, Any]]:
    repository = open_store(store)
    try:
        return [{"tick": t, **json.loads(p)} for t, p in repository.metrics()]
    finally:
        repository.close()
