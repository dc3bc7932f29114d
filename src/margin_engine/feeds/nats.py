"""NATS JetStream: price ticks in (stream PRICES, subjects ``prices.<SYMBOL>``, JSON
``{"seq", "time_ns", "symbol", "price", "source"}``) and margin events out
(``margin.events.<kind>``).

A durable pull consumer acknowledges a tick only after it is committed, so a killed monitor gets
it again on restart, where the sequence check turns it into a logged duplicate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from margin_engine.core.errors import InputError
from margin_engine.store.base import Event, Tick

STREAM = "PRICES"
SUBJECTS = ["prices.>"]
EVENTS = "margin.events"


def server_of(spec: str) -> str:
    parts = urlsplit(spec)
    if parts.scheme != "nats" or not parts.hostname:
        raise InputError("nats://HOST:PORT", field="--feed", value=spec)
    return f"nats://{parts.hostname}:{parts.port or 4222}"


async def connect(server: str) -> Any:
    import nats

    try:
        return await nats.connect(server, connect_timeout=3, max_reconnect_attempts=1)
    except Exception as exc:  # noqa: BLE001 - nats raises several unrelated types
        raise InputError(f"a reachable NATS server ({exc})", field="--feed",
                         value=server) from None


async def ensure_stream(js: Any) -> None:
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(name=STREAM, subjects=SUBJECTS)


async def publish_ticks(server: str, ticks: Sequence[Tick]) -> None:
    nc = await connect(server)
    js = nc.jetstream()
    await ensure_stream(js)
    for tick in ticks:
        await js.publish(f"prices.{tick.symbol}", json.dumps(asdict(tick)).encode())
    await nc.drain()


def tick_from(data: bytes) -> Tick | str:
    try:
        raw = json.loads(data)
        return Tick(int(raw["seq"]), int(raw["time_ns"]), str(raw["symbol"]),
                    float(raw["price"]), str(raw.get("source", "nats")))
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable tick message ({exc})"


async def consume(server: str, durable: str, handle: Callable[[Tick | str], list[Event]],
                  idle_seconds: float = 2.0) -> int:
    """Fetch ticks until none arrive for ``idle_seconds``; events go out on ``margin.events``.
    Returns the number of messages handled."""
    from nats.errors import TimeoutError as NatsTimeout

    nc = await connect(server)
    js = nc.jetstream()
    await ensure_stream(js)
    sub = await js.pull_subscribe("prices.>", durable=durable, stream=STREAM)
    handled = 0
    while True:
        try:
            messages = await sub.fetch(batch=200, timeout=idle_seconds)
        except NatsTimeout:
            break
        for message in messages:
            events = handle(tick_from(message.data))
            for event in events:
                await nc.publish(f"{EVENTS}.{event.kind}", json.dumps(asdict(event)).encode())
            await message.ack()
            handled += 1
    await nc.drain()
    return handled


async def collect_events(server: str, seconds: float) -> AsyncIterator[dict[str, Any]]:
    nc = await connect(server)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_message(message: Any) -> None:
        await queue.put(json.loads(message.data))

    await nc.subscribe(f"{EVENTS}.>", cb=on_message)
    await asyncio.sleep(seconds)
    await nc.drain()
    while not queue.empty():
        yield await queue.get()
