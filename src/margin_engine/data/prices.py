"""Real price-history files -> UTC int64 ns, oldest-first OHLCV series.

Layouts recognised from the header (first line, or the second after a CryptoDataDownload
banner): freqtrade/Binance (``date``), Binance.US (``open_time``), CryptoDataDownload (``unix``
in ms, preferred over its ``date``, which has forms like ``2020-11-20 07-AM``; newest-first),
Bitstamp (``timestamp``), Yahoo (``Date``), CoinGecko (``event_date``, ``close_price_usd``:
close only), Kraken (no header: unix seconds, OHLC, volume, trades).

Stated rules: rows are sorted oldest-first; a repeated timestamp keeps its first row (counted);
a bar with a missing (``null``), non-finite or non-positive close is dropped (counted); an
unreadable timestamp or number fails with the file, the line and the reason.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import NS_PER_SECOND, datetime_to_ns
from margin_engine.core.types import FloatArray, IntArray

TIME_COLUMNS = ("unix", "open_time", "date", "timestamp", "Date", "event_date", "time")
MISSING = {"", "null", "nan", "none", "-"}
CLOSE_COLUMNS = ("close", "Close", "close_price_usd")


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceSeries:
    source: str
    time_ns: IntArray
    close: FloatArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    volume: FloatArray
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.time_ns.shape[0])

    def between(self, start_ns: int, end_ns: int) -> PriceSeries:
        keep = (self.time_ns >= start_ns) & (self.time_ns <= end_ns)
        return PriceSeries(source=self.source, time_ns=self.time_ns[keep], close=self.close[keep],
                           open=self.open[keep], high=self.high[keep], low=self.low[keep],
                           volume=self.volume[keep], counts=self.counts)


def _parse_time(text: str, column: str) -> int:
    text = text.strip()
    if column in ("unix", "time") or text.isdigit():
        value = int(float(text))
        # seconds, milliseconds or microseconds since the epoch, by magnitude
        scale = NS_PER_SECOND if value < 10**11 else 1_000_000 if value < 10**14 else 1_000
        return value * scale
    text = text.replace(" UTC", "+00:00").replace("Z", "+00:00")
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # the data's convention: naive means UTC
    return datetime_to_ns(moment)


def load_price_file(path: str | Path) -> PriceSeries:
    return _load(Path(path), close_column=None, positive_only=True)


def _load(path: Path, *, close_column: str | None, positive_only: bool) -> PriceSeries:
    source = str(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError("an existing price file", source=source, value=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"a readable text file ({exc})", source=source) from None
    if not lines:
        raise InputError("a price file with rows", source=source)
    first_data = 0
    if "cryptodatadownload" in lines[0].lower():
        first_data = 1  # banner line before the header
    reader = list(csv.reader(lines[first_data:]))
    header = [h.strip() for h in reader[0]]
    if header and _is_number(header[0]):  # Kraken: no header
        header = ["time", "open", "high", "low", "close", "volume", "trades"][:len(header)]
        body, line0 = reader, first_data + 1
    else:
        body, line0 = reader[1:], first_data + 2
    time_col = next((c for c in TIME_COLUMNS if c in header), None)
    close_col = close_column or next((c for c in CLOSE_COLUMNS if c in header), None)
    if time_col is None or close_col is None:
        raise InputError(f"a time column {TIME_COLUMNS} and a close column {CLOSE_COLUMNS}",
                         source=source, value=",".join(header[:8]))
    for used in (time_col, close_col, "open", "high", "low", "volume"):
        if header.count(used) > 1:  # which of them would be read is nobody's guess
            raise InputError("each column once", source=source, field=used,
                             value=f"{header.count(used)} columns of that name")
    index = {name: i for i, name in enumerate(header)}
    lower = {name.lower(): i for i, name in enumerate(header)}

    def column(name: str) -> int | None:
        return index.get(name, lower.get(name.lower()))

    times: list[int] = []
    values: dict[str, list[float]] = {k: [] for k in ("open", "high", "low", "close", "volume")}
    for offset, row in enumerate(body):
        if not row or all(not c.strip() for c in row):
            continue
        line = line0 + offset
        try:
            times.append(_parse_time(row[index[time_col]], time_col))
        except (ValueError, IndexError) as exc:
            raise InputError(f"a timestamp in column {time_col!r} ({exc})",
                             source=source, field=f"line {line}",
                             value=row[index[time_col]] if len(row) > index[time_col] else ""
                             ) from None
        for key in values:
            col = index[close_col] if key == "close" else column(key)
            if key == "open" and close_column == "open":
                col = None
            if col is None:
                values[key].append(np.nan)
                continue
            try:
                text = row[col].strip()
                values[key].append(np.nan if text.lower() in MISSING else float(text))
            except (ValueError, IndexError):
                raise InputError(f"a number in column {header[col]!r}", source=source,
                                 field=f"line {line}",
                                 value=row[col] if col < len(row) else "") from None
    time_ns = np.array(times, dtype=np.int64)
    arrays = {k: np.array(v, dtype=np.float64) for k, v in values.items()}
    counts = {"rows": int(time_ns.size)}
    order = np.argsort(time_ns, kind="stable")
    counts["was_newest_first"] = int(time_ns.size > 1 and time_ns[0] > time_ns[-1])
    time_ns = time_ns[order]
    arrays = {k: v[order] for k, v in arrays.items()}
    unique = np.concatenate([[True], time_ns[1:] != time_ns[:-1]]) if time_ns.size else \
        np.zeros(0, dtype=np.bool_)
    counts["duplicates_dropped"] = int((~unique).sum())
    good = unique & np.isfinite(arrays["close"]) & ((arrays["close"] > 0) | (not positive_only))
    counts["bad_bars_dropped"] = int((unique & ~good).sum())
    if not good.any():
        raise InputError("at least one bar with a usable close", source=source)
    return PriceSeries(source=source, time_ns=time_ns[good], counts=counts,
                       **{k: v[good] for k, v in arrays.items()})


def load_funding_file(path: str | Path) -> PriceSeries:
    """Funding rates (decimals per interval; may be negative) as a series in ``close``.

    Layouts: ``timestamp,funding_rate`` and freqtrade's, whose ``open`` holds the rate while
    ``close`` is 0.
    """
    path = Path(path)
    header = path.read_text(encoding="utf-8").split("\n", 1)[0].strip().split(",")
    column = "funding_rate" if "funding_rate" in header else "open"
    if column not in header:
        raise InputError("a funding file with a 'funding_rate' or 'open' column",
                         source=str(path), value=",".join(header))
    return _load(path, close_column=column, positive_only=False)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def align(series: Sequence[PriceSeries]) -> tuple[IntArray, FloatArray]:
    """Common timestamps of several series and their closes (timestamps x series)."""
    common = series[0].time_ns
    for s in series[1:]:
        common = np.intersect1d(common, s.time_ns, assume_unique=True)
    closes = np.column_stack([s.close[np.searchsorted(s.time_ns, common)] for s in series])
    return common, closes
