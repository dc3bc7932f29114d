"""The shock that starts a cascade: price ratios applied at once, from a real file or given.

``--shock`` is a comma-separated list of items:

* ``venue-token-90``: the venue token at 10 % of its price;
* ``usdc-2023``: USDC at its March 2023 low, implied by Binance.US BTCUSD / BTCUSDC 1m closes
  (2023-03-09 to 03-14: 0.8748 at 2023-03-11 07:50);
* ``ust-2022``: USDT follows the UST collapse (Yahoo UST daily closes, 2022-05-05 to 05-19:
  0.9995 -> 0.0760), i.e. the venue's second stablecoin fails like UST did;
* ``crash-2025-10-10`` / ``crash-2024-08-05``: BTC and ETH from the window's first close to the
  bar of BTC's lowest close (Binance perp 5m / 15m files);
* ``SYMBOL=-90%``: a given move; ``SYMBOL=ust-2022`` or ``SYMBOL=usdc-2023``: that path's
  ratio on another asset; ``SYMBOL=FILE``: a real price file from its first close to its
  lowest close.

A path is taken from its start to its trough and applied in one step: the cascade asks what
follows a move faster than anyone can react.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso, parse_timestamp
from margin_engine.data.prices import PriceSeries, align, load_price_file
from margin_engine.liquidation.venue_population import VENUE_TOKEN

_SYMBOL = re.compile(r"^[A-Z][A-Z0-9]{0,15}$")
_PERCENT = re.compile(r"^[+-]?\d+(\.\d+)?%$")


class ShockPreset(enum.Enum):
    VENUE_TOKEN_90 = "venue-token-90"
    USDC_2023 = "usdc-2023"
    UST_2022 = "ust-2022"
    CRASH_2025_10_10 = "crash-2025-10-10"
    CRASH_2024_08_05 = "crash-2024-08-05"


PATH_PRESETS = (ShockPreset.USDC_2023, ShockPreset.UST_2022)  # one series, any target asset
CRASH_FILES = {
    ShockPreset.CRASH_2025_10_10: ("binance_btcusdt_perp_5m_window_2025-10-10.csv",
                                   "binance_ethusdt_perp_5m_window_2025-10-10.csv",
                                   ("2025-10-10T12:00:00Z", "2025-10-11T12:00:00Z")),
    ShockPreset.CRASH_2024_08_05: ("binance_btcusdt_perp_15m_window_2024-08-05.csv",
                                   "binance_ethusdt_perp_15m_window_2024-08-05.csv",
                                   ("2024-08-02T00:00:00Z", "2024-08-06T00:00:00Z")),
}
UST_FILE, UST_WINDOW = "yahoo_ustc_usd_daily.csv", ("2022-05-05T00:00:00Z", "2022-05-19T00:00:00Z")
DEFAULT_TARGET = {ShockPreset.USDC_2023: "USDC", ShockPreset.UST_2022: "USDT"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ShockMove:
    symbol: str
    ratio: float  # price after the shock / price before it
    source: str  # where the ratio comes from


@dataclass(frozen=True, slots=True, kw_only=True)
class Shock:
    spec: str  # as given
    moves: tuple[ShockMove, ...]
    # index levels and time at the start of a real path (the market the population is drawn
    # at, so that a 2025 crash starts from 2025 prices); empty / None for given moves
    index: dict[str, float]
    timestamp_ns: int | None

    def ratios(self) -> dict[str, float]:
        return {m.symbol: m.ratio for m in self.moves}

    def to_document(self) -> dict[str, object]:
        return {"spec": self.spec, "moves": [{"symbol": m.symbol, "ratio": m.ratio,
                                              "move_pct": 100.0 * (m.ratio - 1.0),
                                              "source": m.source} for m in self.moves],
                "start": None if self.timestamp_ns is None else ns_to_iso(self.timestamp_ns)}


def _file(data: Path, name: str) -> Path:
    path = data / name
    if not path.exists():
        raise InputError(f"the shared data file {name} (give --data DIR)", field="--shock",
                         value=str(path))
    return path


def _window(series: PriceSeries, window: tuple[str, str]) -> PriceSeries:
    start, end = (parse_timestamp(t, field="window") for t in window)
    return series.between(start, end)


def _trough(series: PriceSeries, label: str) -> tuple[float, str, int, float]:
    """(lowest close / first close, description, start time, first close)."""
    if series.size < 2:
        raise InputError("a price file with at least two bars", field="--shock", value=label)
    low = int(np.argmin(series.close))
    first = float(series.close[0])
    ratio = float(series.close[low]) / first
    text = (f"{label}: {first:.6g} at {ns_to_iso(int(series.time_ns[0]))} -> "
            f"{float(series.close[low]):.6g} at {ns_to_iso(int(series.time_ns[low]))}")
    return ratio, text, int(series.time_ns[0]), first


def _path_preset(preset: ShockPreset, data: Path) -> tuple[float, str]:
    if preset is ShockPreset.USDC_2023:
        from margin_engine.liquidation.studies import DEPEG_FILES, DEPEG_WINDOW, usdc_rate

        rate = usdc_rate(load_price_file(_file(data, DEPEG_FILES[0])),
                         load_price_file(_file(data, DEPEG_FILES[1])))
        ratio, text, _, _ = _trough(_window(rate, DEPEG_WINDOW),
                                    "USDC implied by Binance.US BTCUSD / BTCUSDC 1m")
        return ratio, text
    ratio, text, _, _ = _trough(_window(load_price_file(_file(data, UST_FILE)), UST_WINDOW),
                                f"UST ({UST_FILE})")
    return ratio, text


def _crash(preset: ShockPreset, data: Path) -> tuple[list[ShockMove], dict[str, float], int]:
    btc_file, eth_file, window = CRASH_FILES[preset]
    series = [_window(load_price_file(_file(data, name)), window) for name in (btc_file, eth_file)]
    times, closes = align(series)
    if times.size < 2:
        raise InputError("crash files with common bars", field="--shock", value=preset.value)
    low = int(np.argmin(closes[:, 0]))
    moves = [ShockMove(symbol=u, ratio=float(closes[low, k] / closes[0, k]),
                       source=f"{name}: {closes[0, k]:.6g} at {ns_to_iso(int(times[0]))} -> "
                              f"{closes[low, k]:.6g} at {ns_to_iso(int(times[low]))} "
                              "(the bar of BTC's lowest close)")
             for k, (u, name) in enumerate((("BTC", btc_file), ("ETH", eth_file)))]
    return moves, {"BTC": float(closes[0, 0]), "ETH": float(closes[0, 1])}, int(times[0])


def parse_shock(spec: str, data: Path) -> Shock:
    """The shock of ``--shock`` (see the module docstring); ``data``: the shared data folder."""
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise InputError("a shock, e.g. venue-token-90, usdc-2023, ust-2022, "
                         "crash-2025-10-10 or SYMBOL=-90%", field="--shock", value=spec)
    presets = {p.value: p for p in ShockPreset}
    moves: list[ShockMove] = []
    index: dict[str, float] = {}
    start: int | None = None
    for item in items:
        if item in presets:
            preset = presets[item]
            if preset is ShockPreset.VENUE_TOKEN_90:
                moves.append(ShockMove(symbol=VENUE_TOKEN, ratio=0.1,
                                       source="given: the venue token -90 %"))
            elif preset in PATH_PRESETS:
                ratio, text = _path_preset(preset, data)
                moves.append(ShockMove(symbol=DEFAULT_TARGET[preset], ratio=ratio, source=text))
            else:
                crash, levels, when = _crash(preset, data)
                moves += crash
                index.update(levels)
                start = when
            continue
        symbol, sep, value = item.partition("=")
        symbol, value = symbol.strip(), value.strip()
        if not sep or not _SYMBOL.match(symbol) or not value:
            raise InputError(f"a preset ({', '.join(presets)}) or SYMBOL=MOVE% / "
                             "SYMBOL=ust-2022 / SYMBOL=FILE", field="--shock", value=item)
        if _PERCENT.match(value):
            ratio = 1.0 + float(value[:-1]) / 100.0
            if not ratio > 0:
                raise InputError("a move above -100 %", field="--shock", value=item)
            moves.append(ShockMove(symbol=symbol, ratio=ratio, source=f"given: {value}"))
        elif value in presets and presets[value] in PATH_PRESETS:
            ratio, text = _path_preset(presets[value], data)
            moves.append(ShockMove(symbol=symbol, ratio=ratio,
                                   source=f"{text}, applied to {symbol}"))
        else:
            path = Path(value)
            if not path.exists():
                raise InputError("a move like -90%, a path preset (usdc-2023, ust-2022) or a "
                                 "price file that exists", field="--shock", value=item)
            ratio, text, when, first = _trough(load_price_file(path), path.name)
            moves.append(ShockMove(symbol=symbol, ratio=ratio, source=text))
            index[symbol] = first
            start = when if start is None else start
    symbols = [m.symbol for m in moves]
    twice = sorted({s for s in symbols if symbols.count(s) > 1})
    if twice:
        raise InputError("each symbol moved once", field="--shock", value=twice)
    return Shock(spec=spec, moves=tuple(moves), index=index, timestamp_ns=start)
