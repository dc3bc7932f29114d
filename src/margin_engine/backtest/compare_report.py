"""HTML report of ``backtest --compare``: per history the forecasters' table on common dates and
the verdict against ``ewma``; around each crash day the margin-rate paths of every forecaster
(PNG, 30 days either side) and their anticipation."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.backtest.compare import Comparison


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Header and cells of a comparison's table (shared by the HTML page and the console)."""
    table = [["side", "method", "obs", "exc.", "expected", "Kupiec p", "Christoffersen p",
              "zone", "mean rate %", "worst shortfall", "max 5-day rise", "APC cost",
              "anticipation"]]
    for row in rows:
        ratios = [a["ratio"] for a in row.get("anticipation", []) if a.get("ratio") is not None]
        table.append([
            str(row["side"]), str(row["method"]), str(row["observations"]),
            str(row["exceptions"]), f"{row['expected_exceptions']:.1f}",
            f"{row['kupiec_p']:.3f}", f"{row['christoffersen_p']:.3f}",
            str(row["traffic_light"]), f"{100 * row['mean_margin_rate']:.2f}",
            f"{row['worst_shortfall']:,.0f}", f"{100 * row['max_5d_rate_increase']:+.0f} %",
            "-" if row.get("apc_cost") is None else f"{100 * row['apc_cost']:+.1f} %",
            "-" if not ratios else f"{float(np.mean(ratios)):.2f}"])
    return table


