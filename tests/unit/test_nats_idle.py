"""The NATS feed ends on idle whichever timeout class the client's fetch raises; a feed address
with no NATS server behind it is one error within the outage policy, saying what is there."""

from __future__ import annotations

import asyncio
import time

import pytest

from margin_engine.feeds.nats import fetch_or_idle
from tests.unit.loopback import loopback_server


class _Subscription:
    """A pull subscription whose fetch raises ``error`` (or returns ``batch``)."""

    def __init__(self, error: BaseException | None = None, batch: list[str] | None = None):
        self.error, self.batch = error, batch or []

    async def fetch(self, batch: int, timeout: float) -> list[str]:
        if self.error is not None:
            raise self.error
        return self.batch


def _nats_timeout() -> BaseException:
    from nats.errors import TimeoutError as NatsTimeout

    return NatsTimeout()


@pytest.mark.parametrize("error", [asyncio.TimeoutError(), _nats_timeout()],  # noqa: UP041
                         ids=["asyncio", "nats"])
def test_fetch_timeout_means_idle(error: BaseException) -> None:
    assert asyncio.run(fetch_or_idle(_Subscription(error), 10, 0.1)) is None


def test_fetch_returns_messages_and_other_errors_propagate() -> None:
    assert asyncio.run(fetch_or_idle(_Subscription(batch=["m"]), 10, 0.1)) == ["m"]
    with pytest.raises(ConnectionError):
        asyncio.run(fetch_or_idle(_Subscription(ConnectionError("down")), 10, 0.1))


@pytest.mark.parametrize(("message", "reason"), [
    (b'{"seq": 1, "time_ns": 1, "symbol": "BTC", "price": true}', "price must be a JSON number"),
    (b'{"seq": 1, "time_ns": 1, "symbol": "BTC", "price": "65000"}', "price must be a JSON"),
    (b'{"seq": 9223372036854775808, "time_ns": 1, "symbol": "BTC", "price": 1}', "seq must"),
    (b'{"seq": true, "time_ns": 1, "symbol": "BTC", "price": 1}', "seq must"),
    (b'{"seq": 1.5, "time_ns": 1, "symbol": "BTC", "price": 1}', "seq must"),
    (b'{"seq": 1, "time_ns": 1, "symbol": 7, "price": 1}', "symbol and source"),
    (b'[1, 2]', "not a JSON object"),
    (b'{"seq": 1}', "KeyError"),
    (b'[' * 5000 + b']' * 5000, "unreadable"),
])
def test_hostile_tick_messages_are_unreadable_not_read(message: bytes, reason: str) -> None:
    from margin_engine.feeds.nats import tick_from

    result = tick_from(message)
    assert isinstance(result, str)
    assert reason in result


def test_a_good_tick_message_reads() -> None:
    from margin_engine.feeds.nats import tick_from
    from margin_engine.store.base import Tick

    assert tick_from(b'{"seq": 3, "time_ns": 5, "symbol": "BTC", "price": 65000}') == \
        Tick(3, 5, "BTC", 65000.0, "nats")


def test_a_server_that_never_answers_is_one_error_not_a_traceback_per_attempt(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """A monitor started against a NATS address nobody listens at waits out its outage
    policy, then stops with the feed's error. Before: nats' own error callback logged each of
    the policy's attempts with its traceback (118 in a minute on the monitor's default)."""
    import socket

    from margin_engine.core.errors import InputError
    from margin_engine.feeds.nats import ReconnectPolicy, _Link, connect

    with socket.socket() as probe:  # a loopback port nobody listens at
        probe.bind(("127.0.0.1", 0))
        server = f"nats://127.0.0.1:{probe.getsockname()[1]}"
        with pytest.raises(InputError, match="a reachable NATS server") as raised:
            asyncio.run(connect(server, ReconnectPolicy(wait_seconds=0.05,
                                                        max_outage_seconds=0.3), _Link()))
    assert raised.value.field == "--feed"
    assert "tried for 0.3 s (--max-outage)" in str(raised.value)
    assert "encountered error" not in caplog.text
    assert "Traceback" not in caplog.text + capsys.readouterr().err


def _connect_error(server: str, max_outage: float) -> tuple[str, float]:
    from margin_engine.core.errors import InputError
    from margin_engine.feeds.nats import ReconnectPolicy, _Link, connect

    started = time.perf_counter()
    with pytest.raises(InputError, match="a reachable NATS server") as raised:
        asyncio.run(connect(server, ReconnectPolicy(wait_seconds=0.05,
                                                    max_outage_seconds=max_outage), _Link()))
    assert raised.value.field == "--feed"
    return str(raised.value), time.perf_counter() - started


def test_a_server_that_never_greets_is_given_up_within_the_outage_policy() -> None:
    """A feed address where a server of another kind waits for its own protocol (Redis,
    PostgreSQL, RabbitMQ do). Before: each of nats' attempts waited out its 3 s time-out,
    25 s for a 3 s --max-outage, and the error said only 'no servers available'."""
    with loopback_server(None) as port:
        message, seconds = _connect_error(f"nats://127.0.0.1:{port}", 0.5)
    assert f"the server at 127.0.0.1:{port} sent no NATS greeting in 1 s" in message, message
    assert "tried for 0.5 s (--max-outage)" in message
    assert seconds < 4.0


def test_a_server_of_another_protocol_is_named_by_its_greeting() -> None:
    with loopback_server(b"\x4a\x00\x00\x00\x0a5.5.5-10.11-MariaDB\x00") as port:
        message, _ = _connect_error(f"nats://127.0.0.1:{port}", 0.5)
    assert f"the server at 127.0.0.1:{port} is not a NATS server: it greets with " \
           "'J\\x00\\x00\\x00\\n5.5.5-10.11-MariaDB...'" in message, message


def test_a_nats_server_that_refuses_the_connection_says_it_is_one() -> None:
    """A NATS greeting, then nothing the client can use (here: the connection is dropped)."""
    with loopback_server(b'INFO {"server_id":"x","max_payload":1048576,"tls_required":true}'
                         b"\r\n") as port:
        message, _ = _connect_error(f"nats://127.0.0.1:{port}", 0.5)
    assert f"a NATS server answers at 127.0.0.1:{port}, but the connection failed" in message, \
        message
