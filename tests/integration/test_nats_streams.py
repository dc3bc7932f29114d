"""The monitor's JetStream streams on a server that already holds streams of its own (the
machine's NATS server): JetStream gives a subject to one stream only. Before: a stream name
of ours that did not exist, with subjects another stream held, ended in a traceback ('subjects
overlap with an existing stream'); a stream of ours holding other subjects was taken as it
was and the monitor waited on it; and the monitor bench took the default price subjects, so
it failed on any server where a monitor had run."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from margin_engine.core.errors import InputError
from margin_engine.feeds.nats import NatsTopology, ensure_stream


async def _streams(url: str, create: dict[str, str], remove: list[str]) -> None:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    js = nc.jetstream()
    for name, subjects in create.items():
        await js.add_stream(name=name, subjects=[subjects])
    for name in remove:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
    await nc.close()


@pytest.fixture
def held(nats_url: str) -> Iterator[tuple[str, str]]:
    """A stream of this test's own holding ``t<run>.prices.>``: (its name, the prefix)."""
    run = uuid.uuid4().hex[:10]
    name, prefix = f"T{run}_HELD", f"t{run}.prices"
    asyncio.run(_streams(nats_url, {name: f"{prefix}.>"}, []))
    yield name, prefix
    asyncio.run(_streams(nats_url, {}, [name, f"T{run}_OURS", f"T{run}_EVENTS"]))


def _ensure(url: str, topology: NatsTopology) -> None:
    import nats

    async def run() -> None:
        nc = await nats.connect(url)
        try:
            await ensure_stream(nc.jetstream(), topology)
        finally:
            await nc.close()

    asyncio.run(run())


def test_subjects_held_by_another_stream_name_it(nats_url: str, held: tuple[str, str]) -> None:
    name, prefix = held
    ours = name.replace("_HELD", "_OURS")
    topology = NatsTopology(stream=ours, prices=prefix, events=f"{prefix}-events",
                            events_stream=name.replace("_HELD", "_EVENTS"))
    with pytest.raises(InputError) as raised:
        _ensure(nats_url, topology)
    assert raised.value.field == "--feed"
    assert raised.value.value == f"stream={ours}"
    assert f"held by: {name} ['{prefix}.>']" in str(raised.value), str(raised.value)
    assert "?stream=NAME" in str(raised.value)


def test_a_stream_of_ours_holding_other_subjects_is_refused(nats_url: str,
                                                            held: tuple[str, str]) -> None:
    name, prefix = held
    topology = NatsTopology(stream=name, prices=f"{prefix}-elsewhere",
                            events=f"{prefix}-events",
                            events_stream=name.replace("_HELD", "_EVENTS"))
    with pytest.raises(InputError, match=rf"'{name}' holds \['{prefix}\.>'\]") as raised:
        _ensure(nats_url, topology)
    assert raised.value.value == f"stream={name}"


def test_the_monitor_bench_takes_subjects_of_its_own(nats_url: str) -> None:
    """With a stream holding the default price subjects on the server (a monitor ran there),
    the bench's events still go through NATS and are all acknowledged."""
    import nats
    from nats.js.errors import BadRequestError

    async def hold_default(name: str) -> bool:
        """Whether this test made a stream holding the default price subjects (False: a
        stream of the server holds them already)."""
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().add_stream(name=name, subjects=["prices.>"])
            return True
        except BadRequestError:  # subjects overlap with an existing stream
            return False
        finally:
            await nc.close()

    name = f"T{uuid.uuid4().hex[:10]}_DEFAULT"
    mine = [name] if asyncio.run(hold_default(name)) else []
    try:
        from margin_engine.bench.monitor_bench import run_monitor_bench

        report = run_monitor_bench(accounts=200, positions=2, ticks=10, rows=10,
                                   postgres=None, nats=nats_url)
    finally:
        asyncio.run(_streams(nats_url, {}, mine))
    assert report["with_store_and_outbox"]["outbox"] == "nats"
    assert report["with_store_and_outbox"]["events_all_acknowledged"] is True


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("prices.>", "prices.>", True), ("prices.>", "prices.BTC", True),
    ("prices.>", "prices", False), ("prices.*", "prices.BTC.x", False),
    ("prices.*", "prices.BTC", True), ("*.BTC", "prices.>", True),
    ("bench.1.prices.>", "prices.>", False), (">", "anything.at.all", True),
])
def test_subjects_overlap(a: str, b: str, overlap: bool) -> None:
    from margin_engine.feeds.nats import subjects_overlap

    assert subjects_overlap(a, b) is overlap
    assert subjects_overlap(b, a) is overlap


def test_a_server_without_jetstream_is_one_error(tmp_path: Path) -> None:
    """A NATS server started without -js (plain NATS, a mistake easily made): before, a
    traceback (ServiceUnavailableError)."""
    import os
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        message = "!!! nats-server is not installed: cannot start one without JetStream"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10.0
        while True:
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)
        with pytest.raises(InputError, match="a NATS server with JetStream enabled") as raised:
            _ensure(f"nats://127.0.0.1:{port}", NatsTopology())
        assert raised.value.field == "--feed"
    finally:
        server.terminate()
        server.wait(timeout=10)
