"""NATS JetStream: price ticks in (stream ``PRICES``, subjects ``prices.<SYMBOL>``, JSON
``{"seq", "time_ns", "symbol", "price", "source"}``) and margin events out (JetStream stream
``MARGIN_EVENTS``, subjects ``margin.events.<kind>``). The names are a ``NatsTopology``, set on
the feed as ``nats://HOST:PORT?stream=S&prices=P&events=E&events_stream=X&durable=D`` so that
separate runs (tests, venues sharing a server) never touch each other's streams.

Exactly-once effect over at-least-once delivery:

* A tick's sequence is its **stream sequence** (assigned by the server, so a producer cannot
  forge the order; the message's own ``seq`` is checked but orders nothing). The store commits
  the tick with its events and the stream's cursor in one transaction.
* The pull consumer is re-created at every start to deliver from the store's cursor + 1, in
  stream order, so ticks a killed monitor fetched but never committed come back first and in
  order (not after the ack wait, behind newer ticks). A message is acknowledged after its commit;
  one redelivered within a run (ack wait passed) has a sequence <= the cursor and is skipped as
  a duplicate.
* Events are a transactional outbox: written with their tick, published after with the message
  id ``<store id>-<event seq>`` (JetStream de-duplicates within its window); on resume the
  publisher first reads the newest event of this store already in the event stream, so nothing
  is published twice even after the window, and publishes the rest.
* The connection reconnects with a fixed wait for at most ``max_outage_seconds``; the outage and
  the catch-up are events (``feed_down``, ``feed_up``). The feed ends when no message arrives
  for ``idle_seconds`` while connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from margin_engine.core.errors import InputError, MarginEngineError
from margin_engine.core.net import Unreachable, address, first_bytes, shown
from margin_engine.io.jsonfields import loads_unique
from margin_engine.store.base import OUTBOX, Event, EventKind, Repository, Tick

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True, slots=True)
class NatsTopology:
    """Stream, subject prefixes and durable consumer name of one monitor's NATS traffic."""

    stream: str = "PRICES"
    prices: str = "prices"  # ticks on <prices>.<SYMBOL>
    events: str = "margin.events"  # events on <events>.<kind>
    durable: str = "margin-monitor"
    events_stream: str = "MARGIN_EVENTS"  # the JetStream stream holding <events>.>

    def __post_init__(self) -> None:
        for name in ("stream", "durable", "events_stream"):
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

    @property
    def event_subjects(self) -> str:
        return f"{self.events}.>"


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Reconnect every ``wait_seconds`` while the server is unreachable; give up (the monitor
    ends with an error, nothing lost: the store holds every committed tick and unpublished
    event) after ``max_outage_seconds``."""

    wait_seconds: float = 0.5
    max_outage_seconds: float = 60.0

    @property
    def attempts(self) -> int:
        return max(1, math.ceil(self.max_outage_seconds / self.wait_seconds))


def parse_feed(spec: str) -> tuple[str, NatsTopology]:
    """``nats://HOST:PORT[?stream=..&prices=..&events=..&durable=..]`` -> (server, topology)."""
    parts = urlsplit(spec)
    if parts.scheme != "nats" or not parts.hostname:
        raise InputError("nats://HOST:PORT[?stream=S&prices=P&events=E&events_stream=X&durable=D]",
                         field="--feed", value=spec)
    known = {f.name for f in fields(NatsTopology)}
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"feed options among {sorted(known)}", field="--feed",
                         value=unknown[0])
    return f"nats://{parts.hostname}:{parts.port or 4222}", NatsTopology(**options)


class FeedLost(MarginEngineError):
    """The NATS server stayed unreachable longer than the reconnect policy allows."""


@dataclass(slots=True)
class _Link:
    """Connection state shared with the client's callbacks."""

    down_since: float | None = None
    outages: int = 0
    notices: list[tuple[EventKind, dict[str, Any]]] = field(default_factory=list)


