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
