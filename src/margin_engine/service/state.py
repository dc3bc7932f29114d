"""What the routes share: the store (used on the event loop's thread only: a SQLite connection
belongs to the thread that opened it), the market follower, the rate limiter, the keys verified
so far, and caches of pure results keyed by everything they depend on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from margin_engine.core.kept import Recent
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.store.base import open_store
from margin_engine.store.service import AccountRows, ServiceRepository

from .follower import MarketFollower
from .problems import ProblemError, ProblemKind
from .ratelimit import RateLimiter
from .settings import ServiceSettings

_T = TypeVar("_T")


class ServiceState:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.store = cast(ServiceRepository, open_store(settings.store))
        try:
            self.store.initialise_service()
            self.follower = MarketFollower(self.store, settings)
        except BaseException:
            self.store.close()
            raise
        self.limiter = RateLimiter()
        self.verified: dict[str, bytes] = {}  # key id -> sha256 of the secret verified
        self.margins = Recent(4096)  # (rows, market version, model, ...) -> AccountMargin
        self.pool = Recent(8)  # (last event, market version, ...) -> pool view

    def close(self) -> None:
        self.store.close()

    def market(self) -> MarketSnapshot:
        """The current market (after the ticks committed so far)."""
        self.follower.catch_up(self.store)
        market = self.follower.market
        if market is None:
            raise ProblemError(ProblemKind.NO_MARKET, "this service has no market: start it on "
                               "a monitor's store or with --market MARKET")
        return market

    @property
    def market_version(self) -> int:
        return self.follower.seq

    def account_rows(self, account: str) -> AccountRows:
        rows = self.store.account_rows(account)
        if rows is None:
            raise ProblemError(ProblemKind.NOT_FOUND, f"no account {account!r}")
        return rows


def service_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def _single_threaded(action: Callable[[], _T]) -> _T:
    """Run with one numba thread: requests already run side by side, and a parallel kernel's
    start-up costs more than a small book's work."""
    import numba

    numba.set_num_threads(1)
    return action()


async def compute(action: Callable[[], _T], *, small: bool = False) -> _T:
    """Run a computation in the thread pool, or, when ``small`` (about a millisecond: one
    account's what-if with its margins before known, liquidation prices included: their
    search reads the instrument states kept for the market), on the event loop itself, which
    saves the hand-over to a thread (Python holds one lock either way)."""
    if small:
        return _single_threaded(action)
    return await run_in_threadpool(_single_threaded, action)
