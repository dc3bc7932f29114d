"""The dashboard in a real browser (Debian's chromium driven by Playwright, no browser download)
on a real crash: the monitor replays the 2024-08-05 window for 300 seeded accounts into a store,
the service serves it, and the charts must hold the store's numbers; a tick committed by a
monitor then reaches the page over the WebSocket. A screenshot is written as a test artefact."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from margin_engine.service.settings import ServiceSettings
from tests.integration.service_helpers import (
    SHARED_DATA,
    LiveServer,
    crash_store,
    live_server,
    make_key,
    stored_metrics,
)

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.slow


def _need_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"!!! Debian chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{message} (CI=true: the browser tests are required)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, str]]:
    _need_chromium()
    if not (SHARED_DATA / "binance_btcusdt_perp_15m_window_2024-08-05.csv").exists():
        pytest.skip(f"the crash window files are not in {SHARED_DATA}")
    folder = tmp_path_factory.mktemp("dashboard")
    store = crash_store(folder / "crash.db", population=300)
    key = make_key(store, "admin", label="dashboard")
    with live_server(ServiceSettings(store=store, rate_per_second=100, burst=100)) as server:
        yield server, store, key


def _commit_tick(store: str, drop: float) -> dict[str, Any]:
    """A monitor commits one more tick (BTC down by ``drop``) to the store, as a live monitor
    would; the tick's stored metrics."""
    from margin_engine.engine.session import monitor_from_setup
    from margin_engine.store.base import Tick, open_store

    repository = open_store(store)
    try:
        repository.take_writer_lease()
        monitor = monitor_from_setup(repository.load_setup(), repository)
        ticks = list(repository.ticks())
        monitor.run(ticks, commit=False)
        last_btc = next(t for t in reversed(ticks) if t.symbol == "BTC")
        tick = Tick(ticks[-1].seq + 1, ticks[-1].time_ns + 15 * 60 * 10**9, "BTC",
                    last_btc.price * (1.0 - drop), last_btc.source)
        outcome = monitor.process(tick)
        assert outcome.accepted, outcome.reason
        return {"tick": tick.seq, **outcome.metrics, "events": len(outcome.events),
                "price": tick.price}
    finally:
        repository.close()


def _traces(page: Any, element: str) -> list[dict[str, Any]]:
    traces: list[dict[str, Any]] = page.evaluate(
        """(id) => document.getElementById(id).data.map(t => ({
            name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))""", element)
    return traces


