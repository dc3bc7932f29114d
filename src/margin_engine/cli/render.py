"""Human output of the command line; the JSON documents are built in margin.run and friends.

Layout rules, checked at ``COLUMNS=100`` by tests/unit/test_cli_output.py:

* a title is printed on its own line(s) above its table, never as the table's title (rich wraps
  a title to the width of its table, mid-phrase);
* every table fits in 100 columns: long names fold onto a second line, nothing is cut with '…';
* money is plain decimals with thousands separators (never 1.775e+04), its unit (USD) in the
  heading or the row label; ratios say what they divide.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from margin_engine.app.compute import ModelChoice


def money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def ratio(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.2f}{suffix}"


def amounts(values: Iterable[float | None]) -> Callable[[float | None], str]:
    """A formatter for one column of USD amounts: cents while every amount is below a million,
    whole dollars otherwise (so the column stays narrow)."""
    big = any(v is not None and abs(v) >= 1e6 for v in values)
    return (lambda v: "-" if v is None else f"{v:,.0f}") if big else money


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:,.2f} %"


def duration(seconds: float) -> str:
    """900 -> '15 min', 86400 -> '1 d', 7.5 -> '7.5 s'."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def heading(console: Console, title: str, *details: str) -> None:
    """A bold title line and plain detail lines (each kept under 100 columns by the caller)."""
    console.print(Text(title, style="bold"))
    for line in details:
        console.print(Text(line))


def notes(console: Console, *lines: str) -> None:
    for line in lines:
        console.print(Text(line, style="dim"))


def bullet(console: Console, text: str) -> None:
    """An indented paragraph, wrapped with a hanging indent."""
    import textwrap

    console.print(Text(textwrap.fill(text, width=max(console.width - 1, 40), initial_indent="  ",
                                     subsequent_indent="    ")))


def table(*columns: str, left: Sequence[str] = (), first_folds: bool = True) -> Table:
    """A compact table: the first column and those named in ``left`` left-aligned, the rest
    right-aligned; the first column folds long names instead of cutting them."""
    out = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    for k, name in enumerate(columns):
        is_left = k == 0 or name in left
        out.add_column(name, justify="left" if is_left else "right",
                       overflow="fold" if k == 0 and first_folds else "ellipsis",
                       no_wrap=False)
    return out


def keep_names_whole(out: Table, names: Iterable[str], cap: int = 32) -> Table:
    """Give the first column the width of its longest name (up to ``cap``), so that the numbers'
    headers wrap rather than the names."""
    out.columns[0].min_width = min(max((len(n) for n in names), default=0), cap)
    return out


def _console(console: Console | None) -> Console:
    if console is not None:
        return console
    from margin_engine.cli.console import make_console

    return make_console()


