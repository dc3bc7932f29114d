"""Exactly-once effect over at-least-once NATS delivery: a monitor killed with SIGKILL at random
points, and a NATS server restarted mid-stream, apply every tick once, publish every event
once, and end in the state of an uninterrupted run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from margin_engine.feeds.nats import NatsTopology, delete_stream, parse_feed, publish_ticks
from margin_engine.store.base import EventKind, Tick, open_store
from tests.conftest import MONITOR_MARKET as MARKET
from tests.integration.conftest import committed_ticks, ensure_server

BIN = Path(sys.executable).parent / "margin-engine"
T0 = 1_722_816_000 * 10**9  # 2024-08-05 00:00 UTC


def _ticks(count: int) -> list[Tick]:
    """A seeded BTC/ETH path, a minute apart per symbol: a 12 % slide then a rebound, so
    accounts cross their thresholds both ways."""
    rng = np.random.default_rng(7)
    half = count // 2
    drift = np.concatenate([np.full(half // 2, -0.0009), np.full(half - half // 2, 0.0006)])
    ticks = []
    for k, symbol in enumerate(("BTC", "ETH")):
        level = MARKET["underlyings"][symbol]["index"]  # type: ignore[index]
        path = level * np.exp(np.cumsum(drift + 0.002 * rng.standard_normal(half)))
        ticks += [Tick(0, T0 + (60 * j + k) * 10**9, symbol, round(float(p), 2), "venue")
                  for j, p in enumerate(path)]
    ticks.sort(key=lambda t: t.time_ns)
    return [Tick(n + 1, t.time_ns, t.symbol, t.price, t.source) for n, t in enumerate(ticks)]


def _feed(server: str, run: str, role: str) -> str:
    """One price stream shared by every role of a run; each role its own consumer and events."""
    return (f"{server}?stream=TEST_EXO_{run}&prices=test.{run}.prices"
            f"&events=test.{run}.{role}.events&events_stream=TEST_EXO_{run}_{role}"
            f"&durable=test-{run}-{role}")


def _args(feed: str, store: str, market: Path, *extra: str) -> list[str]:
    return [str(BIN), "monitor", "--feed", feed, "--market", str(market), "--population",
            "300", "--seed", "4", "--store", store, "--idle-seconds", "3", "--json", *extra]


async def _published(server: str, topology: NatsTopology) -> list[str]:
    """The message ids of every event in the role's event stream, in stream order."""
    import nats

    nc = await nats.connect(server)
    js = nc.jetstream()
    info = await js.stream_info(topology.events_stream)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(topology.events_stream, seq)
        ids.append((message.headers or {}).get("Nats-Msg-Id", ""))
    await nc.close()
    return ids


def _check_published_once(server: str, feed: str, db: Path, *, in_order: bool = True) -> None:
    """Every stored event is in the event stream exactly once (in the store's order unless the
    server itself went down: messages written into its dying connection are sent again after
    ones that were buffered during the reconnection; the message id carries the order)."""
    store = open_store(f"sqlite:{db}")
    expected = [f"{store.store_id()}-{seq}" for seq, _ in store.events()]
    store.close()
    ids = asyncio.run(_published(server, parse_feed(feed)[1]))
    assert len(ids) == len(set(ids)) == len(expected)
    if in_order:
        assert ids == expected
    else:
        assert sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1])) == expected


def _cleanup(server: str, run: str, roles: tuple[str, ...]) -> None:
    for role in roles:
        asyncio.run(delete_stream(server, parse_feed(_feed(server, run, role))[1]))


@pytest.fixture
def market_file(tmp_path: Path) -> Path:
    path = tmp_path / "market.json"
    path.write_text(json.dumps(MARKET))
    return path


