"""Backtest output: JSON summary and an HTML page with PNG charts (price, margin and loss with
exceptions marked)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from margin_engine.backtest.engine import BacktestResult
from margin_engine.backtest.reading import statistics_rows, verdict


def write_report(result: BacktestResult, output: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    dates = np.array(result.days, dtype="datetime64[D]")
    hits = result.loss > result.margin
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), dpi=100, sharex=True)
    top.plot(dates, result.price, lw=1, color="black")
    top.set_ylabel("price, USD (first underlying, log scale)")
    top.set_yscale("log")
    # labelled at 1, 2, 3 and 5 x 10^k (a log axis spanning < 10x has one label or none)
    top.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    top.yaxis.set_minor_formatter(NullFormatter())
    top.grid(alpha=0.3)
    bottom.plot(dates, result.margin, lw=1, label="initial margin")
    bottom.plot(dates, result.loss, lw=0.6, alpha=0.6,
                label="loss over the MPOR (below 0: a gain)")
    bottom.scatter(dates[hits], result.loss[hits], color="red", s=14, zorder=3,
                   label=f"exceptions ({int(hits.sum())})")
    bottom.set_ylabel("USD")
    bottom.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    chart = output / "backtest.png"
    fig.savefig(chart)
    plt.close(fig)
    (output / "backtest.json").write_text(json.dumps(result.summary, indent=2))
    summary = result.summary
    rows = "".join(f"<tr><th>{html.escape(stat.label)}</th><td class=n>{html.escape(value)}"
                   f"</td><td>{html.escape(stat.meaning)}</td></tr>"
                   for stat, value in statistics_rows(summary))
    words = "".join(f"<p>{html.escape(line)}</p>" for line in verdict(summary))
    scope = html.escape(f"{summary['method']}, {summary['first'][:10]} to "
                        f"{summary['last'][:10]}, confidence {summary['confidence']:.1%}, margin "
                        f"period of risk {summary['mpor_days']} d")
    page = output / "backtest.html"
    page.write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}table{{border-collapse:collapse}}
td.n{{text-align:right;white-space:nowrap}}p{{max-width:60em}}
</style></head><body><h1>{html.escape(title)}</h1><p>{scope}</p>{words}
<img src="backtest.png" width="1000" alt="price, margin and loss over the MPOR, exceptions">
<table><tr><th>statistic</th><th>value</th><th>meaning</th></tr>{rows}</table></body></html>
""")
    return page
