"""Backtest output: JSON summary and an HTML page with PNG charts (price, margin and loss with
exceptions marked)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from margin_engine.backtest.engine import BacktestResult


def write_report(result: BacktestResult, output: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    dates = np.array(result.days, dtype="datetime64[D]")
    hits = result.loss > result.margin
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), dpi=100, sharex=True)
    top.plot(dates, result.price, lw=1, color="black")
    top.set_ylabel("price (first underlying)")
    top.set_yscale("log")
    top.grid(alpha=0.3)
    bottom.plot(dates, result.margin, lw=1, label="initial margin")
    bottom.plot(dates, result.loss, lw=0.6, alpha=0.6, label="loss over the MPOR")
    bottom.scatter(dates[hits], result.loss[hits], color="red", s=14, zorder=3,
                   label=f"exceptions ({int(hits.sum())})")
    bottom.set_ylabel("USD")
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    chart = output / "backtest.png"
    fig.savefig(chart)
    plt.close(fig)
    (output / "backtest.json").write_text(json.dumps(result.summary, indent=2))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in result.summary.items())
    page = output / "backtest.html"
    page.write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}table{{border-collapse:collapse}}
</style></head><body><h1>{html.escape(title)}</h1><img src="backtest.png" width="1000"
alt="price, margin and loss"><table>{rows}</table></body></html>
""")
    return page


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)