async def connect(server: str, policy: ReconnectPolicy | None = None,
                  link: _Link | None = None) -> Any:
    """A connection; with a policy, one that reconnects and reports outages to ``link``."""
    import nats

    async def quiet(exc: Exception) -> None:
        """nats' own error callback logs every failed attempt with its traceback (120 of
        them while a monitor waits out an outage); the outage is reported by the events and
        a connection that never comes up by the InputError below."""

    # the whole first connection is bounded: nats' own attempts each wait out their
    # time-out at a server that never answers (six of them in a 3 s outage policy took 25 s)
    deadline = CONNECT_SECONDS if policy is None else policy.max_outage_seconds
    options: dict[str, Any] = {"connect_timeout": min(CONNECT_SECONDS, deadline),
                               "max_reconnect_attempts": 1, "error_cb": quiet}
    if policy is not None and link is not None:
        async def down() -> None:
            if link.down_since is None:
                link.down_since = time.monotonic()
                link.outages += 1
                link.notices.append((EventKind.FEED_DOWN, {"server": server}))

        async def up() -> None:
            lasted = time.monotonic() - (link.down_since or time.monotonic())
            link.down_since = None
            link.notices.append((EventKind.FEED_UP, {"server": server,
                                                     "outage_seconds": round(lasted, 3)}))

        options.update(max_reconnect_attempts=policy.attempts,
                       reconnect_time_wait=policy.wait_seconds,
                       disconnected_cb=down, reconnected_cb=up)
    try:
        return await asyncio.wait_for(nats.connect(server, **options), deadline)
    except Exception as exc:  # noqa: BLE001 - nats raises several unrelated types
        tried = "" if policy is None else f"; tried for {deadline:g} s (--max-outage)"
        why = await asyncio.to_thread(why_not_nats, server, str(exc) or type(exc).__name__)
        raise InputError(f"a reachable NATS server ({why}{tried})", field="--feed",
                         value=server) from None


CONNECT_SECONDS = 3.0  # a connection attempt's time-out
GREETING_SECONDS = 1.0  # a NATS server sends its INFO line as soon as it accepts


def why_not_nats(server: str, failure: str) -> str:
    """Why no NATS connection came up at ``server`` (nats://HOST:PORT), by what answers
    there now: nothing (refused, no answer, an unknown host), a server that sends no greeting
    or another protocol's, or a NATS server (then nats' own ``failure``: authentication,
    TLS)."""
    parts = urlsplit(server)
    host, port = parts.hostname or "", parts.port or 4222
    where = address(host, port)
    try:
        greeting = first_bytes(host, port, GREETING_SECONDS)
    except Unreachable as exc:
        return str(exc)
    if greeting.startswith(b"INFO "):
        return f"a NATS server answers at {where}, but the connection failed: {failure}"
    if not greeting:
        return (f"the server at {where} sent no NATS greeting in {GREETING_SECONDS:g} s: "
                "another kind of server?")
    return f"the server at {where} is not a NATS server: it greets with '{shown(greeting)}'"


