"""`margin-engine report`: an HTML page with PNG charts of margin efficiency per strategy under
every model (the var model joins when history is given), and the pairwise agreement of the
sensitivity and var models with the portfolio model on which book is riskier."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.app.compute import ModelChoice
from margin_engine.book.bound import bind_market
from margin_engine.book.columnar import book_from_portfolio
from margin_engine.demo.canonical import canonical_portfolio
from margin_engine.demo.market import demo_market_document
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.margin.agreement import pairwise_agreement
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.protocol import MarginModel
from margin_engine.margin.registry import every_model_name
from margin_engine.margin.run import efficiency, run_models

# The portfolio model is the benchmark the risk-based models' ranking of books is compared with.
BENCHMARK = ModelChoice.PORTFOLIO
AGREEMENT_MODELS = (ModelChoice.SENSITIVITY, ModelChoice.VAR)


def build_report(output: Path, built: dict[str, MarginModel],
                 config: RiskConfig | None = None) -> dict[str, Any]:
    config = config or RiskConfig()
    bound = bind_market(book_from_portfolio(parse_portfolio(canonical_portfolio())),
                        parse_market(demo_market_document()))
    models = every_model_name(built)
    run = run_models(bound, config, models, built)
    names = list(bound.book.account_ids)
    table = {name: {m: {"initial_margin": float(run.results[m].initial_margin[k]),
                        "efficiency": _finite(efficiency(run, m)[k])} for m in models}
             for k, name in enumerate(names)}
    agreement = {m.value: pairwise_agreement(names, run.results[BENCHMARK].initial_margin,
                                             run.results[m].initial_margin)
                 for m in AGREEMENT_MODELS if m in run.results}
    output.mkdir(parents=True, exist_ok=True)
    _bars(table, models, "efficiency", "margin efficiency = gross notional / IM (log scale)",
          output / "efficiency.png", log=True)
    _bars(table, models, "initial_margin", "initial margin, USD", output / "initial_margin.png")
    document = {"strategies": table, "models": models, "agreement": agreement,
                "gross_notional": {n: float(run.gross_notional[k]) for k, n in enumerate(names)}}
    (output / "report.json").write_text(json.dumps(document, indent=2))
    (output / "report.html").write_text(_html(document))
    return document


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _bars(table: dict[str, Any], models: list[str], key: str, label: str, path: Path,
          log: bool = False) -> None:
    from margin_engine.demo.run import strategy_bars

    names = list(table)
    what = label.split(",")[0].split("=")[0].strip()
    strategy_bars(names, models, {m: [table[n][m][key] for n in names] for m in models}, path,
                  log=log, title=f"{what[0].upper()}{what[1:]} by strategy and model",
                  xlabel=label)


def _eff(cell: dict[str, Any]) -> str:
    value = cell["efficiency"]
    return "-" if value is None else f"{value:.1f}x"


def _html(document: dict[str, Any]) -> str:
    models = document["models"]
    head = "".join(f"<th>{html.escape(m)} IM (USD)</th><th>eff.</th>" for m in models)
    rows = []
    for name, cells in document["strategies"].items():
        tds = "".join(f"<td>{cells[m]['initial_margin']:,.0f}</td><td>{_eff(cells[m])}</td>"
                      for m in models)
        rows.append(f"<tr><th>{html.escape(name)}</th>"
                    f"<td>{document['gross_notional'][name]:,.0f}</td>{tds}</tr>")
    agreement = "".join(
        f"<li><b>{html.escape(m)}</b> orders {a['agree']} of {a['pairs']} pairs of books "
        f"like the portfolio model ({100 * a['rate']:.0f} %); differs on "
        f"{html.escape(', '.join(f'{x} / {y}' for x, y in a['disagree']) or 'none')}</li>"
        for m, a in document["agreement"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>margin-engine: models by strategy</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th:first-child{{text-align:left}}
</style></head><body>
<h1>Margin by strategy under every model</h1>
<p>One account per strategy on the embedded demo market (BTC 65,000, ETH 2,500). Efficiency =
gross notional / initial margin.</p>
<img src="efficiency.png" alt="efficiency by strategy and model" width="900">
<img src="initial_margin.png" alt="initial margin by strategy and model" width="900">
<table><tr><th>strategy</th><th>gross notional (USD)</th>{head}</tr>{''.join(rows)}</table>
<p>eff.: margin efficiency, gross notional / IM ('-': IM is 0, long options only: premium
paid).</p>
<h2>Which book is riskier?</h2><ul>{agreement}</ul>
<p>Pairs whose portfolio margins differ by less than 5 % are left out.</p>
</body></html>
"""
