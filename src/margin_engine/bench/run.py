"""Benchmark of the margin models on a seeded random book.

Book: BTC and ETH, a perpetual, monthly futures and options on a strike ladder per expiry
(>= 2,000 instruments); every account holds ``positions`` distinct instruments, USDC and some
BTC collateral.

Portfolio model, each measure the median of ``runs`` runs in one invocation:

* stages of a full run from columns: resolve (names -> instruments, columns -> CSR book, the
  market-free quantities), price grid (the instruments bound to the market, each priced on every
  scenario once), aggregation (the fused per-tick pass), total;
* tick: the per-tick re-margin of the whole book, the resolved book given and the market moved
  (index levels of BTC and ETH, their marks and coin prices): instrument binding, grid and the
  fused pass;
* numpy: the same aggregation from the same tick state in plain numpy (``numpy_baseline``), and
  the ratio to the tick;
* bandwidth floor: one streaming read of the position arrays the pass reads (int32 instrument,
  float64 quantity), what no pass over them can beat;
* files: the full run from a Parquet positions file and its accounts file (read, resolve, bind,
  grid, aggregation), after one untimed run (the first touch of that much memory);
* liquidation prices (``--liquidation-prices``): both levels of every account and underlying,
  after a warm-up of their own (after the ticks: the RSS up to the ticks is not theirs);
* the scalar per-position reference (plain Python) on the first accounts holding about
  ``baseline_positions`` positions: seconds per position against the engine's, and the largest
  relative IM difference.

Peak RSS is the whole process's; the load average is read before and after.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import resource
import time
from typing import Any

import numpy as np

from margin_engine.book.bound import bind_market
from margin_engine.book.columnar import MODE_CODES, ColumnarBook, book_from_columns, book_subset
from margin_engine.core.files import write_whole
from margin_engine.demo.market import demo_market_document
from margin_engine.domain.instruments import MarginMode, parse_shorthand
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.explain import explain_portfolio
from margin_engine.margin.portfolio import run_portfolio_kernel
from margin_engine.margin.scenarios import value_change_grid
from margin_engine.market.snapshot import MarketSnapshot

SPOT = {"BTC": 65000.0, "ETH": 2500.0}
WARM_LIQUIDATION_ACCOUNTS = 2_000  # the liquidation warm-up's book (the shared-table path)
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _last_fridays(start: dt.date, count: int) -> list[str]:
    """Expiry codes of the last Friday of the next ``count`` months after ``start``."""
    codes = []
    year, month = start.year, start.month
    for _ in range(count):
        month += 1
        if month > 12:
            year, month = year + 1, 1
        last = dt.date(year + (month == 12), month % 12 + 1, 1) - dt.timedelta(days=1)
        friday = last - dt.timedelta(days=(last.weekday() - 4) % 7)
        codes.append(f"{friday.day}{MONTHS[friday.month - 1]}{friday.year % 100:02d}")
    return codes


def instrument_names(target: int) -> list[str]:
    """Perps, monthly futures and an option ladder on BTC and ETH, about ``target`` names."""
    expiries = _last_fridays(dt.date(2025, 6, 1), 12)
    per_underlying = target // 2 - 1 - len(expiries)
    strikes_per_expiry = max(1, math.ceil(per_underlying / (2 * len(expiries))))
    names = []
    for u, spot in SPOT.items():
        names.append(f"{u}-PERP")
        names += [f"{u}-{e}" for e in expiries]
        step = spot * 1.2 / strikes_per_expiry
        strikes = [round(spot * 0.4 + step * k) for k in range(strikes_per_expiry)]
        names += [f"{u}-{e}-{k}-{r}" for e in expiries for k in strikes for r in ("C", "P")]
    return names


def random_book_columns(accounts: int, positions: int, names: list[str],
                        seed: int) -> dict[str, Any]:
    """Seeded columns: distinct instruments per account (sorted draws + arange trick)."""
    rng = np.random.default_rng(seed)
    n_inst = len(names)
    k = min(positions, n_inst)
    draws = rng.integers(0, n_inst - k + 1, size=(accounts, k), dtype=np.int64)
    draws.sort(axis=1)
    draws += np.arange(k, dtype=np.int64)
    inst = draws.ravel().astype(np.int32)
    n_pos = inst.size
    size = np.round(rng.normal(0.0, 2.0, n_pos), 2)
    is_eth = np.array([n.startswith("ETH") for n in names])[inst]
    size = np.where(is_eth, size * 20.0, size)
    entry = np.where(is_eth, SPOT["ETH"], SPOT["BTC"]) * rng.uniform(0.02, 1.0, n_pos)
    usdc = rng.uniform(5e3, 5e5, accounts)
    btc = np.where(rng.random(accounts) < 0.3, rng.uniform(0.1, 5.0, accounts), 0.0)
    return {
        "account_ids": [f"a{j}" for j in range(accounts)],
        "position_account": np.repeat(np.arange(accounts, dtype=np.int64), k),
        "position_instrument": inst, "size": size, "entry_price": entry,
        "collateral": np.column_stack([btc, usdc]),
    }


def synthetic_history(days: int = 1500, seed: int = 11) -> Any:
    """Seeded joint daily history for the var model: BTC 60 %, ETH 75 % annual vol, rho 0.8."""
    from margin_engine.data.prices import PriceSeries
    from margin_engine.margin.var import VarHistory

    rng = np.random.default_rng(seed)
    normals = rng.standard_normal((days, 2))
    daily = np.array([0.60, 0.75]) / np.sqrt(365)
    btc = daily[0] * normals[:, 0]
    eth = daily[1] * (0.8 * normals[:, 0] + 0.6 * normals[:, 1])
    start = 19_000
    times = ((np.arange(days) + start) * 86_400 * 10**9).astype(np.int64)

    def series(level: float, returns: np.ndarray) -> PriceSeries:
        closes = level * np.exp(np.cumsum(returns))
        return PriceSeries(source="synthetic", time_ns=times, close=closes, open=closes,
                           high=closes, low=closes, volume=np.zeros(days))

    return VarHistory.from_series({"BTC": series(SPOT["BTC"], btc),
                                   "ETH": series(SPOT["ETH"], eth)})


def _model_stage(model: str, bound: Any, config: RiskConfig,
                 history: Any) -> tuple[dict[str, float], Any]:
    """Time one model on a bound book: (stage seconds, result)."""
    if model == "portfolio":
        t1 = time.perf_counter()
        grid = value_change_grid(bound, config.portfolio)
        t2 = time.perf_counter()
        result = run_portfolio_kernel(bound, config, grid)
        return {"price_grid": t2 - t1, "aggregation": time.perf_counter() - t2}, result
    if model == "sensitivity":
        from margin_engine.margin.sensitivity import SensitivityModel

        t1 = time.perf_counter()
        result = SensitivityModel().compute(bound, config)
        return {"price_grid": 0.0, "aggregation": time.perf_counter() - t1}, result
    from margin_engine.margin.var import scenario_sets, tail_measures

    # var: "price_grid" is the filtered scenario generation; "aggregation" is the full
    # revaluation of every instrument on every scenario plus the per-account ES.
    t1 = time.perf_counter()
    sets = scenario_sets(history, config.var, bound.underlyings)
    t2 = time.perf_counter()
    tail_measures(bound, sets["current"], config.var)
    return {"price_grid": t2 - t1, "aggregation": time.perf_counter() - t2}, None


def _pipeline(names: list[str], columns: dict[str, Any], market: Any,
              config: RiskConfig, model: str = "portfolio",
              history: Any = None) -> tuple[dict[str, float], Any, Any]:
    t0 = time.perf_counter()
    instruments = [parse_shorthand(n) for n in names]
    accounts = len(columns["account_ids"])
    book = book_from_columns(
        account_ids=columns["account_ids"],
        mode=np.full(accounts, MODE_CODES[MarginMode.PORTFOLIO], dtype=np.int32),
        instruments=[i for i in instruments if i is not None],
        position_account=columns["position_account"],
        position_instrument=columns["position_instrument"],
        size=columns["size"], entry_price=columns["entry_price"],
        assets=("BTC", "USDC"), collateral=columns["collateral"],
    )
    bound = bind_market(book, market)
    t1 = time.perf_counter()
    stages, result = _model_stage(model, bound, config, history)
    seconds = {"resolve": t1 - t0, **stages,
               "total": t1 - t0 + stages["price_grid"] + stages["aggregation"]}
    return seconds, bound, result


def run_bench(*, accounts: int, positions: int, instruments: int, baseline_positions: int,
              seed: int, progress: bool = True, model: str = "portfolio",
              scenarios: int = 1000, runs: int = 3, liquidation: bool = False,
              files: bool = True) -> dict[str, Any]:
    from rich.console import Console

    console = Console(stderr=True, quiet=not progress, markup=False)
    config, market, names = _bench_inputs(instruments, scenarios)
    if model == "portfolio":
        with console.status("compiling the kernels in a child process (or loading the cache)"):
            t = time.perf_counter()
            compiled = compile_in_child(instruments, scenarios, positions, seed, files,
                                        liquidation)
            child = time.perf_counter() - t
        report = _portfolio_bench(console, config, market, names, accounts=accounts,
                                  positions=positions, baseline_positions=baseline_positions,
                                  seed=seed, runs=runs, liquidation=liquidation, files=files)
        report["compile_child"] = {"seconds": child, "ok": compiled}
        return report
    history = synthetic_history(days=scenarios + 400) if model == "var" else None

    with console.status("warming up (numba kernels: compile or load cache)"):
        t = time.perf_counter()
        _pipeline(names, random_book_columns(64, min(positions, 8), names, seed + 1), market,
                  config, model, history)
        warmup = time.perf_counter() - t
    with console.status(f"building a seeded book of {accounts:,} x {positions} positions"):
        columns = random_book_columns(accounts, positions, names, seed)
    with console.status(f"timing the {model} model"):
        seconds, bound, result = _pipeline(names, columns, market, config, model, history)
    return {
        "model": model, "accounts": accounts, "positions_per_account": positions,
        "positions": bound.book.position_count, "instruments": len(names), "seconds": seconds,
        "warmup_seconds": warmup, "peak_rss_mb": _peak_rss_mb(),
        "accounts_per_second": accounts / seconds["total"], "threads": _threads(),
        "scenarios": scenarios if model == "var" else 0,
    }


def _bench_inputs(instruments: int, scenarios: int
                  ) -> tuple[RiskConfig, MarketSnapshot, list[str]]:
    """(config, market, instrument names) of the bench. The scenario engine is what is timed
    and checked against the baselines: collateral haircuts (a few vector operations per
    asset) are left out of all of them."""
    config = RiskConfig.from_dict({"var": {"scenarios": scenarios},
                                   "haircuts": {"enabled": False}})
    return config, parse_market(demo_market_document()), instrument_names(instruments)


def compile_in_child(instruments: int, scenarios: int, positions: int, seed: int,
                     files: bool, liquidation: bool) -> bool:
    """Run the portfolio bench's warm-ups in a child process first, so that kernels compiled
    from a cold numba cache are written to the cache and this process loads them from there.
    Compiling keeps about 170 MB of the compiler's memory in the process that compiled (434
    against 268 MB after the warm-up on the bench book), which would count in the peak RSS
    the per-tick path is held to, and which a venue's process, loading its kernels from the
    cache, does not hold. Returns whether the child ended well (if not, this process compiles
    what is missing itself, as before)."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(
        target=_warm_all, args=(instruments, scenarios, positions, seed, files, liquidation))
    child.start()
    child.join()
    return child.exitcode == 0


