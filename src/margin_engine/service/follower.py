"""The market stored accounts are margined at, and the risk configuration and model.

On a monitor's store: the monitor's own market after every tick the store holds (the monitor is
rebuilt from the stored set-up and its tick log, as a restart or ``replay`` does, then follows
new ticks as the live monitor commits them). On any other store: ``serve --market MARKET``
(or none: stored accounts cannot be margined, ``POST /v1/margin`` still works).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from margin_engine.margin.config import RiskConfig
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.store.service import ServiceRepository

from .settings import ServiceSettings

CATCH_UP_BATCH = 5000
log = logging.getLogger("margin_engine.service")


class MarketFollower:
    def __init__(self, store: ServiceRepository, settings: ServiceSettings) -> None:
        self.monitor: Any = None
        self.seq = 0  # the last tick applied
        self.instruments: dict[str, Any] = {}
        self.instruments_key = "{}"  # the declared instruments' JSON (a cache key)
        self._market: MarketSnapshot | None = None
        setup = store.load_setup()
        if setup:
            from margin_engine.core.collector import no_cycle_collection
            from margin_engine.engine.session import monitor_from_setup

            started = time.perf_counter()
            log.info("rebuilding the monitor from the store's set-up (%s MB of book)",
                     f"{len(setup['portfolio']) / 1e6:,.0f}")
            with no_cycle_collection():  # a large book's document: parsed once, no passes
                portfolio = json.loads(setup["portfolio"])
            self.instruments = dict(portfolio.get("instruments", {}))
            self.monitor = monitor_from_setup(setup, portfolio=portfolio)
            del portfolio
            self.config = RiskConfig.from_dict(json.loads(setup["config"]))
            self.model = setup["model"]
            self.instruments_key = json.dumps(self.instruments, sort_keys=True)
            log.info("monitor rebuilt: %s accounts in %.1f s; applying the stored ticks",
                     f"{self.monitor.book.account_count:,}", time.perf_counter() - started)
            applied = self.catch_up(store)
            log.info("following the monitor from tick %s (%s ticks applied, %.1f s in all)",
                     f"{self.seq:,}", f"{applied:,}", time.perf_counter() - started)
            return
        self.config = RiskConfig() if settings.config is None else RiskConfig.load(
            settings.config)
        self.model = settings.model
        if settings.market is not None:
            from margin_engine.io.market_file import load_market

            self._market = load_market(settings.market)

    @property
    def follows_monitor(self) -> bool:
        return self.monitor is not None

    def catch_up(self, store: ServiceRepository) -> int:
        """Apply the ticks committed since the last call; how many."""
        if self.monitor is None:
            return 0
        applied = 0
        while ticks := store.ticks_after(self.seq, CATCH_UP_BATCH):
            for tick in ticks:
                self.monitor.process(tick, commit=False)
            self.seq = ticks[-1].seq
            applied += len(ticks)
        return applied

    @property
    def market(self) -> MarketSnapshot | None:
        if self.monitor is not None:
            market: MarketSnapshot = self.monitor.market
            return market
        return self._market

    @property
    def breaker_multiplier(self) -> float:
        return float(self.monitor.multiplier) if self.monitor is not None else 1.0

    @property
    def flagged(self) -> dict[str, list[str]]:
        """Symbols whose oracle sources disagree, with the sources dropped."""
        if self.monitor is None:
            return {}
        return {s: list(d) for s, d in sorted(self.monitor.flagged.items())}