def write_comparison_report(document: Mapping[str, Any], comparisons: Sequence[Comparison],
                            output: Path, crash_days: Sequence[str] = ()) -> Path:
    """compare.json and compare.html: per history the table on common dates and the verdict;
    per crash day the margin-rate paths of every forecaster 30 days either side (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    (output / "compare.json").write_text(json.dumps(document, indent=2, allow_nan=False))
    parts = [f"<h1>Forecasters on common dates ({document.get('confidence', 0.99):.0%}, "
             f"{document.get('mpor_days', 1)} d)</h1>"]
    for comparison in comparisons:
        parts.append(f"<h2>{html.escape(comparison.label)}</h2><p>common dates "
                     f"{comparison.first[:10]} to {comparison.last[:10]}, {comparison.days} "
                     "days</p>" + _html_table(comparison_table(comparison.rows)))
        parts.extend(f"<p>{html.escape(e['method'])}: {html.escape(e['error'])}</p>"
                     for e in comparison.errors)
        parts.extend(verdict_lines(comparison))
    day_ns = 86_400 * 10**9
    for crash in crash_days:
        centre = np.datetime64(crash, "D").astype("datetime64[ns]").astype(np.int64)
        for comparison in comparisons:
            long = {m: r for (s, m), r in comparison.results.items() if s == "long"
                    and "no APC" not in m}
            if not long or not any(abs(r.days_ns - centre).min() <= day_ns for r in long.values()
                                   if r.days_ns.size):
                continue
            fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), dpi=100, sharex=True,
                                              gridspec_kw={"height_ratios": [3, 1]})
            move = None
            for method, result in long.items():
                keep = np.abs(result.days_ns - centre) <= 30 * day_ns
                if not keep.any():
                    continue
                # both drawn on the day the move ends: the rate set at the close before it
                days = (result.days_ns[keep] + day_ns).astype("datetime64[ns]")
                top.plot(days, 100 * result.margin[keep] / result.gross[keep], lw=1.2,
                         label=method)
                move = (days, -100 * result.loss[keep] / result.gross[keep])
            if move is not None:
                bottom.bar(move[0], move[1], width=0.8, color="grey")
            top.set_ylabel("rate in force over the day, %")
            top.grid(alpha=0.3)
            top.legend(fontsize=8, loc="upper left")
            bottom.set_ylabel("the day's move, %")
            bottom.grid(alpha=0.3)
            title = f"{comparison.label}: {crash}"
            fig.suptitle(title)
            fig.tight_layout()
            name = f"crash_{crash}_{_slug(comparison.label)}.png"
            fig.savefig(output / name)
            plt.close(fig)
            parts.append(f"<h2>{html.escape(title)}</h2><img src=\"{name}\" width=\"1000\" "
                         f"alt=\"margin rate paths around {crash}\">")
    for crash in document.get("crash_windows", []):
        table = [["method", "move day", "move", "rate in force", "30-day mean before", "ratio",
                  "rate after"]]
        table.extend([row["method"], row["move_day"], f"{100 * row['book_return']:+.2f} %",
                      f"{100 * row['rate']:.2f} %", _pct(row["prior_mean_rate"]),
                      "-" if row["ratio"] is None else f"{row['ratio']:.2f}",
                      _pct(row["next_rate"])] for row in crash["rows"])
        parts.append(f"<h3>Anticipation, {html.escape(crash['history'])}, "
                     f"{html.escape(crash['crash'])}</h3>" + _html_table(table))
    page = output / "compare.html"
    page.write_text("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                    "<title>Forecaster comparison</title><style>body{font-family:sans-serif;"
                    "margin:2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
                    "table{border-collapse:collapse}</style></head><body>"
                    + "".join(parts) + "</body></html>\n")
    return page


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def _html_table(rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def verdict_lines(comparison: Comparison) -> list[str]:
    lines = []
    for method, verdict in (comparison.verdict or {}).items():
        checks = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in verdict["checks"].items())
        lines.append(f"<p><b>{html.escape(method)} vs ewma</b>: exceptions "
                     f"{verdict['exceptions']} vs {verdict['ewma_exceptions']} (expected "
                     f"{verdict['expected_exceptions']:.1f}), margin x"
                     f"{verdict['margin_ratio']:.3f} (ewma would need x"
                     f"{verdict['ewma_hindsight_ratio'] or float('nan'):.2f} chosen with "
                     "hindsight); "
                     f"{html.escape(checks)}</p>")
    return lines


def print_comparisons(document: Mapping[str, Any], comparisons: Sequence[Comparison]) -> None:
    """Rich tables on stdout: one per history, the verdicts, the crash-day anticipation."""
    from rich.table import Table

    from margin_engine.cli.console import make_console

    console = make_console()
    for comparison in comparisons:
        cells = comparison_table(comparison.rows)
        table = Table(title=f"{comparison.label}: common dates {comparison.first[:10]} to "
                      f"{comparison.last[:10]} ({comparison.days} days)", title_justify="left")
        for k, name in enumerate(cells[0]):
            table.add_column(name, justify="left" if k < 2 or name == "zone" else "right")
        for row in cells[1:]:
            table.add_row(*row)
        console.print(table)
        for error in comparison.errors:
            console.print(f"{error['method']}: {error['error']}")
        for method, verdict in (comparison.verdict or {}).items():
            failed = [k for k, ok in verdict["checks"].items() if not ok]
            console.print(f"{method} vs ewma: exceptions {verdict['exceptions']} vs "
                          f"{verdict['ewma_exceptions']} (expected "
                          f"{verdict['expected_exceptions']:.1f}), margin x"
                          f"{verdict['margin_ratio']:.3f}, 5-day rise "
                          f"{100 * verdict['max_5d_rate_increase']:+.0f} % vs "
                          f"{100 * verdict['ewma_max_5d_rate_increase']:+.0f} %: "
                          + ("all acceptance points hold" if not failed else
                             "does not meet " + ", ".join(failed)))
    for crash in document.get("crash_windows", []):
        table = Table(title=f"{crash['history']}, {crash['crash']}: rate in force over the "
                      "largest move / its 30-day mean before", title_justify="left")
        for name in ("method", "move", "rate", "30-day mean", "ratio", "rate after"):
            table.add_column(name, justify="left" if name == "method" else "right")
        for row in crash["rows"]:
            table.add_row(row["method"], f"{100 * row['book_return']:+.2f} %",
                          f"{100 * row['rate']:.2f} %", _pct(row["prior_mean_rate"]),
                          "-" if row["ratio"] is None else f"{row['ratio']:.2f}",
                          _pct(row["next_rate"]))
        console.print(table)