def plain(value: Any) -> str:
    """A number for people: thousands separators, never scientific notation."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.1f}"


def print_measures(title: str, measures: dict[str, Any], console: Console | None = None) -> None:
    """A flat two-column table of a result document (nested mappings become 'a: b' rows)."""
    console = _console(console)
    heading(console, title)
    out = table("measure", "value")

    def add(prefix: str, mapping: dict[str, Any]) -> None:
        for key, value in mapping.items():
            label = f"{prefix}{key.replace('_', ' ')}"
            if isinstance(value, dict):
                add(f"{label}: ", value)
            elif isinstance(value, list):
                out.add_row(label, ", ".join(plain(v) for v in value) or "-")
            else:
                out.add_row(label, plain(value))

    add("", measures)
    console.print(out)


# ----------------------------------------------------------------------------- compute / compare

LISTED_ACCOUNTS = 100  # a table lists every account up to this many; a larger book, a part


def liquidation_risk(account: dict[str, Any]) -> float:
    """MM / equity after haircuts (1 or more: liquidatable); inf where that equity is 0 or
    less and below MM (no ratio, liquidatable), 0 where neither holds anything."""
    ratio_ = account["margin_ratio"]
    if ratio_ is None:
        return math.inf if account["adjusted_equity"] < account["maintenance_margin"] else 0.0
    return float(ratio_)


_TOTALS = (("equity after haircuts (USD)", "adjusted_equity"),
           ("initial margin (USD)", "initial_margin"),
           ("maintenance margin (USD)", "maintenance_margin"),
           ("gross notional (USD)", "gross_notional"))


class _ModelAccounts:
    """One model's accounts as they come, in a bounded memory: the first ``LISTED_ACCOUNTS``
    (book order), the ``LISTED_ACCOUNTS`` nearest liquidation so far (a heap: the highest
    ``liquidation_risk`` first, then the lowest equity less MM, then book order) and what the
    totals need (the summed columns as 8-byte numbers, summed exactly at the end)."""

    def __init__(self) -> None:
        self.count = 0
        self.liquidatable = 0
        self.in_call = 0
        self.first: list[dict[str, Any]] = []
        self.nearest: list[tuple[float, float, int, dict[str, Any]]] = []
        self.columns = {key: array("d") for _, key in _TOTALS}

    def add(self, account: dict[str, Any]) -> None:
        equity, mm = account["adjusted_equity"], account["maintenance_margin"]
        self.liquidatable += equity < mm
        self.in_call += mm <= equity < account["initial_margin"]
        for key, column in self.columns.items():
            column.append(account[key])
        if len(self.first) < LISTED_ACCOUNTS:
            self.first.append(account)
        # nearest first: the highest MM / equity, then the lowest equity less MM, then book order
        entry = (liquidation_risk(account), mm - equity, -self.count, account)
        if len(self.nearest) < LISTED_ACCOUNTS:
            heapq.heappush(self.nearest, entry)
        elif entry[:3] > self.nearest[0][:3]:
            heapq.heapreplace(self.nearest, entry)
        self.count += 1

    def listed(self) -> list[dict[str, Any]]:
        """Every account up to ``LISTED_ACCOUNTS``, else those nearest liquidation."""
        if self.count <= LISTED_ACCOUNTS:
            return self.first
        return [entry[3] for entry in sorted(self.nearest, key=lambda e: e[:3], reverse=True)]


def print_compute(document: dict[str, Any], console: Console | None = None) -> None:
    """One table per margin model (with ``--model account`` each account under its own mode);
    a model of more than ``LISTED_ACCOUNTS`` accounts gets its totals and the accounts
    nearest liquidation instead of every account (the JSON lists them all). The document's
    ``accounts`` may be any iterable, taken once: a book's accounts as they are made."""
    console = _console(console)
    model = document["model"]
    by_mode = model == ModelChoice.ACCOUNT
    own = " (each account under its own mode)" if by_mode else ""
    heading(console, f"Margin in USD at {document['timestamp']}, {model} model{own}")
    groups: dict[str, _ModelAccounts] = {}
    for acc in document["accounts"]:
        groups.setdefault(acc["model"], _ModelAccounts()).add(acc)
    for name, accounts in groups.items():
        if len(groups) > 1 or by_mode:
            console.print(Text(f"{name} model: {accounts.count:,} account"
                               f"{'s' if accounts.count != 1 else ''}", style="bold"))
        listed = accounts.listed()
        if accounts.count > LISTED_ACCOUNTS:
            _print_totals(console, accounts, len(listed))
        fmt = amounts(v for acc in listed for v in (acc["adjusted_equity"],
                                                     acc["initial_margin"], acc["excess"]))
        out = table("account", "equity after\nhaircuts", "initial\nmargin",
                    "maintenance\nmargin", "excess", "MM /\nequity", "efficiency")
        for acc in listed:
            out.add_row(acc["id"], fmt(acc["adjusted_equity"]), fmt(acc["initial_margin"]),
                        fmt(acc["maintenance_margin"]), fmt(acc["excess"]),
                        percent(acc["margin_ratio"]), ratio(acc["efficiency"], "x"))
        console.print(keep_names_whole(out, (acc["id"] for acc in listed)))
    notes(console,
          "equity after haircuts: collateral at its price less haircuts (--explain lists each);",
          "excess = equity after haircuts - IM; MM / equity = maintenance margin / equity after",
          "haircuts; efficiency = gross notional / IM ('-': IM is 0). --json has every figure.")


def _print_totals(console: Console, accounts: _ModelAccounts, listed: int) -> None:
    """A large model's totals (USD sums, accounts liquidatable and in a margin call, as the
    pool health counts them) above its table of the ``listed`` accounts nearest
    liquidation."""
    out = table("all accounts", "value")
    out.add_row("accounts", f"{accounts.count:,}")
    out.add_row("liquidatable (equity after haircuts below MM)", f"{accounts.liquidatable:,}")
    out.add_row("in a margin call (below IM only)", f"{accounts.in_call:,}")
    for label, key in _TOTALS:
        out.add_row(label, f"{math.fsum(accounts.columns[key]):,.0f}")
    console.print(out)
    console.print(Text(f"The {listed:,} nearest liquidation (highest MM / equity first; "
                       f"--json lists all {accounts.count:,}):", style="bold"))


