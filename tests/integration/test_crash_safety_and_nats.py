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
import pytest

from margin_engine.store.base import Tick, open_store
from tests.integration.conftest import committed_ticks

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


@pytest.mark.slow  # seven monitor processes over 3,000 ticks: about 30 s
def test_kill_minus_9_at_random_points_then_resume(tmp_path: Path) -> None:
    feed = _crash_files(tmp_path)
    reference = f"sqlite:{tmp_path / 'reference.db'}"
    done = subprocess.run(_monitor_args(feed, reference), capture_output=True, text=True,
                          timeout=300, check=True)
    expected = json.loads(done.stdout)
    assert expected["store_totals"]["ticks"] == 3000

    killed_db = tmp_path / "killed.db"
    store = f"sqlite:{killed_db}"
    rng = random.Random(2)
    kills = 0
    progress: list[int] = []
    while kills < 5:
        process = subprocess.Popen(_monitor_args(feed, store), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        # Kill only once this run has committed ticks of its own (so no kill is spent on
        # start-up), then after a random further moment, mid-stream.
        before = progress[-1] if progress else 0
        deadline = time.monotonic() + 120
        while (process.poll() is None and time.monotonic() < deadline
               and committed_ticks(killed_db) <= before):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is not None:
            break  # finished before the kill: nothing left to interrupt
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        progress.append(committed_ticks(killed_db))
    print(f"kill -9 after ticks {progress}")
    assert kills >= 5, f"the monitor finished before 5 kills (progress {progress})"
    assert progress[0] > 0, "the first kill landed before any tick was committed"
    assert all(a < b for a, b in zip(progress, progress[1:], strict=False)), progress
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
        NatsTopology,
        collect_events,
        connect,
        consume,
        delete_stream,
        publish_ticks,
    )
    from margin_engine.store.base import Event
    from tests.integration.test_store_and_monitor import _monitor, _path

    # Names of this run only: a parallel run on the same server never sees them, and only the
    # stream created here is deleted.
    run = uuid.uuid4().hex[:12]
    topology = NatsTopology(stream=f"TEST_PRICES_{run}", prices=f"test.{run}.prices",
                            events=f"test.{run}.events", durable=f"test-{run}",
                            events_stream=f"TEST_EVENTS_{run}")

    async def scenario() -> tuple[int, list[dict], Monitor]:
        await publish_ticks(nats_url, _path(), topology)
        nc = await connect(nats_url)
        await nc.jetstream().publish(f"{topology.prices}.BTC", b"not json")  # logged only
        await nc.drain()
        store = open_store(f"sqlite:{tmp_path / 'nats.db'}")
        monitor = _monitor(store)
        # compile the tick path first (an empty numba cache takes seconds): the event listener
        # below stops after 4 s without a message
        warm = _monitor()
        for tick in _path()[:3]:
            warm.process(tick, commit=False)

        def handle(item: Tick | str, seq: int) -> list[Event]:
            if isinstance(item, str):
                monitor.rejected.append((Tick(seq, 0, "?", 0.0), item))
                return []
            return monitor.process(item).events

        listener = asyncio.create_task(_gather(collect_events(nats_url, 4.0, topology)))
        await asyncio.sleep(0.3)
        handled = await consume(nats_url, handle, 1.0, topology)
        events = await listener
        store.close()
        return handled, events, monitor

    try:
        handled, events, monitor = asyncio.run(scenario())
    finally:
        asyncio.run(delete_stream(nats_url, topology))
    assert handled == len(_path()) + 1
    assert "unreadable tick message" in monitor.rejected[-1][1]
    kinds = [e["kind"] for e in events if e["account"] == "long-20x"]
    assert kinds == ["margin_call", "liquidation", "margin_call", "recovery"]


def test_nats_feed_options_are_checked(nats_url: str) -> None:
    from margin_engine.core.errors import InputError
    from margin_engine.feeds.nats import parse_feed

    server, topology = parse_feed(f"{nats_url}?stream=S1&prices=a.b&events=c.d&durable=x")
    assert server == nats_url
    assert (topology.stream, topology.prices, topology.events) == ("S1", "a.b", "c.d")
    for bad in ("?stream=a.b", "?prices=a.>", "?colour=red", "?durable="):
        with pytest.raises(InputError):
            parse_feed(nats_url + bad)


async def _gather(stream: object) -> list[dict]:
    return [item async for item in stream]  # type: ignore[attr-defined]