def _warm_all(instruments: int, scenarios: int, positions: int, seed: int, files: bool,
              liquidation: bool) -> None:
    """The child's work (``compile_in_child``): the bench's inputs rebuilt, its warm-ups."""
    config, market, names = _bench_inputs(instruments, scenarios)
    _warm_portfolio(names, market, config, positions, seed, files)
    if liquidation:
        _warm_liquidation(names, market, config, positions, seed)


def _threads() -> int:
    import numba

    return int(numba.get_num_threads())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _median(values: list[float]) -> float:
    return float(np.median(np.array(values)))


def _book(names: list[str], columns: dict[str, Any]) -> ColumnarBook:
    """Names -> instruments, columns -> CSR book (the resolve step)."""
    instruments = [parse_shorthand(n) for n in names]
    accounts = len(columns["account_ids"])
    return book_from_columns(
        account_ids=columns["account_ids"],
        mode=np.full(accounts, MODE_CODES[MarginMode.PORTFOLIO], dtype=np.int32),
        instruments=[i for i in instruments if i is not None],
        position_account=columns["position_account"],
        position_instrument=columns["position_instrument"],
        size=columns["size"], entry_price=columns["entry_price"],
        assets=("BTC", "USDC"), collateral=columns["collateral"],
    )


def moved_market(market: MarketSnapshot, step: int) -> MarketSnapshot:
    """The market of tick ``step``: BTC up and ETH down 0.1 % a step (their marks and coin
    prices with them)."""
    from margin_engine.liquidation.shocks import marks_by_underlying, with_index

    marked = marks_by_underlying(market, {})
    moved = market
    for u, sign in (("BTC", 1.0), ("ETH", -1.0)):
        level = market.underlyings[u].index * (1.0 + sign * 0.001 * step)
        moved = with_index(moved, marked, u, level)
    return moved


