"""Deribit option-chain files -> normalised quotes (USD, decimals, UTC ns).

Layouts (detected from the header):

* ``public/ticker`` chain dumps, alone or joined with ``public/get_instruments`` fields:
  ``instrument_name``, ``mark_price``, ``underlying_price`` and ``best_bid_price`` /
  ``best_ask_price`` or ``expiration_timestamp`` (fields no book summary has). The snapshot time
  is the ticker's ``timestamp``; a dump without it has none (the caller passes one, ``--at``).
  ``creation_timestamp`` here is the instrument's listing time, never the snapshot.
* BTC ``get_book_summary_by_currency`` (``creation_timestamp`` = snapshot, ``mark_iv``) and the
  ETH book summary (``expire_date``, ``strike_price``; no IV).
* Mark snapshots (``option_type, strike, creation, maturity, mark_price, ..., index_price``; no
  forward, no snapshot time).

Conversion: Deribit's coin mark is the Black-76 USD price on the expiry's forward F divided by F,
so USD = coin x F, with F the row's ``underlying_price``; implied at F this reproduces Deribit's
own ``mark_iv`` (e.g. BTC-22MAY20-9250-P: 76.84 % vs 76.87 %). Where a file has no forward it is
implied per expiry by put-call parity on coin prices: C - P = (F - K)/F -> F = K / (1 - (C - P)).
Each quote keeps its own row's F (ticker rows are fetched over minutes, some book-summary rows
carry a stale underlying price); the fit reads it at its own log-moneyness ln(K / F).

* Vols are percent in the files and decimals here; ``mark_iv`` of exactly 100.00 is a cap
  (censored) and the row is dropped, counted.
* A ``strike`` column that disagrees with the strike in ``instrument_name`` (e.g. 7000 for
  ...-70000-C) is a typo: the name wins, counted.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import datetime_to_ns
from margin_engine.core.types import BoolArray, FloatArray, IntArray
from margin_engine.domain.instruments import OptionRight, parse_shorthand

CENSORED_IV = 100.0
MS = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionQuotes:
    """One underlying's option marks at one snapshot, in USD."""

    underlying: str
    source: str
    snapshot_ns: int | None  # None: the file has no snapshot time (the caller supplies one)
    index: float
    expiry_ns: IntArray
    strike: FloatArray
    is_call: BoolArray
    forward: FloatArray
    mark_usd: FloatArray
    bid_usd: FloatArray  # NaN where absent
    ask_usd: FloatArray
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.strike.shape[0])


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else np.nan
    except ValueError:
        return np.nan


def _underlying_from_name(path: Path) -> str | None:
    for token in path.stem.lower().split("_"):
        if token in ("btc", "eth", "sol"):
            return token.upper()
    return None


def read_deribit_file(path: str | Path, underlying: str | None = None) -> OptionQuotes:
    """Read one Deribit option file of any supported layout."""
    path = Path(path)
    source = str(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise InputError("an existing file", source=source, value=source) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"a readable CSV file ({exc})", source=source) from None
    if not rows:
        raise InputError("a CSV file with a header and rows", source=source)
    header = set(rows[0])
    if _is_ticker(header):
        return _read_named(rows, source, snapshot_field="timestamp",
                           index_fields=("index_price", "estimated_delivery_price"),
                           bid_field="best_bid_price", ask_field="best_ask_price")
    if {"creation_timestamp", "instrument_name", "underlying_price"} <= header:
        return _read_named(rows, source, snapshot_field="creation_timestamp",
                           index_fields=("estimated_delivery_price", "index_price"),
                           bid_field="bid_price", ask_field="ask_price")
    if {"option_type", "strike", "maturity", "mark_price", "index_price"} <= header:
        name = underlying or _underlying_from_name(path)
        if name is None:
            raise InputError("the underlying, given as UNDERLYING=FILE (this layout has none)",
                             source=source)
        return _read_marks(rows, source, name)
    raise InputError("a Deribit ticker chain, book summary or mark snapshot (unknown columns "
                     f"{sorted(header)[:6]}...)", source=source)


def _is_ticker(header: set[str]) -> bool:
    """``public/ticker`` rows (optionally with ``get_instruments`` fields): named instruments with
    a forward and a ticker-only field (book summaries have ``bid_price``, no expiry column)."""
    return ({"instrument_name", "mark_price", "underlying_price"} <= header
            and bool({"best_bid_price", "best_ask_price", "expiration_timestamp"} & header))


