"""Benchmark of the portfolio model on a seeded random book.

Book: BTC and ETH, a perpetual, monthly futures and options on a strike ladder per expiry
(>= 2,000 instruments); every account holds ``positions`` distinct instruments, USDC and some
BTC collateral. Timed stages: resolve (names -> instruments, columns -> CSR book, market
binding), price grid (each instrument on each scenario once), aggregation (fused kernel), total.
Baseline: the scalar per-position reference (plain Python loop) on the first accounts holding
about ``baseline_positions`` positions; the ratio compares seconds per position in the same run,
and the baseline's margins are checked against the engine's.
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
from margin_engine.book.columnar import MODE_CODES, book_from_columns
from margin_engine.demo.market import demo_market_document
from margin_engine.domain.instruments import MarginMode, parse_shorthand
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.explain import explain_portfolio
from margin_engine.margin.portfolio import run_portfolio_kernel
from margin_engine.margin.scenarios import value_change_grid

SPOT = {"BTC": 65000.0, "ETH": 2500.0}
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
              scenarios: int = 1000) -> dict[str, Any]:
    from rich.console import Console

    console = Console(stderr=True, quiet=not progress)
    # The scenario engine is what is timed and checked against the naive baseline: collateral
    # haircuts (a few vector operations per asset) are left out of both.
    config = RiskConfig.from_dict({"var": {"scenarios": scenarios},
                                   "haircuts": {"enabled": False}})
    market = parse_market(demo_market_document())
    names = instrument_names(instruments)
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
    n_pos = bound.book.position_count
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    report: dict[str, Any] = {
        "model": model, "accounts": accounts, "positions_per_account": positions,
        "positions": n_pos, "instruments": len(names), "seconds": seconds,
        "warmup_seconds": warmup, "peak_rss_mb": peak_rss_mb,
        "accounts_per_second": accounts / seconds["total"],
        "threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)),
    }
    if model != "portfolio":
        report["scenarios"] = scenarios if model == "var" else 0
        return report

    sample_accounts = max(1, min(accounts, baseline_positions // max(1, positions)))
    with console.status(f"naive baseline on {sample_accounts:,} accounts"):
        t = time.perf_counter()
        naive = [explain_portfolio(bound, config, a)["initial_margin"]
                 for a in range(sample_accounts)]
        baseline_seconds = time.perf_counter() - t
    engine_im = result.initial_margin[:sample_accounts]
    max_rel = float(np.max(np.abs(np.array(naive) - engine_im) / np.maximum(1.0, engine_im)))
    baseline_positions_done = int(bound.book.offsets[sample_accounts])
    engine_per_position = seconds["total"] / n_pos
    baseline_per_position = baseline_seconds / max(1, baseline_positions_done)
    return {
        **report, "scenarios": len(result.scenarios),
        "baseline": {
            "accounts": sample_accounts, "positions": baseline_positions_done,
            "seconds": baseline_seconds,
            "seconds_per_position": baseline_per_position,
            "engine_seconds_per_position": engine_per_position,
            "speed_ratio": baseline_per_position / engine_per_position,
            "max_relative_difference": max_rel,
        },
    }


def print_report(report: dict[str, Any]) -> None:
    from margin_engine.cli.console import make_console
    from margin_engine.cli.render import heading
    from margin_engine.cli.render import table as make_table

    s, b = report["seconds"], report.get("baseline")
    console = make_console()
    heading(console, f"{report['model']} model: {report['accounts']:,} accounts x "
                     f"{report['positions_per_account']} positions ({report['positions']:,})",
            f"over {report['instruments']:,} instruments, {report['scenarios']} scenarios")
    table = make_table("measure", "value")
    for stage in ("resolve", "price_grid", "aggregation", "total"):
        table.add_row(f"{stage.replace('_', ' ')} (s)", f"{s[stage]:.3f}")
    table.add_row("accounts / s", f"{report['accounts_per_second']:,.0f}")
    table.add_row("peak RSS (MB)", f"{report['peak_rss_mb']:,.0f}")
    table.add_row("warm-up, not in total (s)", f"{report['warmup_seconds']:.2f}")
    if b is None:
        console.print(table)
        return
    table.add_row(f"naive baseline: {b['positions']:,} positions (s)", f"{b['seconds']:.3f}")
    table.add_row("baseline us / position", f"{1e6 * b['seconds_per_position']:.2f}")
    table.add_row("engine us / position", f"{1e6 * b['engine_seconds_per_position']:.4f}")
    table.add_row("speed ratio (baseline / engine)", f"{b['speed_ratio']:,.0f}x")
    table.add_row("max relative IM difference vs baseline", f"{b['max_relative_difference']:.1e}")
    console.print(table)
