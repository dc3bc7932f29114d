"""`margin-engine demo`: thousands of strategy accounts, every model, efficiency per strategy.

The book goes through the same reader as a user's portfolio file; entries are set near the
marks; collateral is sized to a random leverage. Each strategy's legs are also margined alone
(one account per leg) to show the hedge benefit each model recognises.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from margin_engine.book.bound import BoundBook, bind_market
from margin_engine.book.columnar import ColumnarBook, book_from_portfolio
from margin_engine.cli.console import make_console
from margin_engine.demo.market import demo_market_document
from margin_engine.demo.strategies import STRATEGIES, Leg
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import MODEL_NAMES
from margin_engine.margin.run import efficiency, run_models

SIZE_RANGE = {"BTC": (0.5, 20.0), "ETH": (5.0, 300.0)}


def build_strategy_accounts(accounts: int, seed: int) -> tuple[list[str], list[list[Leg]]]:
    """(strategy name per account, legs per account), strategies in equal shares."""
    rng = np.random.default_rng(seed)
    names = list(STRATEGIES)
    labels: list[str] = []
    legs: list[list[Leg]] = []
    for k in range(accounts):
        name = names[k % len(names)]
        underlying = "BTC" if rng.random() < 0.6 else "ETH"
        low, high = SIZE_RANGE[underlying]
        size = round(float(np.exp(rng.uniform(np.log(low), np.log(high)))), 2)
        labels.append(name)
        legs.append(STRATEGIES[name](rng, underlying, size))
    return labels, legs


def _document(legs: list[list[Leg]], ids: list[str]) -> dict[str, Any]:
    return {"schema": "margin-engine/portfolio/v1", "accounts": [
        {"id": account_id, "mode": "portfolio", "collateral": {},
         "positions": [{"instrument": leg.instrument, "size": leg.size, "entry_price": 1.0}
                       for leg in account_legs]}
        for account_id, account_legs in zip(ids, legs, strict=True)]}


def _with_entries_and_collateral(book: ColumnarBook, bound: BoundBook, seed: int,
                                 funded: bool) -> ColumnarBook:
    """Entries within a few % of mark; collateral (USDC, part in BTC) at 2x-10x leverage."""
    rng = np.random.default_rng(seed + 1)
    entry = bound.mark[book.position_instrument] * (1 + rng.normal(0, 0.03, book.position_count))
    if not funded:
        return replace(book, entry_price=entry)
    gross = bound.account_gross_notional()
    usd = gross / rng.uniform(2.0, 10.0, book.account_count) + 10_000.0
    btc_share = np.where(rng.random(book.account_count) < 0.25, 0.5, 0.0)
    collateral = np.column_stack([btc_share * usd / 65000.0, (1 - btc_share) * usd])
    return replace(book, entry_price=entry, assets=("BTC", "USDC"), collateral=collateral)


def book_document(book: ColumnarBook) -> dict[str, Any]:
    """The funded demo book as a portfolio file (margin-engine/portfolio/v1), so the same book
    can be given to ``compute``, ``compare`` and ``compare --profiles``."""
    names = [inst.name for inst in book.instruments.instruments]
    accounts = []
    for a, account_id in enumerate(book.account_ids):
        rows = range(int(book.offsets[a]), int(book.offsets[a + 1]))
        collateral = {asset: float(book.collateral[a, j]) for j, asset in enumerate(book.assets)
                      if book.collateral[a, j] != 0.0}
        accounts.append({"id": account_id, "mode": "portfolio", "collateral": collateral,
                         "positions": [{"instrument": names[int(book.position_instrument[r])],
                                        "size": float(book.size[r]),
                                        "entry_price": float(book.entry_price[r])}
                                       for r in rows]})
    return {"schema": "margin-engine/portfolio/v1", "accounts": accounts}


def run_demo(*, accounts: int, output: Path, seed: int, console: Console | None = None,
             write_chart: bool = True) -> dict[str, Any]:
    console = console or make_console()
    started = time.perf_counter()
    config = RiskConfig()
    market = parse_market(demo_market_document())
    labels, legs = build_strategy_accounts(accounts, seed)
    ids = [f"acct-{k:05d}" for k in range(accounts)]
    leg_owner = [k for k, account_legs in enumerate(legs) for _ in account_legs]
    leg_legs = [[leg] for account_legs in legs for leg in account_legs]

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("building and margining the demo book", total=4)
        book = book_from_portfolio(parse_portfolio(_document(legs, ids)))
        book = _with_entries_and_collateral(book, bind_market(book, market), seed, funded=True)
        bound = bind_market(book, market)
        progress.advance(task)
        run = run_models(bound, config, list(MODEL_NAMES))
        unfunded = replace(book, assets=(), collateral=np.zeros((accounts, 0)))
        unfunded_run = run_models(bind_market(unfunded, market), config, list(MODEL_NAMES))
        progress.advance(task)
        leg_book = book_from_portfolio(parse_portfolio(
            _document(leg_legs, [f"leg-{k}" for k in range(len(leg_legs))])))
        leg_book = _with_entries_and_collateral(leg_book, bind_market(leg_book, market), seed,
                                                funded=False)
        leg_run = run_models(bind_market(leg_book, market), config, list(MODEL_NAMES))
        progress.advance(task)
        summary = _summarise(labels, run, unfunded_run, leg_run, np.array(leg_owner),
                             accounts)
        progress.advance(task)

    output.mkdir(parents=True, exist_ok=True)
    _print_summary(console, summary, accounts, bound.book.position_count)
    (output / "demo_results.json").write_text(json.dumps(summary, indent=2))
    book_file, market_file = output / "demo_portfolio.json", output / "demo_market.json"
    book_file.write_text(json.dumps(book_document(book)))
    market_file.write_text(json.dumps(demo_market_document(), indent=2))
    chart = output / "demo_efficiency.png"
    if write_chart:
        _chart(summary, chart)
    elapsed = time.perf_counter() - started
    written = [(output / "demo_results.json", "the numbers above"),
               *([(chart, "the chart")] if write_chart else []),
               (book_file, "the book, a portfolio file"), (market_file, "its market")]
    console.print(f"\nWrote, in {elapsed:.1f} s:", highlight=False)
    for path, what in written:
        console.print(f"  {path}  {what}", highlight=False)
    console.print("Next:", highlight=False)
    console.print(f"  margin-engine compare {book_file} --market {market_file} --profiles all\n"
                  "      the same book as seven venues would margin it\n"
                  "  margin-engine compare PORTFOLIO --market MARKET\n"
                  "      your own book under every model\n"
                  "  margin-engine report\n"
                  "      an HTML report of every model's margin efficiency per strategy\n"
                  "  margin-engine --help\n"
                  "      liquidation replays, backtests, the live monitor and the service",
                  highlight=False)
    return summary


def _summarise(labels: list[str], run: Any, unfunded_run: Any, leg_run: Any,
               leg_owner: np.ndarray, accounts: int) -> dict[str, Any]:
    """Per strategy: median efficiency and total IM per model; the hedge benefit compares the
    strategy without collateral to the sum of its legs each margined alone (no collateral)."""
    labels_arr = np.array(labels)
    rows: dict[str, Any] = {}
    for name in dict.fromkeys(labels):
        mask = labels_arr == name
        row: dict[str, Any] = {"accounts": int(mask.sum()),
                               "gross_notional": float(run.gross_notional[mask].sum())}
        for model in run.results:
            initial = run.results[model].initial_margin
            legs_alone = np.bincount(leg_owner, weights=leg_run.results[model].initial_margin,
                                     minlength=accounts)
            eff = efficiency(run, model)[mask]
            row[model] = {
                "median_efficiency": float(np.nanmedian(eff)) if np.isfinite(eff).any() else None,
                "total_initial_margin": float(initial[mask].sum()),
                "unfunded_initial_margin": float(
                    unfunded_run.results[model].initial_margin[mask].sum()),
                "legs_alone_initial_margin": float(legs_alone[mask].sum()),
            }
        rows[name] = row
    return {"strategies": rows, "models": list(run.results)}


# Why a strategy needs more initial margin under the portfolio grid than under the isolated
# tiers (50x: 2 % of a delta-one leg's notional, nothing for a long option).
WHY_MORE = {
    "naked future": "the tiers charge 2 % of the notional, the grid the loss of a 16 % move",
    "BTC/ETH pair": "each perp pays 2 % under the tiers; on the grid each leg loses 16 % and "
                    "the BTC/ETH correlation offsets at most half",
    "protective put": "the tiers charge the perp 2 % and the long put nothing; the grid charges "
                      "the loss before the put pays (the drop to its strike, 3-15 % below the "
                      "index) plus the premium the put loses in that scenario",
    "covered call": "the tiers charge the perp 2 % plus the short call's own rule; the grid "
                    "charges the perp's 16 % fall less the call premium",
}
MORE_FALLBACK = "its worst loss on the +/-16 % grid is larger than 2 % of its notional"


def _print_summary(console: Console, summary: dict[str, Any], accounts: int,
                   positions: int) -> None:
    from rich.text import Text

    from margin_engine.cli.render import bullet, heading, keep_names_whole, notes, table

    models = summary["models"]
    heading(console, "Margin efficiency = gross notional / initial margin (median per account)",
            f"{accounts:,} accounts, {positions:,} positions; higher: less margin for the "
            "same exposure")
    out = table("strategy", *models, "IM ratio\nportfolio /\nisolated",
                "IM ratio\nportfolio /\nlegs alone")
    worse: list[str] = []
    for name, row in summary["strategies"].items():
        cells = [f"{row[m]['median_efficiency']:.1f}x" if row[m]["median_efficiency"] else "-"
                 for m in models]
        iso = row["isolated"]["total_initial_margin"]
        port = row["portfolio"]["total_initial_margin"]
        legs = row["portfolio"]["legs_alone_initial_margin"]
        together = row["portfolio"]["unfunded_initial_margin"]
        out.add_row(name, *cells, f"{port / iso:.2f}" if iso else "-",
                    f"{together / legs:.2f}" if legs else "-")
        if iso and port > iso:
            worse.append(name)
    console.print(keep_names_whole(out, summary["strategies"]))
    notes(console,
          "Model columns: median efficiency per account ('-': IM is 0, long options only: "
          "premium paid).",
          "IM ratios: ratios of totals over the strategy's accounts (< 1: the portfolio model "
          "asks less);",
          "portfolio / isolated with collateral; portfolio / legs alone: the strategy against "
          "its legs each",
          "margined in an account of its own, both without collateral (the hedge benefit).")
    if worse:
        console.print(Text("Needs MORE margin under the +/-16 % portfolio grid than under the "
                           "50x isolated tiers:", style="bold"))
        for name in worse:
            bullet(console, f"{name}: {WHY_MORE.get(name, MORE_FALLBACK)}.")


def _efficiency_label(value: float, _: object = None) -> str:
    return f"{value:,.0f}x" if value >= 1 else f"{value:g}x"


def _chart(summary: dict[str, Any], path: Path) -> None:
    models = summary["models"]
    names = list(summary["strategies"])
    values = {m: [summary["strategies"][n][m]["median_efficiency"] for n in names]
              for m in models}
    strategy_bars(names, models, values, path, log=True,
                  title="Margin efficiency by strategy and model (higher: less margin for the "
                  "same exposure)",
                  xlabel="margin efficiency = gross notional / initial margin (median per "
                  "account, log scale)")


def strategy_bars(names: list[str], models: list[str], values: dict[str, list[float | None]],
                  path: Path, *, log: bool, title: str, xlabel: str) -> None:
    """Horizontal bars per strategy and model, each with its value at its end. ``log``: an
    efficiency axis (labels 2x, 5x, 10x, ...); else a USD axis. A missing value (None: IM is 0,
    no efficiency) gets a note inside the plot on its strategy's row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    y = np.arange(len(names))
    height = 0.8 / len(models)
    data = {m: np.array([np.nan if v is None else v for v in values[m]], dtype=np.float64)
            for m in models}
    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in data.values()])
    fig, ax = plt.subplots(figsize=(11, max(5.0, 0.65 * len(names) + 1.5)), dpi=110)
    if log:
        low, high = float(finite.min()) / 1.5, float(finite.max()) * 2.2
    else:
        low, high = 0.0, float(finite.max()) * 1.18
    for k, model in enumerate(models):
        offset = y + (k - (len(models) - 1) / 2) * height
        ax.barh(offset, data[model], height, label=model)
        for row, value in zip(offset, data[model], strict=True):
            if np.isfinite(value) and (value > 0 or not log):
                shown = f"{value:.1f}x" if log else f"{value:,.0f}"
                at = value * 1.03 if log else value + 0.005 * high
                ax.text(at, row, shown, va="center", fontsize=6.5)
    for j in range(len(names)):
        missing = [m for m in models if not np.isfinite(data[m][j])]
        if missing:
            ax.text(low * 1.05 if log else 0.005 * high, y[j] - 0.4 + height * 0.5,
                    f"{', '.join(missing)}: IM = 0 (long options: premium paid)",
                    va="center", fontsize=7, color="dimgray")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
        ticks = [t for t in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
                 if low <= t <= high]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(_efficiency_label))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlim(low, high)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=len(models), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