def _read_named(rows: list[dict[str, str]], source: str, *, snapshot_field: str,
                index_fields: tuple[str, ...], bid_field: str, ask_field: str) -> OptionQuotes:
    counts = {"rows": len(rows), "censored_iv": 0, "strike_typos": 0, "unparsed": 0}
    expiry, strike, is_call, forward, mark, bid, ask, snaps, indexes = ([] for _ in range(9))
    underlying = None
    index_field = next((f for f in index_fields if f in rows[0]), None)
    if index_field is None:
        raise InputError(f"an index price column ({' or '.join(index_fields)})", source=source)
    for row in rows:
        try:
            instrument = parse_shorthand((row.get("instrument_name") or "").strip())
        except ValueError:  # an option name with an impossible date or strike
            instrument = None
        if instrument is None or instrument.strike is None or instrument.expiry_ns is None:
            counts["unparsed"] += 1
            continue
        underlying = underlying or instrument.underlying
        listed = _float(row.get("strike") or row.get("strike_price"))
        if np.isfinite(listed) and listed != instrument.strike:
            counts["strike_typos"] += 1
        if _float(row.get("mark_iv")) == CENSORED_IV:
            counts["censored_iv"] += 1
            continue
        f = _float(row["underlying_price"])
        expiry.append(instrument.expiry_ns)
        strike.append(instrument.strike)
        is_call.append(instrument.right is OptionRight.CALL)
        forward.append(f)
        mark.append(_float(row["mark_price"]) * f)
        bid.append(_float(row.get(bid_field)) * f)
        ask.append(_float(row.get(ask_field)) * f)
        snaps.append(_float(row.get(snapshot_field)))
        indexes.append(_float(row.get(index_field)))
    if underlying is None:
        raise InputError("rows with Deribit option names such as BTC-28JUN24-70000-C",
                         source=source)
    has_time = bool(np.isfinite(snaps).any())
    if not has_time and snapshot_field in rows[0]:
        raise InputError(f"a snapshot time in column {snapshot_field!r}", source=source)
    if not np.isfinite(indexes).any():
        raise InputError(f"index prices in column {index_field!r}", source=source)
    return OptionQuotes(
        underlying=underlying, source=source,
        snapshot_ns=int(np.nanmedian(snaps)) * MS if has_time else None,
        index=float(np.nanmedian(indexes)), expiry_ns=np.array(expiry, dtype=np.int64),
        strike=np.array(strike), is_call=np.array(is_call, dtype=np.bool_),
        forward=np.array(forward), mark_usd=np.array(mark), bid_usd=np.array(bid),
        ask_usd=np.array(ask), counts=counts)


def _parse_utc(text: str) -> int:
    return datetime_to_ns(dt.datetime.fromisoformat(text.strip()).replace(tzinfo=dt.UTC))


def _read_marks(rows: list[dict[str, str]], source: str, underlying: str) -> OptionQuotes:
    counts = {"rows": len(rows), "censored_iv": 0, "strike_typos": 0, "unparsed": 0}
    kept = []
    for row in rows:
        try:  # a row without a strike, a maturity or a listing time is counted, not fitted
            _parse_utc(row["maturity"])
            _parse_utc(row["creation"])
            row_strike = _float(row["strike"])
        except (ValueError, KeyError, AttributeError):
            row_strike = np.nan
        if not (np.isfinite(row_strike) and row_strike > 0):
            counts["unparsed"] += 1
            continue
        if _float(row.get("mark_iv")) == CENSORED_IV:
            counts["censored_iv"] += 1
        kept.append(row)
    if not kept:
        raise InputError("rows with a strike, a maturity and a creation time", source=source)
    expiry = np.array([_parse_utc(r["maturity"]) for r in kept], dtype=np.int64)
    strike = np.array([_float(r["strike"]) for r in kept])
    is_call = np.array([r["option_type"].strip().lower() == "call" for r in kept])
    coin = np.array([_float(r["mark_price"]) for r in kept])
    index = float(np.nanmedian([_float(r["index_price"]) for r in kept]))
    listed = max(_parse_utc(r["creation"]) for r in kept)  # no snapshot time: latest listing
    forward = _parity_forwards(expiry, strike, is_call, coin, index)
    censored = np.array([_float(r.get("mark_iv")) == CENSORED_IV for r in kept])
    keep = ~censored
    return OptionQuotes(
        underlying=underlying, source=source, snapshot_ns=listed, index=index,
        expiry_ns=expiry[keep], strike=strike[keep], is_call=is_call[keep],
        forward=forward[keep], mark_usd=(coin * forward)[keep],
        bid_usd=np.full(int(keep.sum()), np.nan), ask_usd=np.full(int(keep.sum()), np.nan),
        counts=counts)


def _parity_forwards(expiry: IntArray, strike: FloatArray, is_call: BoolArray, coin: FloatArray,
                     index: float) -> FloatArray:
    """Per-expiry forward from coin-quoted call/put pairs: C - P = (F - K)/F -> F = K/(1-(C-P)).

    The median over the pairs within 10 % of the index; the index where no pair exists.
    """
    forward = np.full(strike.shape, index)
    for e in np.unique(expiry):
        estimates = []
        rows = np.nonzero(expiry == e)[0]
        for k in np.unique(strike[rows]):
            if abs(k / index - 1) > 0.1:
                continue
            calls = rows[(strike[rows] == k) & is_call[rows]]
            puts = rows[(strike[rows] == k) & ~is_call[rows]]
            if calls.size and puts.size:
                diff = coin[calls[0]] - coin[puts[0]]
                if diff < 1:
                    estimates.append(k / (1 - diff))
        if estimates:
            forward[rows] = float(np.median(estimates))
    return forward