def print_compare(document: dict[str, Any], console: Console | None = None,
                  total: int | None = None) -> None:
    """Initial margin by model, then margin efficiency by model (two tables: side by side they
    would not fit 100 columns); the first ``LISTED_ACCOUNTS`` accounts of a larger book (of
    ``total`` accounts: the document's ``accounts`` may then be any iterable, of which only
    the first ``LISTED_ACCOUNTS`` are taken)."""
    console = _console(console)
    models = list(document["models"])
    accounts = list(islice(document["accounts"], LISTED_ACCOUNTS))
    count = len(document["accounts"]) if total is None else total
    cut = ([f"The first {len(accounts):,} of {count:,} accounts (--json lists all)."]
           if count > len(accounts) else [])
    heading(console, f"Initial margin in USD by model at {document['timestamp']}", *cut)
    fmt = amounts(acc["models"][m]["initial_margin"] for acc in accounts for m in models)
    out = table("account", *models)
    for acc in accounts:
        out.add_row(acc["id"], *[fmt(acc["models"][m]["initial_margin"]) for m in models])
    console.print(out)
    heading(console, "Margin efficiency by model (gross notional / IM; higher: less margin per "
                     "unit of exposure)")
    gross = amounts(next(iter(acc["models"].values()))["gross_notional"] for acc in accounts)
    out = table("account", "gross notional (USD)", *models)
    for acc in accounts:
        first = next(iter(acc["models"].values()))
        out.add_row(acc["id"], gross(first["gross_notional"]),
                    *[ratio(acc["models"][m]["efficiency"], "x") for m in models])
    console.print(out)
    notes(console, "'-': IM is 0 (nothing to margin, or long options only: premium paid). "
                   "--json has MM, excess and", "the breakdown per underlying.")


# ----------------------------------------------------------------------------------- explain

def print_explanation(console: Console, explanation: dict[str, Any]) -> None:
    """One account's explanation: the model's own part (``EXPLANATION_PRINTERS``), then the
    collateral lines, equity, IM and MM."""
    model = explanation["model"]
    console.print(Text.assemble((explanation["account"], "bold"), " under ",
                                (model, "bold"), " (amounts in USD)"))
    EXPLANATION_PRINTERS[ModelChoice(model)](console, explanation)
    for line in explanation.get("collateral", []):
        parts = (f"vol {100 * line['volatility']:.2f} %"
                 f"{' (in scenarios)' if line.get('volatility_in_scenarios') else ''}, "
                 f"liquidity {100 * line['liquidity']:.3f} %, chain {100 * line['chain']:.1f} %"
                 if "volatility" in line else "no haircut")
        console.print(f"  collateral {line['asset']} {line['amount']:g} x {money(line['price'])}"
                      f" = {money(line['value'])}: haircut {100 * line['haircut']:.2f} % "
                      f"-> -{money(line['haircut_usd'])}")
        console.print(f"    ({parts})")
    if "adjusted_equity" in explanation:
        console.print(f"  equity {money(explanation['equity'])}, after haircuts "
                      f"{money(explanation['adjusted_equity'])}")
    console.print(Text(f"  IM {money(explanation['initial_margin'])}, MM "
                       f"{money(explanation['maintenance_margin'])}", style="bold"))


def _print_isolated_explanation(console: Console, explanation: dict[str, Any]) -> None:
    """One row per position: its charges, the margin it holds and its equity."""
    out = table("instrument", "size", "mark", "notional", "rule", "IM", "MM", "margin held",
                "position equity", left=("rule",))
    for p in explanation["positions"]:
        out.add_row(p["instrument"], f"{p['size']:g}", money(p["mark"]), money(p["notional"]),
                    p["rule"], money(p["initial_margin"]), money(p["maintenance_margin"]),
                    money(p.get("margin_held")), money(p.get("position_equity")))
    console.print(out)