async def ensure_stream(js: Any, topology: NatsTopology) -> None:
    """The price stream and the event stream, created if missing. InputError by ``--feed``
    when a stream of that name holds no subject of ours (the monitor would wait on a stream
    nothing of ours reaches), or when it is missing and cannot be created because other
    streams already hold our subjects (JetStream gives a subject to one stream), naming
    them."""
    from nats.errors import NoRespondersError
    from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

    for option, prefix, name, subjects in (
            ("stream", "prices", topology.stream, topology.price_subjects),
            ("events_stream", "events", topology.events_stream, topology.event_subjects)):
        try:
            info = await js.stream_info(name)
        except (ServiceUnavailableError, NoRespondersError):
            raise InputError("a NATS server with JetStream enabled (nats-server -js): this one "
                             "answers, but not to JetStream's requests", field="--feed",
                             value=f"{option}={name}") from None
        except NotFoundError:
            try:
                await js.add_stream(name=name, subjects=[subjects])
            except BadRequestError as exc:
                holders = [f"{i.config.name} {i.config.subjects}"
                           for i in await js.streams_info()
                           if any(subjects_overlap(subjects, held)
                                  for held in i.config.subjects or ())]
                raise InputError(
                    f"a stream for {subjects!r}: {name!r} does not exist and JetStream refused "
                    f"to create it ({exc.description}; held by: {', '.join(holders) or '?'}): "
                    f"name that stream with ?{option}=NAME, or other subjects with "
                    f"?{prefix}=PREFIX",
                    field="--feed", value=f"{option}={name}") from None
            continue
        held = list(info.config.subjects or ())
        if not any(subjects_overlap(subjects, h) for h in held):
            raise InputError(
                f"a stream holding {subjects!r}: {name!r} holds {held}: give its subject "
                f"prefix with ?{prefix}=PREFIX, or another stream with ?{option}=NAME",
                field="--feed",
                value=f"{option}={name}")


def subjects_overlap(a: str, b: str) -> bool:
    """Whether two NATS subjects (``*``: one token, ``>``: one or more at the end) match a
    subject in common."""
    ta, tb = a.split("."), b.split(".")
    for k in range(max(len(ta), len(tb))):
        x = ta[k] if k < len(ta) else None
        y = tb[k] if k < len(tb) else None
        if x is None or y is None:
            return False
        if x == ">" or y == ">":
            return True
        if x != y and "*" not in (x, y):
            return False
    return True


async def delete_stream(server: str, topology: NatsTopology) -> None:
    """Remove the topology's streams (and with them their consumers), if they exist."""
    from nats.js.errors import NotFoundError

    nc = await connect(server)
    for name in (topology.stream, topology.events_stream):
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(name)
    await nc.drain()


async def publish_ticks(server: str, ticks: Sequence[Tick],
                        topology: NatsTopology = NatsTopology()) -> None:
    nc = await connect(server)
    js = nc.jetstream()
    await ensure_stream(js, topology)
    for tick in ticks:
        await js.publish(f"{topology.prices}.{tick.symbol}", json.dumps(asdict(tick)).encode())
    await nc.drain()