def _portfolio_bench(console: Any, config: RiskConfig, market: MarketSnapshot,
                     names: list[str], *, accounts: int, positions: int,
                     baseline_positions: int, seed: int, runs: int, liquidation: bool,
                     files: bool) -> dict[str, Any]:
    from margin_engine.bench.numpy_baseline import numpy_layout, numpy_margins
    from margin_engine.margin.portfolio_kernel import stream_read_nb
    from margin_engine.margin.tick import bind_tick, tick_margins

    load_before = os.getloadavg()
    with console.status("warming up (numba kernels: compile or load cache)"):
        t = time.perf_counter()
        _warm_portfolio(names, market, config, positions, seed, files)
        warmup = time.perf_counter() - t
    with console.status(f"building a seeded book of {accounts:,} x {positions} positions"):
        columns = random_book_columns(accounts, positions, names, seed)
    stages: list[dict[str, float]] = []
    held: tuple[Any, ...] = ()
    with console.status(f"full runs from columns ({runs})"):
        for _ in range(runs):
            held = ()  # one book at a time, as a venue holds it: the last run's goes first
            stage, held = _full_run(names, columns, market, config)
            stages.append(stage)
    book, tick_book, state, result = held
    del held
    seconds = {key: _median([s[key] for s in stages]) for key in stages[0]}
    ticks: list[float] = []
    numpys: list[float] = []
    floors: list[float] = []
    numpy_rel = 0.0
    with console.status(f"ticks ({runs})"):
        tick_ims = []
        for step in range(1, runs + 1):
            moved = moved_market(market, step)
            t0 = time.perf_counter()
            margins = tick_margins(tick_book, bind_tick(tick_book, moved, config), config,
                                   detail=False)
            ticks.append(time.perf_counter() - t0)
            tick_ims.append(margins.initial_margin)
        tick_rss = _peak_rss_mb()  # the process so far: book, resolved book, ticks
    with console.status(f"numpy baseline and bandwidth floor ({runs} each)"):
        layout = numpy_layout(tick_book)
        for step in range(1, runs + 1):
            state = bind_tick(tick_book, moved_market(market, step), config)
            t0 = time.perf_counter()
            im, _ = numpy_margins(tick_book, state, layout, config)
            numpys.append(time.perf_counter() - t0)
            numpy_rel = max(numpy_rel, _max_rel(im, tick_ims[step - 1]))
        for _ in range(runs):
            t0 = time.perf_counter()
            stream_read_nb(book.position_instrument, tick_book.quantity)
            floors.append(time.perf_counter() - t0)
        del layout, tick_ims
    streamed = book.position_instrument.nbytes + tick_book.quantity.nbytes
    n_pos = book.position_count
    report: dict[str, Any] = {
        "model": "portfolio", "accounts": accounts, "positions_per_account": positions,
        "positions": n_pos, "instruments": len(names), "scenarios": len(result.scenarios),
        "runs": runs, "seconds": seconds, "warmup_seconds": warmup,
        "accounts_per_second": accounts / seconds["total"], "threads": _threads(),
        "tick": {"seconds": _median(ticks), "runs": ticks,
                 "accounts_per_second": accounts / _median(ticks), "peak_rss_mb": tick_rss},
        "numpy": {"seconds": _median(numpys), "runs": numpys,
                  "ratio_to_tick": _median(numpys) / _median(ticks),
                  "max_relative_difference": numpy_rel},
        "bandwidth_floor": {"seconds": _median(floors), "runs": floors, "bytes": streamed,
                            "gb_per_second": streamed / _median(floors) / 1e9,
                            "tick_over_floor": _median(ticks) / _median(floors)},
    }
    report["baseline"] = _scalar_baseline(console, book, market, config, result.initial_margin,
                                          baseline_positions, positions, seconds["total"])
    if liquidation:
        report["liquidation"] = _liquidation_stage(console, book, market, config, names,
                                                   positions, seed, runs)
    del tick_book, state, result, margins, im
    if files:
        report["files"] = _files_stage(console, book, market, config, runs)
    report["peak_rss_mb"] = _peak_rss_mb()
    report["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    return report


def _full_run(names: list[str], columns: dict[str, Any], market: MarketSnapshot,
              config: RiskConfig) -> tuple[dict[str, float], tuple[Any, ...]]:
    """One full run from columns, timed by stage, and what it built: (book, tick book, tick
    state, result)."""
    from margin_engine.margin.tick import TickBook, bind_tick, tick_margins

    t0 = time.perf_counter()
    book = _book(names, columns)
    tick_book = TickBook.from_book(book)
    t1 = time.perf_counter()
    state = bind_tick(tick_book, market, config)
    t2 = time.perf_counter()
    result = tick_margins(tick_book, state, config)
    t3 = time.perf_counter()
    return ({"resolve": t1 - t0, "price_grid": t2 - t1, "aggregation": t3 - t2,
             "total": t3 - t0}, (book, tick_book, state, result))


def _max_rel(got: np.ndarray, want: np.ndarray) -> float:
    if want.size == 0:
        return 0.0
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))


