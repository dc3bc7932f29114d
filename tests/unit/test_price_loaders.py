"""Price-file loaders: every layout, the stated duplicate and bad-bar rules, clear failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.data.prices import align, load_price_file
from tests.conftest import SHARED

LAYOUTS = {
    "freqtrade.csv": "date,open,high,low,close,volume\n"
                     "2024-08-05 00:00:00+00:00,1,2,0.5,100,3\n"
                     "2024-08-05 00:15:00+00:00,1,2,0.5,101,3\n",
    "binanceus.csv": "open_time,open,high,low,close,volume\n"
                     "2023-03-11 07:50:00+00:00,1,1,1,100,0\n"
                     "2023-03-11 07:51:00+00:00,1,1,1,101,0\n",
    "cdd.csv": "https://www.CryptoDataDownload.com\n"
               "unix,date,symbol,open,high,low,close,Volume BTC\n"
               "1623283200000,2021-06-10 00-AM,BTC/USD,1,1,1,101,1\n"
               "1623279600000,2021-06-09 11-PM,BTC/USD,1,1,1,100,1\n"
               "1623279600000,2021-06-09 11-PM,BTC/USD,1,1,1,999,1\n",
    "kraken.csv": "1672531200,1,1,1,100,2,78\n1672531500,1,1,1,101,2,61\n",
    "yahoo.csv": "Date,Open,High,Low,Close,Volume\n"
                 "2022-05-08 00:00:00+00:00,1,1,1,100,1\n"
                 "2022-05-09 00:00:00+00:00,null,null,null,null,null\n"
                 "2022-05-10 00:00:00+00:00,1,1,1,101,1\n",
    "coingecko.csv": "event_date,close_price_usd,market_cap_usd,volume_usd\n"
                     "2013-04-28 00:00:00 UTC,100,1,0\n2013-04-29 00:00:00 UTC,101,1,0\n",
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_loads_oldest_first_in_utc(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(LAYOUTS[name])
    series = load_price_file(path)
    assert series.close.tolist() == [100.0, 101.0]
    assert np.all(np.diff(series.time_ns) > 0)


def test_stated_rules_are_counted(tmp_path: Path) -> None:
    (tmp_path / "cdd.csv").write_text(LAYOUTS["cdd.csv"])
    cdd = load_price_file(tmp_path / "cdd.csv")
    assert cdd.counts == {"rows": 3, "was_newest_first": 1, "duplicates_dropped": 1,
                          "bad_bars_dropped": 0}
    assert ns_to_iso(int(cdd.time_ns[0])) == "2021-06-09T23:00:00Z"  # the unix column wins
    (tmp_path / "yahoo.csv").write_text(LAYOUTS["yahoo.csv"])
    assert load_price_file(tmp_path / "yahoo.csv").counts["bad_bars_dropped"] == 1


def test_unreadable_rows_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("date,open,high,low,close,volume\n2024-01-01 00:00:00+00:00,1,1,1,100,1\n"
                    "2024-01-01 00:15:00+00:00,1,1,1,abc,1\n")
    with pytest.raises(InputError) as caught:
        load_price_file(path)
    assert str(path) in str(caught.value)
    assert "line 3" in str(caught.value)
    path.write_text("when,price\n1,2\n")
    with pytest.raises(InputError, match="time column"):
        load_price_file(path)
    with pytest.raises(InputError, match="existing price file"):
        load_price_file(tmp_path / "missing.csv")


def test_align_keeps_common_timestamps(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(LAYOUTS["freqtrade.csv"])
    (tmp_path / "b.csv").write_text("date,open,high,low,close,volume\n"
                                    "2024-08-05 00:15:00+00:00,1,1,1,7,1\n"
                                    "2024-08-05 00:30:00+00:00,1,1,1,8,1\n")
    times, closes = align([load_price_file(tmp_path / "a.csv"),
                           load_price_file(tmp_path / "b.csv")])
    assert [ns_to_iso(int(t)) for t in times] == ["2024-08-05T00:15:00Z"]
    assert closes.tolist() == [[101.0, 7.0]]


def test_every_price_file_in_the_shared_data_loads() -> None:
    data = SHARED / "data"
    if not data.exists():
        pytest.skip(f"{data} not found (../shared/data is absent)")
    skipped = ("deribit_", "hyperliquid_", "funding")
    files = [p for p in sorted(data.glob("*.csv")) if not any(s in p.name for s in skipped)]
    assert len(files) > 40
    for path in files:
        series = load_price_file(path)
        assert series.size > 100, path.name
        assert np.all(np.diff(series.time_ns) > 0), path.name


def test_a_price_column_given_twice_is_refused(tmp_path: Path) -> None:
    """Before: the last 'close' column was read without a word (a path of 10 and 20 for
    one of 50,000 and 49,000)."""
    path = tmp_path / "twice.csv"
    path.write_text("date,open,high,low,close,volume,close\n"
                    "2025-06-01 00:00:00+00:00,1,1,1,50000,1,10\n"
                    "2025-06-01 00:05:00+00:00,1,1,1,49000,1,20\n")
    with pytest.raises(InputError) as caught:
        load_price_file(path)
    assert caught.value.field == "close"
    assert "each column once" in str(caught.value)
