"""The NATS feed ends on idle whichever timeout class the client's fetch raises."""

from __future__ import annotations

import asyncio

import pytest

from margin_engine.feeds.nats import fetch_or_idle


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