def _print_sensitivity_explanation(console: Console, explanation: dict[str, Any]
                                   ) -> None:
    """Per underlying the weighted delta, vega and curvature risk; then the three margins."""
    for u, cell in explanation["underlyings"].items():
        vr = ", ".join(f"{t}d {money(v)}" for t, v in cell["vega_risk_by_tenor"].items() if v)
        cv = ", ".join(f"{t}d {money(v)}" for t, v in cell["curvature_risk_by_tenor"].items()
                       if v)
        console.print(f"  {u}: risk weight {cell['risk_weight']:.2f} %, weighted delta "
                      f"{money(cell['weighted_delta'])}")
        console.print(f"    vega risk by tenor: {vr or '-'}")
        console.print(f"    curvature risk by tenor: {cv or '-'}")
    console.print(f"  delta {money(explanation['delta_margin'])} + vega "
                  f"{money(explanation['vega_margin'])} + curvature "
                  f"{money(explanation['curvature_margin'])}")
    console.print(f"  (theta {explanation['theta']:.3f}, lambda {explanation['lambda']:.3f})")


def _print_var_explanation(console: Console, explanation: dict[str, Any]) -> None:
    """The model's components, one per line."""
    for k, v in explanation.items():
        if k in ("account", "model", "initial_margin", "maintenance_margin", "collateral",
                 "equity", "adjusted_equity"):
            continue
        shown = money(v) if isinstance(v, float) and "day" not in k else str(v)
        console.print(f"  {k.replace('_', ' ')}: {shown}")


def _print_cross_explanation(console: Console, explanation: dict[str, Any]) -> None:
    """Per underlying the netted linear charge against its isolated cap, and options."""
    for u, cell in explanation["underlyings"].items():
        console.print(f"  {u}: net linear notional {money(cell['net_linear_notional'])}, "
                      f"hedged {money(cell['hedged_linear_notional'])}")
        console.print(f"    tiers {money(cell['tiered_on_net'])} + hedge "
                      f"{money(cell['hedge_charge'])}, capped at isolated "
                      f"{money(cell['isolated_cap'])} = {money(cell['linear_initial_margin'])}")
        for p in cell["options"]:
            console.print(f"    option {p['instrument']} x {p['size']:g}: IM "
                          f"{money(p['initial_margin'])}, MM {money(p['maintenance_margin'])}")
        console.print(f"    underlying IM {money(cell['initial_margin'])}, MM "
                      f"{money(cell['maintenance_margin'])}")


def _print_portfolio_explanation(console: Console, explanation: dict[str, Any]) -> None:
    """Per underlying the worst scenario, contingencies and level; then the aggregation."""
    for u, cell in explanation["underlyings"].items():
        w = cell["worst_scenario"]
        console.print(f"  {u}: scan risk {money(cell['scan_risk'])} in the worst scenario: move "
                      f"{100 * w['price_move']:+.0f} %, vol shock {w['vol_shock']:+.2f}")
        console.print(f"    (weight {w['weight']:.3f}, P&L {money(w['pnl'])}); contingency: "
                      f"option {money(cell['option_contingency'])}, linear "
                      f"{money(cell['linear_contingency'])}")
        console.print(f"    level L = {money(cell['level'])}, direction {cell['direction']:+.0f}")
        for p in cell["positions"]:
            console.print(f"    {p['instrument']} x {p['size']:g}: P&L in worst scenario "
                          f"{money(p['pnl_in_worst_scenario'])}")
        if cell["collateral_pnl_in_worst_scenario"]:
            console.print(f"    collateral in {u}: P&L in worst scenario "
                          f"{money(cell['collateral_pnl_in_worst_scenario'])}")
    console.print(f"  sum of L {money(explanation['sum_of_levels'])}, correlated aggregate "
                  f"{money(explanation['aggregated'])}, floor {money(explanation['offset_floor'])}")
    console.print(f"  correlation offset {money(explanation['correlation_offset'])}")
    if explanation.get("stablecoin_depeg"):
        console.print(f"  + stablecoin depeg scenario {money(explanation['stablecoin_depeg'])}")


# The model's own part of an explanation, by the model that made it.
EXPLANATION_PRINTERS: dict[ModelChoice, Callable[[Console, dict[str, Any]], None]] = {
    ModelChoice.ISOLATED: _print_isolated_explanation,
    ModelChoice.CROSS: _print_cross_explanation,
    ModelChoice.PORTFOLIO: _print_portfolio_explanation,
    ModelChoice.SENSITIVITY: _print_sensitivity_explanation,
    ModelChoice.VAR: _print_var_explanation,
}