async def pull_after(js: Any, topology: NatsTopology, cursor: int) -> Any:
    """A pull subscription delivering the price stream from ``cursor + 1`` in order: the
    durable consumer is re-created, so whatever it delivered before (and a killed monitor never
    committed) is delivered again, first."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(topology.stream, topology.durable)
    config = ConsumerConfig(durable_name=topology.durable, ack_policy=AckPolicy.EXPLICIT,
                            ack_wait=60.0, max_ack_pending=1000,
                            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                            opt_start_seq=cursor + 1)
    return await js.pull_subscribe(topology.price_subjects, durable=topology.durable,
                                   stream=topology.stream, config=config)


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
        raw = loads_unique(data)
        if not isinstance(raw, dict):
            return "unreadable tick message (not a JSON object)"
        seq, time_ns, price = raw["seq"], raw["time_ns"], raw["price"]
        symbol, source = raw["symbol"], raw.get("source", "nats")
    except InputError as exc:  # a key given twice
        return f"unreadable tick message ({exc})"
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


class EventOutbox:
    """Publishes the store's events in order, each once, with JetStream de-duplication.

    ``send`` hands every unsent event to the connection without waiting for the server
    (``publish_async``), so the tick path does not wait a round trip per event; the
    acknowledgements are collected in order and ``published`` (the cursor written by
    ``commit``) advances over the contiguous acknowledged prefix. A failed or lost message
    sends everything after the cursor again (the message ids make the repeats harmless)."""

    def __init__(self, store: Repository, topology: NatsTopology) -> None:
        self.store, self.topology = store, topology
        self.store_id = store.store_id()
        self.published = store.cursor(OUTBOX)  # acknowledged through this event seq
        self.sent = self.published  # handed to the connection through this event seq
        self.inflight: deque[tuple[int, asyncio.Future[Any]]] = deque()
        self.count = 0
        self.connection = 0  # outages seen: a new number means a new connection

    def message_id(self, seq: int) -> str:
        return f"{self.store_id}-{seq}"

    async def resume(self, js: Any) -> None:
        """Move the cursor past events of this store the stream already holds (published
        before a crash that came before the cursor was written)."""
        from nats.js.errors import NotFoundError

        prefix = f"{self.store_id}-"
        for kind in EventKind:
            try:
                message = await js.get_last_msg(self.topology.events_stream,
                                                f"{self.topology.events}.{kind}")
            except NotFoundError:
                continue
            msg_id = (message.headers or {}).get("Nats-Msg-Id", "")
            if msg_id.startswith(prefix) and msg_id[len(prefix):].isdigit():
                self.published = max(self.published, int(msg_id[len(prefix):]))
        self.sent = max(self.sent, self.published)
        self.store.mark_published(self.published)

    async def send(self, js: Any, batch: int = 1000, connection: int = 0) -> bool:
        """Hand every unsent event to the connection; False if that failed (the events stay
        in the outbox and go out again from the cursor). ``connection`` counts the outages:
        on a new connection everything after the acknowledged cursor goes out again first,
        in order (what went into the lost one may never have arrived)."""
        if connection != self.connection:
            self.connection = connection
            self.resend()
        self.collect()
        try:
            while pending := self.store.events_after(self.sent, batch):
                for seq, event in pending:
                    future = await js.publish_async(
                        f"{self.topology.events}.{event.kind}",
                        json.dumps(asdict(event)).encode(),
                        headers={"Nats-Msg-Id": self.message_id(seq)})
                    self.inflight.append((seq, future))
                    self.sent = seq
        except Exception:  # noqa: BLE001 - any failure leaves the events in the outbox
            self.resend()
            return False
        await asyncio.sleep(0)  # let the client's flusher put them on the wire now
        return True

    def collect(self) -> None:
        """Advance ``published`` over the acknowledged head of what was sent."""
        while self.inflight and self.inflight[0][1].done():
            seq, future = self.inflight.popleft()
            if future.cancelled() or future.exception() is not None:
                self.resend()
                return
            self.published = seq
            self.count += 1

    def resend(self) -> None:
        """Forget what is in flight: the next ``send`` starts again after the acknowledged
        cursor (after a lost connection, whose unacknowledged messages may never arrive)."""
        for _, future in self.inflight:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: not logged as never retrieved
        self.inflight.clear()
        self.sent = self.published

    async def flush(self, js: Any, timeout: float = 5.0, attempts: int = 3,
                    connection: int | None = None) -> bool:
        """Send everything and wait for every acknowledgement (again from the cursor when
        some never come); True when all are in."""
        for _ in range(attempts):
            if await self.send(js, connection=self.connection if connection is None
                               else connection) and self.inflight:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.gather(*(f for _, f in self.inflight),
                                                          return_exceptions=True), timeout)
            self.collect()
            if not self.inflight and self.sent == self.published:
                return True
            self.resend()
        return False

    def commit(self) -> None:
        self.collect()
        self.store.mark_published(self.published)


Handler = Callable[[Tick | str, int], list[Event]]


async def consume(server: str, handle: Handler, idle_seconds: float = 2.0,
                  topology: NatsTopology = NatsTopology(), *, store: Repository | None = None,
                  reconnect: ReconnectPolicy = ReconnectPolicy(), batch: int = 100) -> int:
    """Apply ticks from the store's cursor until none arrive for ``idle_seconds`` (while
    connected). ``handle(tick or unreadable reason, stream sequence)`` commits a tick and
    returns its events; with a store, events go out through its outbox, without one they are
    published directly (at most once). Returns the number of messages handled."""
    link = _Link()
    nc = await connect(server, reconnect, link)
    js = nc.jetstream()
    await ensure_stream(js, topology)
    outbox = EventOutbox(store, topology) if store is not None else None
    if outbox is not None:
        assert store is not None
        store.follow(topology.stream)
        await outbox.resume(js)
        await outbox.flush(js)
    handled_through = store.cursor(topology.stream) if store else 0
    sub = await pull_after(js, topology, handled_through)
    subscribed_at_outage = link.outages
    handled = 0
    while True:
        _record_notices(link, store)
        if nc.is_closed:
            if outbox is not None:
                outbox.commit()
            raise FeedLost(f"the NATS server {server} was unreachable for more than "
                           f"{reconnect.max_outage_seconds:g} s; every committed tick and "
                           "event is in the store: restart the monitor to resume")
        if not nc.is_connected:
            await asyncio.sleep(0.05)
            continue
        if link.outages != subscribed_at_outage:
            # Messages delivered into the lost connection would only come back after the ack
            # wait, behind newer ones: deliver again from the last handled one instead.
            with contextlib.suppress(Exception):
                sub = await _resubscribe(js, topology, sub, handled_through)
                subscribed_at_outage = link.outages
            continue
        outages = link.outages
        try:
            messages = await fetch_or_idle(sub, batch, idle_seconds)
        except Exception:  # noqa: BLE001 - a fetch cut by an outage: try again once back
            messages = []
        if messages is None:
            if link.outages == outages and nc.is_connected:
                break  # idle while connected: the feed has ended
            continue
        for message in messages:
            seq = message.metadata.sequence.stream
            if seq <= handled_through:  # redelivered after its ack wait: already handled
                with contextlib.suppress(Exception):
                    await message.ack()
                continue
            if seq > handled_through + 1 and await _exists(js, topology, handled_through + 1):
                # One or more messages were skipped (delivered into a broken fetch): go back.
                sub = await _resubscribe(js, topology, sub, handled_through)
                break
            item = tick_from(message.data)
            if isinstance(item, Tick):
                item = replace(item, seq=seq)  # the stream orders; the producer's seq does not
            events = handle(item, seq)
            handled_through = seq
            if outbox is not None:
                await outbox.send(js, connection=link.outages)
            else:
                for event in events:
                    await nc.publish(f"{topology.events}.{event.kind}",
                                     json.dumps(asdict(event)).encode())
            with contextlib.suppress(Exception):  # an ack lost in an outage: the cursor holds
                await message.ack()
            handled += 1
        if outbox is not None:
            outbox.commit()
    _record_notices(link, store)
    if outbox is not None:
        if not await outbox.flush(js, connection=link.outages):
            outbox.commit()
            raise FeedLost(f"the NATS server {server} did not acknowledge every event; they "
                           "stay in the store's outbox: restart the monitor to publish them")
        outbox.commit()
    # Drain would wait out its 30 s timeout on the pull subscription's pending fetch inbox:
    # flush what was published and acknowledged, then close.
    await nc.flush()
    await nc.close()
    return handled


async def _resubscribe(js: Any, topology: NatsTopology, sub: Any, cursor: int) -> Any:
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    return await pull_after(js, topology, cursor)


async def _exists(js: Any, topology: NatsTopology, seq: int) -> bool:
    """Whether the price stream still holds message ``seq`` (not removed by its limits)."""
    from nats.js.errors import NotFoundError

    try:
        await js.get_msg(topology.stream, seq)
    except NotFoundError:
        return False
    return True


def _record_notices(link: _Link, store: Repository | None) -> None:
    """Outage and catch-up notices become events in the outbox (outside the replayed log)."""
    if not link.notices or store is None:
        link.notices.clear()
        return
    last = store.last_tick_seq()
    store.record_events([Event(last, kind, None, json.dumps(payload, sort_keys=True))
                         for kind, payload in link.notices])
    link.notices.clear()


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