def _scalar_baseline(console: Any, book: ColumnarBook, market: MarketSnapshot,
                     config: RiskConfig, engine_im: np.ndarray, baseline_positions: int,
                     positions: int, engine_total: float) -> dict[str, Any]:
    """The scalar per-position reference on the first accounts (bound on their own)."""
    sample = max(1, min(book.account_count, baseline_positions // max(1, positions)))
    with console.status(f"scalar reference on {sample:,} accounts"):
        bound = bind_market(book_subset(book, np.arange(sample)), market)
        t = time.perf_counter()
        naive = np.array([explain_portfolio(bound, config, a)["initial_margin"]
                          for a in range(sample)])
        baseline_seconds = time.perf_counter() - t
    done = int(book.offsets[sample])
    engine_per_position = engine_total / max(1, book.position_count)
    per_position = baseline_seconds / max(1, done)
    return {
        "accounts": sample, "positions": done, "seconds": baseline_seconds,
        "seconds_per_position": per_position,
        "engine_seconds_per_position": engine_per_position,
        "speed_ratio": per_position / engine_per_position,
        "max_relative_difference": _max_rel(naive, engine_im[:sample]),
    }


def _warm_portfolio(names: list[str], market: MarketSnapshot, config: RiskConfig,
                    positions: int, seed: int, files: bool) -> None:
    """The per-tick path, the numpy baseline, the bandwidth floor and (with ``files``) the
    files run on a 64-account book: their kernels compiled or loaded from the cache."""
    from rich.console import Console

    from margin_engine.bench.numpy_baseline import numpy_layout, numpy_margins
    from margin_engine.margin.portfolio_kernel import stream_read_nb
    from margin_engine.margin.tick import TickBook, bind_tick, tick_margins

    small = TickBook.from_book(_book(names, random_book_columns(
        64, min(positions, 8), names, seed + 1)))
    state = bind_tick(small, market, config)
    tick_margins(small, state, config)
    numpy_margins(small, state, numpy_layout(small), config)
    stream_read_nb(small.book.position_instrument, small.quantity)
    if files:
        _files_stage(Console(quiet=True), small.book, market, config, 1)


def _warm_liquidation(names: list[str], market: MarketSnapshot, config: RiskConfig,
                      positions: int, seed: int) -> None:
    """The liquidation search on 2,000 accounts: enough positions per instrument for the
    shared state table, as the big book (a small book takes the path of the tables kept
    between calls: other kernels)."""
    from margin_engine.liquidation.price import liquidation_levels

    shared = _book(names, random_book_columns(WARM_LIQUIDATION_ACCOUNTS, positions, names,
                                              seed + 2))
    liquidation_levels(bind_market(shared, market), "portfolio", config)


def _liquidation_stage(console: Any, book: ColumnarBook, market: MarketSnapshot,
                       config: RiskConfig, names: list[str], positions: int,
                       seed: int, runs: int) -> dict[str, Any]:
    """Both liquidation levels of every account on every underlying, ``runs`` times (the
    median reported, as every other figure), after a warm-up of its own (here, not before
    the ticks: the kernels it loads are not part of the per-tick process's memory). Each run
    binds the book afresh: nothing the last run found or filled is reused."""
    from margin_engine.liquidation.price import liquidation_levels
    from margin_engine.liquidation.vector_levels import STATS

    with console.status("warming up the liquidation search (numba kernels)"):
        t = time.perf_counter()
        _warm_liquidation(names, market, config, positions, seed)
        warmup = time.perf_counter() - t
    times: list[float] = []
    found: set[tuple[int, int]] = set()
    for run in range(runs):
        with console.status(f"liquidation prices of {book.account_count:,} accounts "
                            f"(run {run + 1} of {runs})"):
            bound = bind_market(book, market)
            before = dict(STATS)
            t = time.perf_counter()
            levels = liquidation_levels(bound, "portfolio", config)
            times.append(time.perf_counter() - t)
            del bound
        counts = (int(np.isfinite(levels.down).sum()), int(np.isfinite(levels.up).sum()))
        found.add(counts)
    searches = STATS["jobs"] - before["jobs"]
    return {"seconds": _median(times), "runs": times, "warmup_seconds": warmup,
            "down_found": counts[0], "up_found": counts[1],
            "same_every_run": len(found) == 1, "searches": searches,
            "evaluations_per_search": (STATS["evaluations"] - before["evaluations"])
            / max(1, searches)}


def _files_stage(console: Any, book: ColumnarBook, market: MarketSnapshot,
                 config: RiskConfig, runs: int) -> dict[str, Any]:
    """Full runs from a Parquet positions file and its accounts file."""
    import tempfile
    from pathlib import Path

    from margin_engine.io.bulk import read_bulk_book
    from margin_engine.margin.tick import TickBook, bind_tick, tick_margins

    with tempfile.TemporaryDirectory(prefix="margin-bench-") as folder:
        with console.status("writing the book to Parquet"):
            positions_path, accounts_path = write_book_files(book, Path(folder))
            written = positions_path.stat().st_size + accounts_path.stat().st_size
        times: list[float] = []
        with console.status(f"full runs from files (1 untimed + {runs})"):
            for _ in range(runs + 1):
                t0 = time.perf_counter()
                loaded = TickBook.from_book(read_bulk_book(positions_path, accounts_path))
                tick_margins(loaded, bind_tick(loaded, market, config), config, detail=False)
                times.append(time.perf_counter() - t0)
                del loaded
    # the first run touches this much memory for the first time in the process (on a freshly
    # started virtual machine, memory never touched since boot costs several times more):
    # reported, not counted
    return {"seconds": _median(times[1:]), "runs": times[1:], "first_run": times[0],
            "bytes": written}


def write_book_files(book: ColumnarBook, folder: Any, *, accounts_per_group: int = 50_000,
                     compression: str = "none") -> tuple[Any, Any]:
    """The book as a Parquet positions file and an accounts file (``account, mode,
    collateral_<ASSET>``), laid out to decode fast: one row group per ``accounts_per_group``
    accounts, whose account column is dictionary-encoded over that group's ids alone (int32
    indices; a dictionary of all the ids in every group would be decoded, and hashed, once a
    group), the instrument column dictionary-encoded, the numbers plain, no compression."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from margin_engine.book.columnar import MODES_BY_CODE, TextColumn

    ids = book.account_ids.arrow if isinstance(book.account_ids, TextColumn) \
        else pa.array(book.account_ids, type=pa.string())
    names = pa.array([i.name for i in book.instruments.instruments], type=pa.string())
    account_type = pa.dictionary(pa.int32(), pa.string())
    schema = pa.schema([("account", account_type), ("instrument", account_type),
                        ("size", pa.float64()), ("entry_price", pa.float64())])
    positions_path, accounts_path = folder / "positions.parquet", folder / "accounts.parquet"
    options: dict[str, Any] = {"compression": compression, "dictionary_pagesize_limit": 1 << 30}
    offsets, instrument = book.offsets, book.position_instrument
    with pq.ParquetWriter(positions_path, schema, use_dictionary=["account", "instrument"],
                          **options) as writer:
        for a0 in range(0, max(1, book.account_count), max(1, accounts_per_group)):
            a1 = min(book.account_count, a0 + accounts_per_group)
            p0, p1 = int(offsets[a0]), int(offsets[a1])
            local = np.repeat(np.arange(a1 - a0, dtype=np.int32), np.diff(offsets[a0:a1 + 1]))
            group = pa.table({
                "account": pa.DictionaryArray.from_arrays(pa.array(local), ids[a0:a1]),
                "instrument": pa.DictionaryArray.from_arrays(pa.array(instrument[p0:p1]), names),
                "size": book.size[p0:p1], "entry_price": book.entry_price[p0:p1]}, schema=schema)
            writer.write_table(group, row_group_size=max(1, p1 - p0))
    modes = [MODES_BY_CODE[int(c)].value for c in range(3)]
    accounts = pa.table({
        "account": ids,
        "mode": pa.DictionaryArray.from_arrays(pa.array(book.mode), pa.array(modes)),
        **{f"collateral_{a}": book.collateral[:, k] for k, a in enumerate(book.assets)}})
    pq.write_table(accounts, accounts_path, row_group_size=max(1, accounts.num_rows),
                   use_dictionary=["mode"], **options)
    return positions_path, accounts_path


def print_report(report: dict[str, Any]) -> None:
    from margin_engine.cli.console import make_console
    from margin_engine.cli.render import heading
    from margin_engine.cli.render import table as make_table

    s, b = report["seconds"], report.get("baseline")
    console = make_console()
    heading(console, f"{report['model']} model: {report['accounts']:,} accounts x "
                     f"{report['positions_per_account']} positions ({report['positions']:,})",
            f"over {report['instruments']:,} instruments, {report['scenarios']} scenarios")
    runs = report.get("runs")
    table = make_table("measure", "value")
    for stage in ("resolve", "price_grid", "aggregation", "total"):
        table.add_row(f"{stage.replace('_', ' ')} (s)", f"{s[stage]:.3f}")
    table.add_row("accounts / s", f"{report['accounts_per_second']:,.0f}")
    if "tick" in report:
        t, n, f = report["tick"], report["numpy"], report["bandwidth_floor"]
        table.add_row(f"per-tick re-margin, median of {runs} (s)", f"{t['seconds']:.3f}")
        table.add_row("peak RSS up to the ticks (MB)", f"{t['peak_rss_mb']:,.0f}")
        table.add_row("plain numpy, same aggregation (s)", f"{n['seconds']:.3f}")
        table.add_row("numpy / tick", f"{n['ratio_to_tick']:.1f}x")
        table.add_row("numpy max relative IM difference", f"{n['max_relative_difference']:.1e}")
        table.add_row(f"bandwidth floor: one read of {f['bytes'] / 1e6:,.0f} MB (s)",
                      f"{f['seconds']:.4f}")
        table.add_row("tick / floor", f"{f['tick_over_floor']:.1f}x")
    if "files" in report:
        table.add_row("full run from Parquet files (s)", f"{report['files']['seconds']:.3f}")
    if "liquidation" in report:
        q = report["liquidation"]
        table.add_row(f"liquidation prices, both sides, median of {len(q['runs'])} (s)",
                      f"{q['seconds']:.3f}")
        table.add_row("liquidation warm-up, not timed above (s)", f"{q['warmup_seconds']:.2f}")
        table.add_row("liquidation levels found (down / up)",
                      f"{q['down_found']:,} / {q['up_found']:,}"
                      + ("" if q["same_every_run"] else " (NOT the same every run)"))
        table.add_row("liquidation searches / gap evaluations each",
                      f"{q['searches']:,} / {q['evaluations_per_search']:.2f}")
    table.add_row("peak RSS (MB)", f"{report['peak_rss_mb']:,.0f}")
    table.add_row("warm-up, not in total (s)", f"{report['warmup_seconds']:.2f}")
    if "compile_child" in report:
        child = report["compile_child"]
        table.add_row("kernels compiled first in a child process (s)",
                      f"{child['seconds']:.2f}" + ("" if child["ok"] else " (failed)"))
    if "load_average" in report:
        before, after = report["load_average"]["before"], report["load_average"]["after"]
        table.add_row("load average (1 min) before / after", f"{before[0]:.2f} / {after[0]:.2f}")
    if b is None:
        console.print(table)
        return
    table.add_row(f"naive baseline: {b['positions']:,} positions (s)", f"{b['seconds']:.3f}")
    table.add_row("baseline us / position", f"{1e6 * b['seconds_per_position']:.2f}")
    table.add_row("engine us / position", f"{1e6 * b['engine_seconds_per_position']:.4f}")
    ratio = b["speed_ratio"]  # below 10 on a book too small to amortise a pass's start
    table.add_row("speed ratio (baseline / engine)",
                  f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2g}x")
    table.add_row("max relative IM difference vs baseline", f"{b['max_relative_difference']:.1e}")
    console.print(table)


SCALE_HEADER = "# Scale"
SCALE_INTRO = (
    "Command: `margin-engine bench --accounts 1000000 --positions 10 --record "
    "benchmarks/RESULTS.md`\n(seeded random book as above; collateral haircuts off). Every "
    "figure is the median of `--runs` (3)\nruns in one invocation. **tick** = per-tick "
    "re-margin of the whole book, the resolved book given\nand the market moved (instrument "
    "binding, scenario grid, fused pass); **numpy** = the same\naggregation from the same "
    "tick state in plain numpy; **floor** = one streaming read of the position\narrays the "
    "pass reads (int32 instrument + float64 quantity); **files** = full run from a Parquet\n"
    "positions file and its accounts file (read, resolve, bind, grid, aggregation); "
    "**liquidation**\n= both liquidation levels of every account and underlying "
    "(`--liquidation-prices`);\n**RSS** = peak of the whole process (at ticks: up to "
    "the end of the ticks, before the\nbaselines and files); **load** = "
    "1-minute load average before / after (this\nmachine has 2 cores and is shared: figures "
    "from a loaded machine are slower, ratios in the\nsame run hold).\n\n"
    + "| " + " | ".join(("date", "accounts x positions", "tick s", "numpy s", "numpy / tick",
                         "floor s", "files s", "liquidation s", "RSS at ticks MB", "peak RSS MB",
                         "load")) + " |\n"
    + "|" + "---|" * 11 + "\n")


def check_record_path(path: Any) -> None:
    """InputError (field ``--record``) unless ``path`` can take a results row: a Markdown
    file (``.md``), new or writable, in an existing folder this user can write to; checked
    before a bench of minutes runs, not after it."""
    from pathlib import Path

    from margin_engine.core.errors import InputError

    target = Path(path)
    if target.is_dir():
        raise InputError("a Markdown file to append the row to, not a folder", field="--record",
                         value=str(path))
    if target.suffix.lower() != ".md":
        raise InputError("a Markdown file (.md) to append the row to (benchmarks/RESULTS.md)",
                         field="--record", value=str(path))
    folder = target.parent
    if not folder.is_dir():
        raise InputError(f"a file in an existing folder ({folder} is not one)",
                         field="--record", value=str(path))
    if not os.access(target if target.exists() else folder, os.W_OK):
        raise InputError("a file this user can write", field="--record", value=str(path))


def record_results(report: dict[str, Any], path: Any) -> None:
    """Append the report as a row of the "Scale" section of ``path`` (the section is created
    at the end of the file if missing; the file is read just before it is written)."""
    from pathlib import Path

    target = Path(path)
    text = target.read_text() if target.exists() else ""
    liquidation = report.get("liquidation")
    files = report.get("files")
    load = report.get("load_average", {"before": [math.nan], "after": [math.nan]})
    row = (f"| {dt.datetime.now(dt.UTC).date().isoformat()} | {report['accounts']:,} x "
           f"{report['positions_per_account']} | {report['tick']['seconds']:.3f} | "
           f"{report['numpy']['seconds']:.3f} | {report['numpy']['ratio_to_tick']:.1f}x | "
           f"{report['bandwidth_floor']['seconds']:.4f} | "
           + (f"{files['seconds']:.3f}" if files else "-") + " | "
           + (f"{liquidation['seconds']:.2f}" if liquidation else "-") + " | "
           f"{report['tick'].get('peak_rss_mb', math.nan):,.0f} | {report['peak_rss_mb']:,.0f} | "
           f"{load['before'][0]:.1f} / {load['after'][0]:.1f} |")
    header = SCALE_INTRO.splitlines()[-2]
    if SCALE_HEADER + "\n" not in text:
        text = text.rstrip("\n") + "\n\n" + SCALE_HEADER + "\n\n" + SCALE_INTRO + row + "\n"
    else:  # under the last row of the section's table (text may follow the table)
        lines = text.split("\n")
        start = lines.index(SCALE_HEADER)
        at = next((k for k in range(start, len(lines)) if lines[k] == header), None)
        if at is None:
            end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("# ")),
                       len(lines))
            block = SCALE_INTRO.rstrip("\n").split("\n")[-2:] + [row]
            lines[end:end] = ["", *block, ""] if end < len(lines) else ["", *block]
        else:
            end = at + 2
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            lines.insert(end, row)
        text = "\n".join(lines)
    write_whole(target, lambda path: path.write_text(text))  # a stopped run leaves the old file