def test_dashboard_shows_the_replayed_crash_and_updates_live(
        crash: tuple[LiveServer, str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    server, store, key = crash
    metrics = stored_metrics(store)
    with server.client(key) as api:
        efficiency = api.get("/v1/pool/efficiency").json()["models"]
        risk = api.get("/v1/pool/at-risk", params={"limit": 10}).json()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/#key={key}")
            page.wait_for_function("window.dashboard && window.dashboard.ready === true",
                                   timeout=60_000)
            assert page.evaluate("window.dashboard.error") is None
            assert "key=" not in page.url  # the key leaves the address bar

            # Pool health over time: every tick of the store, in order.
            health = {t["name"]: t for t in _traces(page, "health-chart")}
            assert health["liquidatable"]["x"] == [m["time"] for m in metrics]
            assert health["liquidatable"]["y"] == [m["liquidatable"] for m in metrics]
            assert health["margin calls"]["y"] == [m["margin_calls"] for m in metrics]
            assert health["near liquidation"]["y"] == [m["near_liquidation"] for m in metrics]
            assert health["coverage ratio"]["y"] == [m["coverage_ratio"] for m in metrics]
            # The crash: liquidations peak on 2024-08-05 (BTC fell from ~62k to ~49k).
            peak = max(range(len(metrics)), key=lambda k: metrics[k]["liquidatable"])
            assert metrics[peak]["time"].startswith("2024-08-05")
            assert metrics[peak]["liquidatable"] > 0
            assert page.inner_text("#kpi-liquidatable") == f"{metrics[-1]['liquidatable']:,}"

            # Margin efficiency by model and the accounts nearest liquidation.
            (bars,) = _traces(page, "efficiency-chart")
            assert bars["x"] == [m["model"] for m in efficiency]
            assert bars["y"] == [m["efficiency"] for m in efficiency]
            assert bars["y"][bars["x"].index("cross")] > bars["y"][bars["x"].index("portfolio")]
            (nearest,) = _traces(page, "risk-chart")
            assert nearest["x"] == [a["distance_pct"] for a in reversed(risk["at_risk"])]
            assert len(nearest["x"]) == 10
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            # A live update: a monitor commits a tick; it reaches the page.
            before = page.evaluate("window.dashboard.eventsSeen")
            added = _commit_tick(store, drop=0.08)
            page.wait_for_function(f"window.dashboard.tick === {added['tick']}",
                                   timeout=30_000)
            health = {t["name"]: t for t in _traces(page, "health-chart")}
            assert health["liquidatable"]["y"][-1] == added["liquidatable"]
            assert health["coverage ratio"]["y"][-1] == added["coverage_ratio"]
            assert len(health["liquidatable"]["y"]) == len(metrics) + 1
            assert added["liquidatable"] > metrics[-1]["liquidatable"]  # an 8 % drop
            page.wait_for_function(f"window.dashboard.eventsSeen >= {before + added['events']}",
                                   timeout=30_000)
            page.wait_for_function("window.dashboard.refreshes >= 2", timeout=30_000)
            # the panels computed at the current market follow the tick (BTC index moved)
            page.wait_for_function(
                "(p) => document.querySelector('#state').innerText.includes(p)",
                arg=f"{added['price']:,.2f}", timeout=30_000)
            assert page.inner_text("#kpi-liquidatable") == f"{added['liquidatable']:,}"
            page.screenshot(path=str(tmp_path / "dashboard-live.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    artefacts = Path(os.environ.get("DASHBOARD_SCREENSHOT_DIR", ""))
    if artefacts.name:
        artefacts.mkdir(parents=True, exist_ok=True)
        for name in ("dashboard.png", "dashboard-live.png"):
            shutil.copy(tmp_path / name, artefacts / name)
    assert json.loads(json.dumps(risk))["accounts"] == 300


HOSTILE = ('<img src=x onerror="window.__xss=1">', "a&b<script>window.__xss=2</script>")


def test_account_ids_are_shown_as_text_not_run_as_html(tmp_path: Path) -> None:
    """Account ids are whatever the venue's book holds. Before: the events table was built
    with innerHTML, so an id such as '<img src=x onerror=...>' from a book the monitor
    watched ran its script in the admin's dashboard."""
    from playwright.sync_api import sync_playwright

    from margin_engine.engine.run import run_monitor
    from margin_engine.margin.config import RiskConfig
    from tests.conftest import account, portfolio_doc
    from tests.integration.service_helpers import CRASH_FEED

    _need_chromium()
    if not (SHARED_DATA / "binance_btcusdt_perp_15m_window_2024-08-05.csv").exists():
        pytest.skip(f"the crash window files are not in {SHARED_DATA}")
    book = tmp_path / "book.json"  # leveraged longs: liquidated in the crash
    book.write_text(json.dumps(portfolio_doc(*[
        account(name, [("BTC-PERP", 2, 62000)], {"USDC": 9000}, mode="cross")
        for name in HOSTILE])))
    store = f"sqlite:{tmp_path / 'hostile.db'}"
    run_monitor(feed=CRASH_FEED.format(d=SHARED_DATA), store_spec=store, book=book,
                population=None, seed=1, market=None, config=RiskConfig(), model="account",
                speed=0.0, max_ticks=None, idle_seconds=1.0, live=False)
    key = make_key(store, "admin", label="hostile")
    with live_server(ServiceSettings(store=store, rate_per_second=100, burst=100)) as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{server.url}/#key={key}")
            page.wait_for_function("window.dashboard && window.dashboard.ready === true",
                                   timeout=60_000)
            page.wait_for_function("window.dashboard.eventsSeen > 0", timeout=30_000)
            shown = page.inner_text("#event-rows")
            assert page.evaluate("window.__xss") is None
            assert page.locator("#event-rows img").count() == 0
            assert any(name in shown for name in HOSTILE), shown
        finally:
            browser.close()
