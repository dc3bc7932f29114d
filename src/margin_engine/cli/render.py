"""Rich tables for people; the JSON documents are built in margin.run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def ratio(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.2f}{suffix}"


def compute_table(document: dict[str, Any]) -> Table:
    title = f"Margin ({document['model']} model) at {document['timestamp']}"
    table = Table(title=title, title_justify="left",
                  caption="excess and MM/equity use the equity after collateral haircuts")
    for name in ("account", "model", "equity", "after haircuts", "initial margin",
                 "maintenance", "excess", "MM/equity", "gross notional", "efficiency"):
        table.add_column(name, justify="left" if name in ("account", "model") else "right")
    for acc in document["accounts"]:
        table.add_row(acc["id"], acc["model"], money(acc["equity"]),
                      money(acc["adjusted_equity"]), money(acc["initial_margin"]),
                      money(acc["maintenance_margin"]), money(acc["excess"]),
                      ratio(None if acc["margin_ratio"] is None else 100 * acc["margin_ratio"],
                            " %"),
                      money(acc["gross_notional"]), ratio(acc["efficiency"], "x"))
    return table


def compare_table(document: dict[str, Any]) -> Table:
    table = Table(title=f"Initial margin and efficiency by model at {document['timestamp']}",
                  title_justify="left")
    table.add_column("account")
    table.add_column("gross notional", justify="right")
    for model in document["models"]:
        table.add_column(f"{model} IM", justify="right")
        table.add_column("eff.", justify="right")
    for acc in document["accounts"]:
        first = next(iter(acc["models"].values()))
        row = [acc["id"], money(first["gross_notional"])]
        for model in document["models"]:
            summary = acc["models"][model]
            row += [money(summary["initial_margin"]), ratio(summary["efficiency"], "x")]
        table.add_row(*row)
    return table


def print_explanation(console: Console, explanation: dict[str, Any]) -> None:
    model = explanation["model"]
    console.print(f"[bold]{explanation['account']}[/bold] under [bold]{model}[/bold]")
    if model == "isolated":
        table = Table()
        for name in ("instrument", "size", "mark", "notional", "rule", "IM", "MM",
                     "margin held", "position equity"):
            table.add_column(name, justify="left" if name in ("instrument", "rule") else "right")
        for p in explanation["positions"]:
            table.add_row(p["instrument"], f"{p['size']:g}", money(p["mark"]), money(p["notional"]),
                          p["rule"], money(p["initial_margin"]), money(p["maintenance_margin"]),
                          money(p.get("margin_held")), money(p.get("position_equity")))
        console.print(table)
    elif model == "sensitivity":
        for u, cell in explanation["underlyings"].items():
            vr = ", ".join(f"{t}d {money(v)}" for t, v in cell["vega_risk_by_tenor"].items()
                           if v)
            cv = ", ".join(f"{t}d {money(v)}" for t, v in cell["curvature_risk_by_tenor"].items()
                           if v)
            console.print(f"  {u}: risk weight {cell['risk_weight']:.2f} %, weighted delta "
                          f"{money(cell['weighted_delta'])}; vega risk [{vr or '-'}]; "
                          f"curvature risk [{cv or '-'}]")
        console.print(f"  delta {money(explanation['delta_margin'])} + vega "
                      f"{money(explanation['vega_margin'])} + curvature "
                      f"{money(explanation['curvature_margin'])} (theta "
                      f"{explanation['theta']:.3f}, lambda {explanation['lambda']:.3f})")
    elif model == "var":
        parts = ", ".join(f"{k} {money(v) if 'day' not in k else v}"
                          for k, v in explanation.items()
                          if k not in ("account", "model", "initial_margin",
                                       "maintenance_margin"))
        console.print(f"  {parts}")
    elif model == "cross":
        for u, cell in explanation["underlyings"].items():
            console.print(
                f"  {u}: net linear notional {money(cell['net_linear_notional'])}, hedged "
                f"{money(cell['hedged_linear_notional'])} -> tiers {money(cell['tiered_on_net'])}"
                f" + hedge {money(cell['hedge_charge'])}, capped at isolated "
                f"{money(cell['isolated_cap'])} = {money(cell['linear_initial_margin'])}")
            for p in cell["options"]:
                console.print(f"    option {p['instrument']} x {p['size']:g}: IM "
                              f"{money(p['initial_margin'])}, MM {money(p['maintenance_margin'])}")
            console.print(f"    underlying IM {money(cell['initial_margin'])}, MM "
                          f"{money(cell['maintenance_margin'])}")
    else:
        for u, cell in explanation["underlyings"].items():
            w = cell["worst_scenario"]
            console.print(
                f"  {u}: scan risk {money(cell['scan_risk'])} in scenario move "
                f"{100 * w['price_move']:+.0f} % / vol shock {w['vol_shock']:+.2f} (weight "
                f"{w['weight']:.3f}, P&L {money(w['pnl'])}); option contingency "
                f"{money(cell['option_contingency'])}, linear contingency "
                f"{money(cell['linear_contingency'])}; L = {money(cell['level'])}, direction "
                f"{cell['direction']:+.0f}")
            for p in cell["positions"]:
                console.print(f"    {p['instrument']} x {p['size']:g}: P&L in worst scenario "
                              f"{money(p['pnl_in_worst_scenario'])}")
            if cell["collateral_pnl_in_worst_scenario"]:
                console.print(f"    collateral in {u}: P&L in worst scenario "
                              f"{money(cell['collateral_pnl_in_worst_scenario'])}")
        console.print(
            f"  sum of L {money(explanation['sum_of_levels'])}, correlated aggregate "
            f"{money(explanation['aggregated'])}, floor {money(explanation['offset_floor'])}, "
            f"correlation offset {money(explanation['correlation_offset'])}")
        if explanation.get("stablecoin_depeg"):
            console.print(f"  + stablecoin depeg scenario "
                          f"{money(explanation['stablecoin_depeg'])}")
    for line in explanation.get("collateral", []):
        parts = (f"vol {100 * line['volatility']:.2f} %"
                 f"{' (in scenarios)' if line.get('volatility_in_scenarios') else ''}, "
                 f"liquidity {100 * line['liquidity']:.3f} %, chain {100 * line['chain']:.1f} %"
                 if "volatility" in line else "no haircut")
        console.print(f"  collateral {line['asset']} {line['amount']:g} x {money(line['price'])}"
                      f" = {money(line['value'])}: haircut {100 * line['haircut']:.2f} % "
                      f"({parts}) -> -{money(line['haircut_usd'])}")
    if "adjusted_equity" in explanation:
        console.print(f"  equity {money(explanation['equity'])}, after haircuts "
                      f"{money(explanation['adjusted_equity'])}")
    console.print(f"  [bold]IM {money(explanation['initial_margin'])}, MM "
                  f"{money(explanation['maintenance_margin'])}[/bold]")


LIQUIDATION_TOTALS = ("liquidations", "liquidated_notional", "bad_debt", "insurance_fund_used",
                      "adl_count", "socialised_loss")


def print_liquidation(totals: dict[str, Any], events: list[dict[str, Any]],
                      shown: int = 30) -> None:
    from margin_engine.cli.console import make_console

    console = make_console()
    table = Table(title=f"Liquidation replay {totals['start']} to {totals['end']} "
                  f"({totals['bars']} bars of {totals['bar_seconds']:g} s, latency "
                  f"{totals['latency_seconds']:g} s, breaker {totals['breaker']})",
                  title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in (*LIQUIDATION_TOTALS, "insurance_fund_end", "flagged_bars_skipped"):
        value = totals[key]
        table.add_row(key, money(value) if isinstance(value, float) else str(value))
    console.print(table)
    for event in events[:shown]:
        detail = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "type"))
        console.print(f"  {event['time']} {event['type']}: {detail[:160]}")
    if len(events) > shown:
        console.print(f"  ... {len(events) - shown} more events (--json lists them all)")


def print_crash_study(crashes: list[dict[str, Any]], depeg: dict[str, Any]) -> None:
    from margin_engine.cli.console import make_console

    console = make_console()
    table = Table(title=f"Crash replays on {crashes[0]['accounts']} seeded leveraged accounts "
                  f"(latency {crashes[0]['latency_seconds']:g} s)", title_justify="left")
    for name in ("window", "breaker", "liquidations", "liquidated notional", "bad debt",
                 "fund used", "ADL", "socialised", "flagged bars"):
        table.add_column(name, justify="left" if name in ("window", "breaker") else "right")
    for row in crashes:
        table.add_row(row["window"], row["breaker"], str(row["liquidations"]),
                      money(row["liquidated_notional"]), money(row["bad_debt"]),
                      money(row["insurance_fund_used"]), str(row["adl_count"]),
                      money(row["socialised_loss"]), str(row["flagged_bars_skipped"]))
    console.print(table)
    table = Table(title=f"USDC depeg {depeg['window']}: {depeg['accounts']} USDC-collateralised "
                  f"BTC perp accounts; USDC low {depeg['usdc_low']:.4f} at "
                  f"{depeg['usdc_low_at']}; {depeg['depeg_minutes']} minutes below "
                  f"{depeg['depeg_threshold']}", title_justify="left")
    for name in ("accounts with equity < MM", "USDC at oracle price", "USDC fixed at 1.0"):
        table.add_column(name, justify="left" if name.startswith("accounts") else "right")
    for key, label in (("at_low", "at the USDC low"), ("during_depeg", "during the depeg"),
                       ("whole_window", "over the whole window")):
        table.add_row(label, str(depeg[key]["oracle"]), str(depeg[key]["fixed_1"]))
    console.print(table)


BACKTEST_KEYS = ("observations", "exceptions", "expected_exceptions", "kupiec_lr", "kupiec_p",
                 "christoffersen_p", "traffic_light", "mean_margin", "median_margin",
                 "max_1d_increase", "max_5d_increase", "mean_shortfall", "worst_shortfall")


def print_backtest(summary: dict[str, Any]) -> None:
    from margin_engine.cli.console import make_console

    table = Table(title=f"Backtest {summary['method']} {summary['first'][:10]} to "
                  f"{summary['last'][:10]} ({summary['confidence']:.1%}, "
                  f"{summary['mpor_days']} d MPOR)", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in (*BACKTEST_KEYS, "mean_margin_rate", "max_5d_rate_increase", "peak_to_trough"):
        value = summary[key]
        table.add_row(key, f"{value:,.4g}" if isinstance(value, float) else str(value))
    make_console().print(table)


def print_backtest_study(result: dict[str, Any]) -> None:
    from margin_engine.cli.console import make_console

    console = make_console()
    table = Table(title=f"Full history, 99 % / 1 day, 1-coin long perp (z {result['z']})",
                  title_justify="left")
    for name in ("history", "method", "obs", "exceptions", "expected", "Kupiec p", "zone",
                 "mean margin %", "max 5-day rate increase"):
        table.add_column(name, justify="left" if name in ("history", "method", "zone")
                         else "right")
    for row in result["full_history"]:
        if "error" in row:
            table.add_row(row["history"], row["method"], "-", "-", "-", "-", "-", "-", "-")
            continue
        table.add_row(row["history"], row["method"], str(row["observations"]),
                      str(row["exceptions"]), f"{row['expected_exceptions']:.1f}",
                      f"{row['kupiec_p']:.3f}", row["traffic_light"],
                      f"{100 * row['mean_margin_rate']:.2f}",
                      f"{row['max_5d_rate_increase']:.2f}")
    console.print(table)
    crash = Table(title="Crash windows (30 days either side): exceptions / observations",
                  title_justify="left")
    crash.add_column("history / window")
    methods = list(dict.fromkeys(w["method"] for w in result["crash_windows"]))
    for m in methods:
        crash.add_column(m.replace("predictive:", ""), justify="right")
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for w in result["crash_windows"]:
        cells.setdefault((w["history"], w["window"]), {})[w["method"]] = \
            f"{w['exceptions']}/{w['observations']}"
    for (history, window), values in cells.items():
        crash.add_row(f"{history} {window}", *[values.get(m, "-") for m in methods])
    console.print(crash)
