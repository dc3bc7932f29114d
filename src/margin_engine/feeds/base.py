"""The feed protocol and the two local feeds (file replay, in-process queue)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import NS_PER_SECOND
from margin_engine.data.prices import PriceSeries, load_price_file
from margin_engine.store.base import Tick


class Feed(Protocol):
    def ticks(self, after_seq: int = 0) -> Iterator[Tick]: ...


class FileReplayFeed:
    """Bars of several price files merged by time (then symbol) into ticks numbered 1..N;
    ``speed`` > 0 replays at that multiple of real time, 0 as fast as possible."""

    def __init__(self, series: dict[str, PriceSeries], speed: float = 0.0,
                 max_ticks: int | None = None) -> None:
        rows = sorted((int(t), symbol, float(p)) for symbol, s in series.items()
                      for t, p in zip(s.time_ns, s.close, strict=True))
        self.rows = rows[:max_ticks] if max_ticks else rows
        self.speed = speed

    @staticmethod
    def parse(spec: str, speed: float = 0.0, max_ticks: int | None = None) -> FileReplayFeed:
        """``file:BTC=path,ETH=path``."""
        body = spec[len("file:"):] if spec.startswith("file:") else spec
        series: dict[str, PriceSeries] = {}
        for part in filter(None, body.split(",")):
            symbol, sep, path = part.partition("=")
            if not sep or not symbol or not path:
                raise InputError("file:SYMBOL=PATH[,SYMBOL=PATH...]", field="--feed",
                                 value=spec)
            series[symbol.strip().upper()] = load_price_file(Path(path))
        if not series:
            raise InputError("file:SYMBOL=PATH[,SYMBOL=PATH...]", field="--feed", value=spec)
        return FileReplayFeed(series, speed, max_ticks)

    def first_prices(self) -> dict[str, float]:
        first: dict[str, float] = {}
        for _, symbol, price in self.rows:
            first.setdefault(symbol, price)
        return first

    def ticks(self, after_seq: int = 0) -> Iterator[Tick]:
        previous = None
        for seq, (time_ns, symbol, price) in enumerate(self.rows, start=1):
            if seq <= after_seq:
                continue
            if self.speed > 0 and previous is not None and time_ns > previous:
                time.sleep((time_ns - previous) / NS_PER_SECOND / self.speed)
            previous = time_ns
            yield Tick(seq, time_ns, symbol, price, "file")


class QueueFeed:
    """Ticks handed over in-process (a list or any iterable)."""

    def __init__(self, ticks: Iterable[Tick]) -> None:
        self._ticks = list(ticks)

    def ticks(self, after_seq: int = 0) -> Iterator[Tick]:
        return (t for t in self._ticks if t.seq > after_seq)