@pytest.mark.slow  # five monitor processes over 1,000 NATS ticks: about 30 s
def test_kill_minus_9_over_nats_applies_and_publishes_each_once(
        tmp_path: Path, nats_url: str, market_file: Path) -> None:
    run = uuid.uuid4().hex[:10]
    ticks = _ticks(1000)
    reference_feed, killed_feed = _feed(nats_url, run, "ref"), _feed(nats_url, run, "killed")
    try:
        asyncio.run(publish_ticks(nats_url, ticks, parse_feed(reference_feed)[1]))
        done = subprocess.run(_args(reference_feed, f"sqlite:{tmp_path / 'ref.db'}",
                                    market_file), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        expected = json.loads(done.stdout)
        assert expected["store_totals"]["ticks"] == 1000
        assert expected["store_totals"]["events"] > 50  # the path moves accounts both ways

        db = tmp_path / "killed.db"
        rng = random.Random(3)
        progress: list[int] = []
        while len(progress) < 3:
            process = subprocess.Popen(_args(killed_feed, f"sqlite:{db}", market_file),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            before = progress[-1] if progress else 0
            deadline = time.monotonic() + 120
            while (process.poll() is None and time.monotonic() < deadline
                   and committed_ticks(db) <= before):
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            assert process.poll() is None, "the monitor ended before it could be killed"
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            progress.append(committed_ticks(db))
        print(f"SIGKILL after {progress} committed ticks")
        assert 0 < progress[0] < progress[1] < progress[2] < 1000, progress
        final = subprocess.run(_args(killed_feed, f"sqlite:{db}", market_file),
                               capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr
        resumed = json.loads(final.stdout)
        assert resumed["state_hash"] == expected["state_hash"]
        a, b = open_store(f"sqlite:{tmp_path / 'ref.db'}"), open_store(f"sqlite:{db}")
        assert [t.seq for t in b.ticks()] == list(range(1, 1001))  # each tick once, in order
        assert [e for _, e in a.events()] == [e for _, e in b.events()]
        a.close()
        b.close()
        _check_published_once(nats_url, killed_feed, db)
        replayed = subprocess.run([str(BIN), "replay", "--store", f"sqlite:{db}", "--json"],
                                  capture_output=True, text=True, timeout=300)
        assert replayed.returncode == 0, replayed.stdout
        assert json.loads(replayed.stdout)["gaps"] == []
    finally:
        _cleanup(nats_url, run, ("ref", "killed"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A NATS server of this test only (its own port and store directory), and a function
    that restarts it."""
    ensure_server(4222, "NATS")  # the machine's server: proves the binary is installed
    port = _free_port()
    command = ["/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd",
               str(tmp_path / "js")]
    server: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> None:
        server["p"] = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("the test's own NATS server did not start")

    def stop() -> None:
        server["p"].send_signal(signal.SIGKILL)
        server["p"].wait()

    start()
    try:
        yield f"nats://127.0.0.1:{port}", (stop, start)
    finally:
        stop()


@pytest.mark.slow  # a server restart and two monitors: about 20 s
def test_a_nats_restart_mid_stream_loses_nothing(
        tmp_path: Path, own_nats: tuple[str, Any], market_file: Path) -> None:
    server, (stop, start) = own_nats
    run = uuid.uuid4().hex[:10]
    ticks = _ticks(800)
    reference_feed, outage_feed = _feed(server, run, "ref"), _feed(server, run, "outage")
    asyncio.run(publish_ticks(server, ticks, parse_feed(reference_feed)[1]))
    done = subprocess.run(_args(reference_feed, f"sqlite:{tmp_path / 'ref.db'}", market_file),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = json.loads(done.stdout)

    db = tmp_path / "outage.db"
    process = subprocess.Popen(_args(outage_feed, f"sqlite:{db}", market_file,
                                     "--max-outage", "30"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and committed_ticks(db) < 100:
        time.sleep(0.01)
    stop()  # the server dies mid-stream (SIGKILL) ...
    at_outage = committed_ticks(db)
    time.sleep(2.0)
    start()  # ... and comes back on the same port with its JetStream store
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()
    assert at_outage < 800, "the outage came after the stream ended"
    resumed = json.loads(out)
    assert resumed["state_hash"] == expected["state_hash"]
    assert resumed["store_totals"]["ticks"] == 800
    kinds = resumed["store_totals"]["events_by_kind"]
    assert kinds.get(EventKind.FEED_DOWN, 0) >= 1
    assert kinds.get(EventKind.FEED_UP, 0) >= 1
    _check_published_once(server, outage_feed, db, in_order=False)


def test_the_outbox_resumes_from_the_event_stream_not_only_its_cursor(
        tmp_path: Path, nats_url: str) -> None:
    """A crash after events were published but before the outbox cursor was written: the
    restarted publisher finds them in the event stream (by message id) and does not publish
    them again, whatever the de-duplication window; unpublished ones go out once."""
    import nats

    from margin_engine.feeds.nats import EventOutbox, ensure_stream
    from margin_engine.store.base import Event

    run = uuid.uuid4().hex[:10]
    topology = parse_feed(_feed(nats_url, run, "outbox"))[1]
    store = open_store(f"sqlite:{tmp_path / 'o.db'}")
    store.save_start({"store_id": f"s{run}"}, [], [], [])
    store.record_events([Event(1, EventKind.MARGIN_CALL, f"a{k}", "{}") for k in range(5)])

    async def scenario() -> list[str]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await ensure_stream(js, topology)
        first = EventOutbox(store, topology)
        assert await first.flush(js)  # published; the process dies before first.commit()
        store.record_events([Event(2, EventKind.RECOVERY, "a0", "{}")])
        second = EventOutbox(store, topology)
        assert second.published == 0  # its cursor never moved ...
        await second.resume(js)
        assert second.published == 5  # ... the stream says how far it got
        assert await second.flush(js)
        second.commit()
        await nc.close()
        return await _published(nats_url, topology)

    try:
        ids = asyncio.run(scenario())
    finally:
        store.close()
        _cleanup(nats_url, run, ("outbox",))
    assert ids == [f"s{run}-{k}" for k in range(1, 7)]
