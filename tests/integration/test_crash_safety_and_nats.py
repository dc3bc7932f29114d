"""kill -9 at random points and restart: the same final state and event log as one run;
ticks in and events out through the real NATS JetStream server."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from margin_engine.store.base import Tick, open_store

BIN = Path(sys.executable).parent / "margin-engine"


def _crash_files(tmp_path: Path, bars: int = 1500) -> str:
    """A seeded two-asset crash path (1-minute bars): a slide of 25 % and a rebound."""
    rng = np.random.default_rng(12)
    trend = np.concatenate([np.zeros(300), np.full(400, -0.0007), np.full(800, 0.0002)])[:bars]
    specs = []
    for name, level, vol in (("BTC", 60000.0, 0.002), ("ETH", 3000.0, 0.0025)):
        closes = level * np.exp(np.cumsum(trend + vol * rng.standard_normal(bars)))
        path = tmp_path / f"{name.lower()}.csv"
        start = np.datetime64("2024-08-05T00:00")
        path.write_text("date,open,high,low,close,volume\n" + "".join(
            f"{start + np.timedelta64(k, 'm')}:00+00:00,1,1,1,{c:.2f},1\n"
            for k, c in enumerate(closes)))
        specs.append(f"{name}={path}")
    return "file:" + ",".join(specs)


def _monitor_args(feed: str, store: str) -> list[str]:
    # Replayed at 12,000x real time: a minute bar every 5 ms, so a kill lands mid-stream.
    return [str(BIN), "monitor", "--feed", feed, "--population", "300", "--seed", "4",
            "--store", store, "--speed", "12000", "--json"]


def test_kill_minus_9_at_random_points_then_resume(tmp_path: Path) -> None:
    feed = _crash_files(tmp_path)
    reference = f"sqlite:{tmp_path / 'reference.db'}"
    done = subprocess.run(_monitor_args(feed, reference), capture_output=True, text=True,
                          timeout=300, check=True)
    expected = json.loads(done.stdout)
    assert expected["ticks_total"] == 3000

    store = f"sqlite:{tmp_path / 'killed.db'}"
    rng = random.Random(2)
    kills = 0
    progress = []
    while kills < 5:
        process = subprocess.Popen(_monitor_args(feed, store), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        time.sleep(rng.uniform(1.2, 2.2))  # start-up (about a second) plus part of the feed
        if process.poll() is not None:
            break  # finished before the kill: nothing left to interrupt
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        repo = open_store(store)
        progress.append(repo.last_tick_seq())
        repo.close()
    print(f"kill -9 after ticks {progress}")
    assert kills >= 5, f"the monitor finished before 5 kills (progress {progress})"
    assert progress == sorted(progress)
    assert progress[-1] < 3000
    final = subprocess.run(_monitor_args(feed, store), capture_output=True, text=True,
                           timeout=300, check=True)
    resumed = json.loads(final.stdout)
    assert resumed["state_hash"] == expected["state_hash"]
    a, b = open_store(reference), open_store(store)
    assert [e for _, e in a.events()] == [e for _, e in b.events()]
    assert list(a.metrics()) == list(b.metrics())
    assert [t for t in a.ticks()] == [t for t in b.ticks()]
    a.close()
    b.close()


def test_nats_jetstream_ticks_in_events_out(tmp_path: Path, nats_url: str) -> None:
    from margin_engine.engine.monitor import Monitor
    from margin_engine.feeds.nats import (
        STREAM,
        collect_events,
        connect,
        consume,
        ensure_stream,
        publish_ticks,
    )
    from margin_engine.store.base import Event
    from tests.integration.test_store_and_monitor import _monitor, _path

    async def scenario() -> tuple[int, list[dict], Monitor]:
        nc = await connect(nats_url)
        js = nc.jetstream()
        await ensure_stream(js)
        await js.purge_stream(STREAM)
        await nc.drain()
        await publish_ticks(nats_url, _path())
        nc = await connect(nats_url)
        await nc.jetstream().publish("prices.BTC", b"not json")  # logged, never applied
        await nc.drain()
        store = open_store(f"sqlite:{tmp_path / 'nats.db'}")
        monitor = _monitor(store)

        def handle(item: Tick | str) -> list[Event]:
            if isinstance(item, str):
                monitor.rejected.append((Tick(-1, 0, "?", 0.0), item))
                return []
            return monitor.process(item).events

        listener = asyncio.create_task(_gather(collect_events(nats_url, 4.0)))
        await asyncio.sleep(0.3)
        handled = await consume(nats_url, f"test-{uuid.uuid4().hex[:8]}", handle, 1.0)
        events = await listener
        store.close()
        return handled, events, monitor

    handled, events, monitor = asyncio.run(scenario())
    assert handled == len(_path()) + 1
    assert "unreadable tick message" in monitor.rejected[-1][1]
    kinds = [e["kind"] for e in events if e["account"] == "long-20x"]
    assert kinds == ["margin_call", "liquidation", "margin_call", "recovery"]


async def _gather(stream: object) -> list[dict]:
    return [item async for item in stream]  # type: ignore[attr-defined]