# --------------------------------------------------------------------------------- liquidation

LIQUIDATION_TOTALS = ("liquidations", "liquidated_notional", "bad_debt", "insurance_fund_used",
                      "adl_count", "socialised_loss")


def liquidation_summary(totals: dict[str, Any],
                        events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(measure with its unit, value) rows of a replay."""
    liquidations = [e for e in events if e["type"] == "liquidation"]
    due = sum(float(e.get("penalty_due", e["penalty"])) for e in liquidations)
    charged = sum(float(e["penalty"]) for e in liquidations)
    accounts = len({e["account"] for e in liquidations})
    rows = [
        ("liquidations (each partial one)", f"{totals['liquidations']:,}"),
        ("accounts liquidated", f"{accounts:,}"),
        ("liquidated notional (USD)", money(totals["liquidated_notional"])),
        ("penalties due (USD, penalty rate x closed notional)", money(due)),
        ("penalties charged (USD, never more than equity left)", money(charged)),
        ("bad debt (USD)", money(totals["bad_debt"])),
        ("insurance fund used (USD)", money(totals["insurance_fund_used"])),
        ("insurance fund at the end (USD)", money(totals["insurance_fund_end"])),
        ("auto-deleveraging closures", f"{totals['adl_count']:,}"),
        ("socialised loss (USD)", money(totals["socialised_loss"])),
        ("bars skipped: oracle sources disagree", f"{totals['flagged_bars_skipped']:,}"),
    ]
    if "settlements" in totals:
        rows.append(("positions settled at expiry", f"{totals['settlements']:,}"))
    return rows


def _event_detail(event: dict[str, Any]) -> str:
    """One event in words, amounts in USD."""
    kind = event["type"]
    if kind == "liquidation":
        closed = "; ".join(f"{c['instrument']} {c['size']:+,.4g} ({money(c['notional'])})"
                           for c in event["closed"])
        due = float(event.get("penalty_due", event["penalty"]))
        charged = float(event["penalty"])
        penalty = f"penalty {money(charged)}"
        if due - charged > 0.005:
            penalty += (f" of {money(due)} due, {money(due - charged)} not collected (equity "
                        "ran out)")
        reached = "" if event.get("target_reached", True) else "; IM not restored"
        return f"closed {closed}; {penalty}; equity after {money(event['equity_after'])}{reached}"
    if kind == "bad_debt":
        return (f"shortfall {money(event['shortfall'])}, insurance fund paid "
                f"{money(event['insurance_fund'])}")
    if kind == "adl":
        return (f"for {event['for']}: {money(event['amount'])}, "
                f"{100 * event['fraction_closed']:.1f} % of the position closed")
    if kind == "socialised_loss":
        return f"{money(event['amount'])} shared by {event['payers']:,} accounts"
    if kind == "unpaid_shortfall":
        return f"{money(event['amount'])} unpaid: no account with positive equity"
    if kind.startswith("breaker_"):
        return (f"MM x {event['multiplier']:.2f} (price moved {100 * event['velocity']:.2f} % "
                "over the latency window)")
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in event.items()
                     if k not in ("time", "type", "account"))


def print_liquidation(totals: dict[str, Any], events: list[dict[str, Any]], shown: int = 30,
                      console: Console | None = None,
                      book_start: str | None = None) -> None:
    console = _console(console)
    accounts = f"; {totals['accounts']:,} accounts" if "accounts" in totals else ""
    heading(console, f"Liquidation replay, {totals['start']} to {totals['end']}",
            f"{totals['bars']:,} bars of {duration(totals['bar_seconds'])}; latency "
            f"{duration(totals['latency_seconds'])}; circuit breaker {totals['breaker']}"
            f"{accounts}")
    out = table("measure", "value")
    for label, value in liquidation_summary(totals, events):
        out.add_row(label, value)
    console.print(out)
    settlements = [e for e in events if e["type"] == "settlement"]
    if settlements:
        start = f" ({book_start})" if book_start else ""
        heading(console, "Expiries passed: positions settled on the way",
                f"The book's clock is the market's time{start} plus the elapsed path time; "
                "a dated",
                "instrument is settled at its expiry (08:00 UTC) at the moved index and its "
                "P&L realised.")
        by_expiry: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for e in settlements:
            by_expiry.setdefault((e["book_time"], e["time"]), []).append(e)
        out = table("book time", "path time", "positions", "settlement P&L (USD)",
                    "instruments", left=("instruments",))
        for (book_time, path_time), group in by_expiry.items():
            names = sorted({e["instrument"] for e in group})
            out.add_row(book_time, path_time, f"{len(group):,}",
                        money(sum(float(e["pnl"]) for e in group)), ", ".join(names))
        console.print(out)
    others = [e for e in events if e["type"] != "settlement"]
    if others:
        count = f"{len(others):,}" + (f", the first {shown} shown" if len(others) > shown else "")
        heading(console, f"Events ({count}; amounts in USD)")
        out = table("time", "account", "event", "detail", left=("account", "event", "detail"))
        for event in others[:shown]:
            out.add_row(event["time"], str(event.get("account", "-")),
                        event["type"].replace("_", " "), _event_detail(event))
        console.print(out)
        if len(others) > shown:
            notes(console, f"... {len(others) - shown:,} more events (--json lists them all)")
    elif not settlements:
        notes(console, "No account fell below its maintenance margin on this path.")


# ------------------------------------------------------------------------------ crash studies

def print_crash_study(crashes: list[dict[str, Any]], depeg: dict[str, Any],
                      console: Console | None = None) -> None:
    console = _console(console)
    first = crashes[0]
    heading(console, f"Crash replays on {first['accounts']:,} seeded leveraged accounts",
            f"latency {duration(first['latency_seconds'])}; each window with the circuit "
            "breaker off, then on")
    columns = [row["window"].replace(" (", "\n(").replace(")", " bars)")
               + f"\nbreaker {row['breaker']}" for row in crashes]
    out = table("measure", *columns)
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("liquidations (each partial one)", lambda r: f"{r['liquidations']:,}"),
        ("accounts liquidated", lambda r: f"{r['accounts_liquidated']:,}"
         if "accounts_liquidated" in r else "-"),
        ("liquidated notional (USD)", lambda r: f"{r['liquidated_notional']:,.0f}"),
        ("bad debt (USD)", lambda r: f"{r['bad_debt']:,.0f}"),
        ("insurance fund used (USD)", lambda r: f"{r['insurance_fund_used']:,.0f}"),
        ("auto-deleveraging closures", lambda r: f"{r['adl_count']:,}"),
        ("socialised loss (USD)", lambda r: f"{r['socialised_loss']:,.0f}"),
        ("bars skipped (oracles disagree)", lambda r: f"{r['flagged_bars_skipped']:,}"),
    ]
    for label, cell in rows:
        out.add_row(label, *[cell(r) for r in crashes])
    console.print(keep_names_whole(out, (label for label, _ in rows)))
    notes(console,
          "With the breaker on, MM is multiplied (up to 2x) while the price moves faster over "
          "the latency",
          "window than MM can absorb: accounts are liquidated earlier, while their equity "
          "still covers the",
          "loss, and again while the multiplier stays up: more partial liquidations of about "
          "the same",
          "accounts, and less bad debt.")
    heading(console, f"USDC depeg, {depeg['window']}",
            f"{depeg['accounts']:,} USDC-collateralised BTC perp accounts; USDC low "
            f"{depeg['usdc_low']:.4f} at {depeg['usdc_low_at']};",
            f"{depeg['depeg_minutes']:,} minutes below {depeg['depeg_threshold']}"
            + (f"; {depeg['minutes_above_1']:,} minutes above 1.0 (high "
               f"{depeg['usdc_high']:.4f})" if "minutes_above_1" in depeg else ""))
    out = table("accounts with equity < MM", "USDC at oracle price", "USDC fixed at 1.0",
                "only at oracle", "only at 1.0")
    for key, label in (("at_low", "at the USDC low"), ("during_depeg", "during the depeg"),
                       ("whole_window", "over the whole window")):
        cell = depeg[key]
        out.add_row(label, f"{cell['oracle']:,}", f"{cell['fixed_1']:,}",
                    f"{cell['oracle_only']:,}" if "oracle_only" in cell else "-",
                    f"{cell['fixed_only']:,}" if "fixed_only" in cell else "-")
    console.print(out)
    notes(console,
          "The oracle price (Binance.US BTCUSD / BTCUSDC) is also above 1.0 on many minutes; "
          "there USDC",
          "is worth more than at a fixed 1.0, so an account close to MM can be below it only at "
          "1.0 ('only at",
          "1.0'). Below 1.0 the oracle price always gives at least the breaches of the fixed "
          "price.")


# ---------------------------------------------------------------------------------- backtests

def print_backtest(summary: dict[str, Any], console: Console | None = None) -> None:
    from margin_engine.backtest.reading import statistics_rows, verdict

    console = _console(console)
    heading(console, f"Backtest of {summary['method']}, {summary['first'][:10]} to "
                     f"{summary['last'][:10]}",
            f"confidence {summary['confidence']:.1%}, margin period of risk "
            f"{summary['mpor_days']} day{'s' if summary['mpor_days'] != 1 else ''}")
    for line in verdict(summary):
        console.print(Text(line))
    out = table("statistic", "value", "meaning", left=("meaning",))
    for stat, value in statistics_rows(summary):
        out.add_row(stat.label, value, stat.meaning)
    console.print(out)
    settled = summary.get("settled_instruments")
    if settled:
        notes(console, f"Already settled at the market's time (held at 0): {', '.join(settled)}")


def _coverage_word(row: dict[str, Any]) -> str:
    from margin_engine.backtest.reading import SIGNIFICANCE

    if row["kupiec_p"] >= SIGNIFICANCE:
        return "consistent"
    return "conservative" if row["exceptions"] < row["expected_exceptions"] else "aggressive"


def _method_label(method: str) -> str:
    return method.replace("predictive:", "").replace("implied's days", "implied days")


def print_backtest_study(result: dict[str, Any], console: Console | None = None) -> None:
    from margin_engine.backtest.reading import p_value

    console = _console(console)
    heading(console, f"Full history at 99 % / 1 day, a 1-coin long perpetual (z {result['z']})",
            "coverage: conservative = fewer exceptions than expected, aggressive = more "
            "(Kupiec p-value",
            "< 0.05), else consistent; zone: Basel traffic light (it counts only too many "
            "exceptions)")
    rows = result["full_history"]
    for history in dict.fromkeys(row["history"] for row in rows):
        console.print(Text(history, style="bold"))
        out = table("method", "days", "exceptions", "expected", "Kupiec p", "coverage", "zone",
                    "margin\nrate", "5-day rate\nrise", left=("coverage", "zone"))
        mine = [row for row in rows if row["history"] == history]
        for k, row in enumerate(mine):
            last_model = (not row["method"].startswith("predictive:") and k + 1 < len(mine)
                          and mine[k + 1]["method"].startswith("predictive:"))
            if "error" in row:
                out.add_row(_method_label(row["method"]), "-", "-", "-", "-",
                            str(row["error"])[:40], "-", "-", "-", end_section=last_model)
                continue
            rise = 100 * row["max_5d_rate_increase"]
            out.add_row(_method_label(row["method"]), f"{row['observations']:,}",
                        f"{row['exceptions']:,}", f"{row['expected_exceptions']:.1f}",
                        p_value(row["kupiec_p"]), _coverage_word(row), row["traffic_light"],
                        f"{100 * row['mean_margin_rate']:.1f} %",
                        f"{0.0 if abs(rise) < 0.05 else rise:,.1f} %", end_section=last_model)
        console.print(keep_names_whole(out, (_method_label(r["method"]) for r in mine)))
    notes(console, "Above the line: margin models; below: forecasters (a predictive margin from "
                   "a volatility forecast).", "margin rate: mean margin / notional; 5-day rate "
                   "rise: largest rise of that rate over 5 days.")
    windows = result["crash_windows"]
    methods = list(dict.fromkeys(w["method"] for w in windows))
    heading(console, "Crash windows (30 days either side): exceptions / days")
    for chosen, label in (([m for m in methods if not m.startswith("predictive:")],
                           "margin models"),
                          ([m for m in methods if m.startswith("predictive:")], "forecasters")):
        if not chosen:
            continue
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for w in windows:
            if w["method"] in chosen:
                cells.setdefault((w["history"], w["window"]), {})[w["method"]] = \
                    f"{w['exceptions']}/{w['observations']}"
        console.print(Text(label, style="bold"))
        out = table("history", "window", *[_method_label(m) for m in chosen], left=("window",))
        for (history, window), values in cells.items():
            out.add_row(history, window, *[values.get(m, "-") for m in chosen])
        console.print(keep_names_whole(out, (history for history, _ in cells)))
    notes(console, "'-': no margin that day (a forecaster still warming up, or the history does "
                   "not cover the window).")
