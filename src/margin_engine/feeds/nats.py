"""NATS JetStream: price ticks in (stream ``PRICES``, subjects ``prices.<SYMBOL>``, JSON
``{"seq", "time_ns", "symbol", "price", "source"}``) and margin events out
(``margin.events.<kind>``). The names are a ``NatsTopology``, set on the feed as
``nats://HOST:PORT?stream=S&prices=P&events=E&durable=D`` so that separate runs (tests,
venues sharing a server) never touch each other's streams.

A durable pull consumer acknowledges a tick only after it is committed, so a killed monitor gets
it again on restart, where the sequence check turns it into a logged duplicate. The feed ends
when no message arrives for ``idle_seconds``, whichever timeout class the client raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from margin_engine.core.errors import InputError
from margin_engine.store.base import Event, Tick

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True, slots=True)
class NatsTopology:
    """Stream, subject prefixes and durable consumer name of one monitor's NATS traffic."""

    stream: str = "PRICES"
    prices: str = "prices"  # ticks on <prices>.<SYMBOL>
    events: str = "margin.events"  # events on <events>.<kind>
    durable: str = "margin-monitor"

    def __post_init__(self) -> None:
        for name in ("stream", "durable"):
            value = getattr(self, name)
            if not _NAME.match(value):
                raise InputError("letters, digits, '_' or '-' only", field=f"--feed {name}",
                                 value=value)
        for name in ("prices", "events"):
            value = getattr(self, name)
            if not _SUBJECT.match(value):
                raise InputError("a subject prefix of dot-separated tokens without wildcards",
                                 field=f"--feed {name}", value=value)

    @property
    def price_subjects(self) -> str:
        return f"{self.prices}.>"


def parse_feed(spec: str) -> tuple[str, NatsTopology]:
    """``nats://HOST:PORT[?stream=..&prices=..&events=..&durable=..]`` -> (server, topology)."""
    parts = urlsplit(spec)
    if parts.scheme != "nats" or not parts.hostname:
        raise InputError("nats://HOST:PORT[?stream=S&prices=P&events=E&durable=D]",
                         field="--feed", value=spec)
    known = {f.name for f in fields(NatsTopology)}
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"feed options among {sorted(known)}", field="--feed",
                         value=unknown[0])
    return f"nats://{parts.hostname}:{parts.port or 4222}", NatsTopology(**options)


async def connect(server: str) -> Any:
    import nats

    try:
        return await nats.connect(server, connect_timeout=3, max_reconnect_attempts=1)
    except Exception as exc:  # noqa: BLE001 - nats raises several unrelated types
        raise InputError(f"a reachable NATS server ({exc})", field="--feed",
                         value=server) from None


async def ensure_stream(js: Any, topology: NatsTopology) -> None:
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(topology.stream)
    except NotFoundError:
        await js.add_stream(name=topology.stream, subjects=[topology.price_subjects])


async def delete_stream(server: str, topology: NatsTopology) -> None:
    """Remove the topology's stream (and with it its consumers), if it exists."""
    from nats.js.errors import NotFoundError

    nc = await connect(server)
    with contextlib.suppress(NotFoundError):
        await nc.jetstream().delete_stream(topology.stream)
    await nc.drain()


async def publish_ticks(server: str, ticks: Sequence[Tick],
                        topology: NatsTopology = NatsTopology()) -> None:
    nc = await connect(server)
    js = nc.jetstream()
    await ensure_stream(js, topology)
    for tick in ticks:
        await js.publish(f"{topology.prices}.{tick.symbol}", json.dumps(asdict(tick)).encode())
    await nc.drain()


def _timeout_classes() -> tuple[type[BaseException], ...]:
    """Every class a pull fetch raises when nothing arrived in time: nats-py raises its own
    ``nats.errors.TimeoutError`` in some versions and a bare ``asyncio.TimeoutError`` (the
    builtin ``TimeoutError`` since Python 3.11) in others (2.16)."""
    from nats.errors import TimeoutError as NatsTimeout

    return (NatsTimeout, TimeoutError)


async def fetch_or_idle(sub: Any, batch: int, idle_seconds: float) -> list[Any] | None:
    """The next batch of messages, or None when none came within ``idle_seconds``."""
    try:
        messages: list[Any] = await sub.fetch(batch=batch, timeout=idle_seconds)
    except _timeout_classes():
        return None
    return messages


INT64_MAX = 2**63 - 1


def tick_from(data: bytes) -> Tick | str:
    """A tick from its JSON message, or the reason it is unreadable: ``seq`` and ``time_ns``
    JSON integers within int64 (``seq`` >= 1), ``price`` a JSON number (not ``true``),
    ``symbol`` and ``source`` strings."""
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            return "unreadable tick message (not a JSON object)"
        seq, time_ns, price = raw["seq"], raw["time_ns"], raw["price"]
        symbol, source = raw["symbol"], raw.get("source", "nats")
    except (ValueError, KeyError, RecursionError) as exc:
        return f"unreadable tick message ({type(exc).__name__}: {exc})"
    for name, value, low in (("seq", seq, 1), ("time_ns", time_ns, -INT64_MAX)):
        if isinstance(value, bool) or not isinstance(value, int) or \
                not low <= value <= INT64_MAX:
            return f"unreadable tick message ({name} must be an integer in [{low}, 2^63 - 1], " \
                   f"got {value!r})"
    if isinstance(price, bool) or not isinstance(price, int | float):
        return f"unreadable tick message (price must be a JSON number, got {price!r})"
    if not isinstance(symbol, str) or not isinstance(source, str):
        return "unreadable tick message (symbol and source must be strings)"
    return Tick(seq, time_ns, symbol, float(price), source)


async def consume(server: str, handle: Callable[[Tick | str], list[Event]],
                  idle_seconds: float = 2.0,
                  topology: NatsTopology = NatsTopology()) -> int:
    """Fetch ticks until none arrive for ``idle_seconds``; events go out on
    ``<events>.<kind>``. Returns the number of messages handled."""
    nc = await connect(server)
    js = nc.jetstream()
    await ensure_stream(js, topology)
    sub = await js.pull_subscribe(topology.price_subjects, durable=topology.durable,
                                  stream=topology.stream)
    handled = 0
    while (messages := await fetch_or_idle(sub, 200, idle_seconds)) is not None:
        for message in messages:
            events = handle(tick_from(message.data))
            for event in events:
                await nc.publish(f"{topology.events}.{event.kind}",
                                 json.dumps(asdict(event)).encode())
            await message.ack()
            handled += 1
    # Drain would wait out its 30 s timeout on the pull subscription's pending fetch inbox:
    # flush what was published and acknowledged, then close.
    await nc.flush()
    await nc.close()
    return handled


async def collect_events(server: str, seconds: float,
                         topology: NatsTopology = NatsTopology()
                         ) -> AsyncIterator[dict[str, Any]]:
    nc = await connect(server)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_message(message: Any) -> None:
        await queue.put(json.loads(message.data))

    await nc.subscribe(f"{topology.events}.>", cb=on_message)
    await asyncio.sleep(seconds)
    await nc.drain()
    while not queue.empty():
        yield await queue.get()
