"""A cascade study as a JSON document and as an HTML page with charts (plotly.js copied from
the installed plotly package next to the page: no network needed to view it)."""

from __future__ import annotations

import html
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from margin_engine.liquidation.cascade import CascadeResult, CascadeRound, Channel
from margin_engine.liquidation.cascade_study import CascadeStudy, metrics, unmoved_hits

METRIC_LABELS = {
    "accounts_liquidated": "accounts liquidated",
    "liquidated_notional": "liquidated notional, USD",
    "bad_debt": "bad debt, USD",
    "insurance_fund_used": "insurance fund used, USD",
    "insurance_fund_end": "insurance fund at the end, USD",
    "adl_count": "ADL closures",
    "adl_amount": "ADL amount, USD",
    "socialised_loss": "socialised loss, USD",
    "rounds": "rounds",
    "knock_on_notional": "liquidated after round 1, USD",
    "contagion_notional": "liquidated through contagion, USD",
    "contagion_share": "contagion share of liquidations",
    "shared_equity_notional": "  via shared equity, USD",
    "collateral_channel_notional": "  via collateral prices, USD",
    "contagion_instruments": "instruments hit through contagion",
    "collateral_sold": "collateral sold, USD",
    "liquidatable_at_end": "still liquidatable at the end",
}
COLOURS = {"isolated": "#1f77b4", "cross": "#d62728", "portfolio": "#2ca02c",
           "account": "#9467bd"}


def _round_document(r: CascadeRound, labels: dict[int, str]) -> dict[str, Any]:
    return {
        "round": r.number, "prices": r.prices, "moved": list(r.moved),
        "liquidatable": r.liquidatable, "liquidated_accounts": r.liquidated_accounts,
        "liquidated_notional": r.liquidated_notional,
        "by_instrument": {h.instrument: {
            "underlying": h.underlying, "notional": h.notional, "accounts": h.accounts,
            **{str(c): h.by_channel.get(c, 0.0) for c in Channel},
            "own_move_pct": 100.0 * (h.own_move - 1.0)} for h in r.hits},
        "by_strategy": {labels.get(k, str(k)): v for k, v in sorted(
            r.notional_by_strategy.items())},
        "collateral_sold": r.collateral_sold, "flows": r.flows,
        "impact": [{"symbol": i.symbol, "flow_usd": i.flow_usd, "depth_usd": i.depth_usd,
                    "move_pct": 100.0 * (i.price_after / i.price_before - 1.0),
                    "price_before": i.price_before, "price_after": i.price_after}
                   for i in r.impact],
        "penalties": r.penalties, "bad_debt": r.bad_debt,
        "insurance_fund_used": r.insurance_fund_used, "insurance_fund": r.insurance_fund,
        "adl_count": r.adl_count, "adl_amount": r.adl_amount,
        "socialised_loss": r.socialised_loss, "unpaid_shortfall": r.unpaid_shortfall,
        "ledger_total": r.ledger_total, "ledger_imbalance": r.ledger_imbalance,
        "seconds": r.seconds}


def contagion_map(result: CascadeResult) -> dict[str, Any]:
    """Per instrument and underlying, what was liquidated and through which channel; the
    instruments hit in a round in which their own underlying had not moved at all."""
    rows: dict[str, dict[str, Any]] = {}
    for r in result.rounds:
        for h in r.hits:
            row = rows.setdefault(h.instrument, {
                "instrument": h.instrument, "underlying": h.underlying,
                "liquidated_notional": 0.0, **{str(c): 0.0 for c in Channel},
                "first_round": r.number, "own_move_pct_at_first_hit":
                    100.0 * (h.own_move - 1.0), "hit_while_unmoved": False})
            row["liquidated_notional"] += h.notional
            for c, v in h.by_channel.items():
                row[str(c)] += v
            row["hit_while_unmoved"] |= h.own_move == 1.0
    instruments = sorted(rows.values(), key=lambda x: (
        -(x["liquidated_notional"] - x[str(Channel.OWN_PRICE)]), x["instrument"]))
    underlyings: dict[str, dict[str, Any]] = {}
    for row in instruments:
        u = underlyings.setdefault(row["underlying"], {
            "underlying": row["underlying"], "liquidated_notional": 0.0,
            "contagion_notional": 0.0, "instruments_hit_by_contagion": [],
            "own_move_pct_end": 100.0 * (result.end_prices[row["underlying"]]
                                         / result.start_prices[row["underlying"]] - 1.0)})
        u["liquidated_notional"] += row["liquidated_notional"]
        contagion = row["liquidated_notional"] - row[str(Channel.OWN_PRICE)]
        u["contagion_notional"] += contagion
        if contagion > 0:
            u["instruments_hit_by_contagion"].append(row["instrument"])
    return {"instruments": instruments,
            "underlyings": sorted(underlyings.values(), key=lambda x: x["underlying"]),
            "hit_while_unmoved": unmoved_hits(result)}


def result_document(result: CascadeResult) -> dict[str, Any]:
    return {
        "model": result.model, "accounts": result.accounts, "positions": result.positions,
        "open_interest": result.open_interest, "collateral_value": result.collateral_value,
        "insurance_fund_start": result.insurance_fund_start,
        "liquidatable_before_shock": result.liquidatable_before_shock,
        "end": str(result.end), "liquidatable_at_end": result.liquidatable_at_end,
        "start_prices": result.start_prices, "end_prices": result.end_prices,
        "totals": metrics(result),
        "rounds": [_round_document(r, result.strategy_labels) for r in result.rounds],
        "contagion": contagion_map(result),
        "ledger": {"deposits": result.deposits, "total_end": result.ledger_total_end,
                   "imbalance_end": result.ledger_imbalance_end},
        "seconds": result.seconds}


def study_document(study: CascadeStudy) -> dict[str, Any]:
    """The ``simulate cascade --json`` document."""
    return {
        "shock": study.shock.to_document(),
        "population": {"accounts": study.accounts, "seed": study.seed,
                       "collateral_sizing": study.sizing.value},
        "comparison": {r.model: metrics(r) for r in study.results},
        "claims": [{"name": c.name, "statement": c.statement, "held": c.held,
                    "evidence": c.evidence} for c in study.claims],
        "modes": [result_document(r) for r in study.results],
        "seconds": study.seconds}


# --------------------------------------------------------------------------- HTML
def _figure(div: str, data: list[dict[str, Any]], layout: dict[str, Any]) -> str:
    base = {"margin": {"l": 70, "r": 20, "t": 40, "b": 60}, "height": 380,
            "legend": {"orientation": "h", "y": -0.2}}
    # "<" written as \u003c: a name holding "</script>" cannot end the script element early
    spec = json.dumps({"data": data, "layout": {**base, **layout}},
                      allow_nan=False).replace("<", "\\u003c")
    return (f'<div id="{div}" class="chart"></div><script>(function(){{var s={spec};'
            f'Plotly.newPlot("{div}",s.data,s.layout,{{displayModeBar:false}});}})();</script>')


def _money(value: float) -> str:
    return f"{value:,.0f}"


def _cell(key: str, value: float) -> str:
    if key == "contagion_share":
        return f"{value:.1%}"
    return _money(value)


def _charts(study: CascadeStudy) -> str:
    results = study.results
    parts = []
    parts.append(_figure("by_round", [
        {"type": "bar", "name": r.model, "marker": {"color": COLOURS.get(r.model)},
         "x": [x.number for x in r.rounds], "y": [x.liquidated_notional for x in r.rounds]}
        for r in results], {"title": {"text": "Liquidated notional by round"},
                            "barmode": "group", "xaxis": {"title": {"text": "round"},
                                                          "dtick": 1},
                            "yaxis": {"title": {"text": "USD"}}}))
    parts.append(_figure("accounts_by_round", [
        {"type": "scatter", "mode": "lines+markers", "name": r.model,
         "line": {"color": COLOURS.get(r.model)},
         "x": [x.number for x in r.rounds], "y": [x.liquidated_accounts for x in r.rounds]}
        for r in results], {"title": {"text": "Accounts liquidated by round"},
                            "xaxis": {"title": {"text": "round"}, "dtick": 1},
                            "yaxis": {"title": {"text": "accounts"}}}))
    parts.append(_figure("fund", [
        {"type": "scatter", "mode": "lines+markers", "name": r.model,
         "line": {"color": COLOURS.get(r.model)},
         "x": [0] + [x.number for x in r.rounds],
         "y": [r.insurance_fund_start] + [x.insurance_fund for x in r.rounds]}
        for r in results], {"title": {"text": "Insurance fund after each round"},
                            "xaxis": {"title": {"text": "round (0: before the shock)"},
                                      "dtick": 1},
                            "yaxis": {"title": {"text": "USD"}}}))
    totals: dict[str, float] = {}
    for r in results:
        for x in r.rounds:
            for h in x.hits:
                totals[h.instrument] = totals.get(h.instrument, 0.0) + h.notional
    top = sorted(totals, key=lambda k: -totals[k])[:15]
    data = []
    for r in results:
        own = dict.fromkeys(top, 0.0)
        spread = dict.fromkeys(top, 0.0)
        for x in r.rounds:
            for h in x.hits:
                if h.instrument in own:
                    own[h.instrument] += h.by_channel.get(Channel.OWN_PRICE, 0.0)
                    spread[h.instrument] += h.notional - h.by_channel.get(Channel.OWN_PRICE,
                                                                          0.0)
        colour = COLOURS.get(r.model)
        data.append({"type": "bar", "name": f"{r.model}: own price", "x": top,
                     "y": [own[k] for k in top], "offsetgroup": r.model,
                     "marker": {"color": colour}, "legendgroup": r.model})
        data.append({"type": "bar", "name": f"{r.model}: contagion", "x": top,
                     "y": [spread[k] for k in top], "offsetgroup": r.model,
                     "base": [own[k] for k in top], "legendgroup": r.model,
                     "marker": {"color": colour, "pattern": {"shape": "/"}, "opacity": 0.55}})
    parts.append(_figure("by_instrument", data, {
        "title": {"text": "Liquidated notional by instrument (15 largest): caused by its own "
                          "price, or through contagion (hatched)"},
        "barmode": "group", "height": 460, "yaxis": {"title": {"text": "USD"}},
        "xaxis": {"tickangle": -35}}))
    parts.append(_by_underlying(study))
    parts.append(_prices(study))
    return "\n".join(parts)


def _by_underlying(study: CascadeStudy) -> str:
    """Liquidated notional per underlying and mode, stacked by cause."""
    underlyings = sorted({h.underlying for r in study.results for x in r.rounds
                          for h in x.hits})
    patterns = {Channel.OWN_PRICE: "", Channel.COLLATERAL: "/", Channel.SHARED_EQUITY: "x"}
    data = []
    for r in study.results:
        base = dict.fromkeys(underlyings, 0.0)
        for channel in Channel:
            value = dict.fromkeys(underlyings, 0.0)
            for x in r.rounds:
                for h in x.hits:
                    value[h.underlying] += h.by_channel.get(channel, 0.0)
            data.append({"type": "bar", "name": f"{r.model}: {channel.replace('_', ' ')}",
                         "x": underlyings, "y": [value[u] for u in underlyings],
                         "base": [base[u] for u in underlyings], "offsetgroup": r.model,
                         "legendgroup": r.model,
                         "marker": {"color": COLOURS.get(r.model),
                                    "opacity": 1.0 if channel is Channel.OWN_PRICE else 0.55,
                                    "pattern": {"shape": patterns[channel]}}})
            for u in underlyings:
                base[u] += value[u]
    return _figure("by_underlying", data, {
        "title": {"text": "Contagion map: liquidated notional by underlying and cause (solid: "
                          "its own price; / collateral prices; x shared equity)"},
        "barmode": "group", "height": 440, "yaxis": {"title": {"text": "USD"}}})


def _prices(study: CascadeStudy) -> str:
    """One panel per symbol that moved: % from before the shock, each mode a line."""
    results = study.results
    symbols = sorted({s for r in results for s in r.start_prices
                      if abs(r.end_prices[s] / r.start_prices[s] - 1) > 1e-12
                      or any(abs(x.prices[s] / r.start_prices[s] - 1) > 1e-12
                             for x in r.rounds)})
    if not symbols:
        return ""
    gap = 0.06
    height = (1.0 - gap * (len(symbols) - 1)) / len(symbols)
    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "title": {"text": "Prices, % from before the shock, one panel per symbol (round 0: "
                          "before the shock; last point: after the last round's impact)"},
        "height": 190 * len(symbols) + 160, "showlegend": True,
        "margin": {"l": 70, "r": 20, "t": 40, "b": 110},
        "legend": {"orientation": "h", "y": -0.07, "yanchor": "top", "x": 0.0,
                   "xanchor": "left"}}
    for k, s in enumerate(symbols):
        axis = "" if k == 0 else str(k + 1)
        top = 1.0 - k * (height + gap)
        layout[f"yaxis{axis}"] = {"domain": [top - height, top], "title": {"text": s},
                                  "ticksuffix": " %", "anchor": f"x{axis}"}
        layout[f"xaxis{axis}"] = {"anchor": f"y{axis}", "dtick": 1,
                                  "showticklabels": k == len(symbols) - 1,
                                  **({"matches": "x"} if k else {})}
        data.extend({"type": "scatter", "mode": "lines+markers", "name": r.model,
                     "legendgroup": r.model, "showlegend": k == 0,
                     "line": {"color": COLOURS.get(r.model)},
                     "xaxis": f"x{axis}", "yaxis": f"y{axis}",
                     "x": [0] + [x.number for x in r.rounds] + [len(r.rounds) + 1],
                     "y": [0.0] + [100.0 * (x.prices[s] / r.start_prices[s] - 1)
                                   for x in r.rounds]
                     + [100.0 * (r.end_prices[s] / r.start_prices[s] - 1)]}
                    for r in results)
    layout["xaxis" + ("" if len(symbols) == 1 else str(len(symbols)))]["title"] = {
        "text": "round", "standoff": 4}
    return _figure("prices", data, layout)


def _table(head: list[str], rows: list[list[str]], numeric_from: int = 1,
           text_columns: tuple[int, ...] = ()) -> str:
    """Columns from ``numeric_from`` on are right-aligned numbers, except ``text_columns``."""
    top = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(
        f"<td class={'n' if j >= numeric_from and j not in text_columns else 't'}>"
        f"{html.escape(c)}</td>" for j, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{top}</tr>{body}</table>"


def _contagion_tables(study: CascadeStudy) -> str:
    out = []
    for r in study.results:
        found = contagion_map(r)
        rows = [[x["instrument"], x["underlying"], _money(x["liquidated_notional"]),
                 _money(x[str(Channel.OWN_PRICE)]), _money(x[str(Channel.COLLATERAL)]),
                 _money(x[str(Channel.SHARED_EQUITY)]), str(x["first_round"]),
                 f"{x['own_move_pct_at_first_hit']:+.2f} %",
                 "yes" if x["hit_while_unmoved"] else ""]
                for x in found["instruments"][:15]]
        unmoved = _grouped(found["hit_while_unmoved"], r) or "none"
        under = "; ".join(
            f"{u['underlying']} ({u['own_move_pct_end']:+.1f} % at the end): "
            f"{_money(u['contagion_notional'])} USD through contagion"
            for u in found["underlyings"])
        out.append(f"<h3>{html.escape(r.model)}</h3><p>Instruments liquidated in a round in "
                   f"which their own underlying had not moved: <b>{html.escape(unmoved)}</b>."
                   f"</p><p>{html.escape(under)}. The 15 instruments with the most notional "
                   "liquidated through contagion:</p>" + _table(
                       ["instrument", "underlying", "liquidated", "own price", "collateral",
                        "shared equity", "first round", "own move then", "hit unmoved"],
                       rows, numeric_from=2))
    return "\n".join(out)


def _grouped(names: list[str], result: CascadeResult) -> str:
    """Instrument names by underlying: delta-one ones named, options counted."""
    by_underlying: dict[str, list[str]] = {}
    for name in names:
        by_underlying.setdefault(name.split("-")[0], []).append(name)
    parts = []
    for u, group in sorted(by_underlying.items()):
        options = [n for n in group if n.endswith(("-C", "-P"))]
        linear = [n for n in group if n not in options]
        text = ", ".join(linear)
        if options:
            text += f"{' and ' if linear else ''}{len(options)} options"
        parts.append(f"{u}: {text}")
    return "; ".join(parts)


def _round_tables(study: CascadeStudy) -> str:
    out = []
    for r in study.results:
        rows = [[str(x.number), ", ".join(x.moved), f"{x.liquidatable:,}",
                 f"{x.liquidated_accounts:,}", _money(x.liquidated_notional),
                 _money(x.bad_debt), _money(x.insurance_fund), _money(x.adl_amount),
                 _money(x.socialised_loss), _money(sum(x.collateral_sold.values())),
                 "; ".join(f"{i.symbol}\u00a0{100 * (i.price_after / i.price_before - 1):+.2f}"
                           "\u00a0%" for i in x.impact)] for x in r.rounds]
        out.append(f"<h3>{html.escape(r.model)}: {len(r.rounds)} rounds, ended "
                   f"({html.escape(str(r.end).replace('_', ' '))})</h3>" + _table(
                       ["round", "moved in", "liquidatable", "liquidated", "notional",
                        "bad debt", "fund after", "ADL", "socialised", "collateral sold",
                        "impact into the next round"], rows, text_columns=(1, 10)))
    return "\n".join(out)


def write_html(study: CascadeStudy, output: Path) -> Path:
    """``output``/cascade.html (with plotly.min.js and cascade.json beside it)."""
    output.mkdir(parents=True, exist_ok=True)
    source = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    shutil.copyfile(source, output / "plotly.min.js")
    document = study_document(study)
    (output / "cascade.json").write_text(json.dumps(document, indent=1, allow_nan=False))
    modes = [r.model for r in study.results]
    rows = []
    compared = {r.model: metrics(r) for r in study.results}
    for key, label in METRIC_LABELS.items():
        rows.append([label] + [_cell(key, compared[m][key]) for m in modes])
    claims = "".join(
        f"<li><b>{html.escape(c.name)}</b> ({html.escape(c.statement)}): "
        f"<b class={'held' if c.held else 'not'}>"
        f"{'held' if c.held else 'did not hold' if c.held is False else 'not tested'}</b>. "
        f"{html.escape(c.evidence)}.</li>" for c in study.claims)
    moves = "".join(f"<li>{html.escape(m['symbol'])} {m['move_pct']:+.2f} %: "
                    f"{html.escape(str(m['source']))}</li>"
                    for m in document["shock"]["moves"])
    first = study.results[0]
    title = f"Liquidation cascade: {study.shock.spec}"
    page = output / "cascade.html"
    page.write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><script src="plotly.min.js"></script>
<style>body{{font-family:sans-serif;margin:1.5em 2em;max-width:1300px}}
td,th{{border:1px solid #ccc;padding:3px 8px}}table{{border-collapse:collapse;margin:.5em 0}}
td.n{{text-align:right;white-space:nowrap}}td.t{{text-align:left}}th{{background:#f3f3f3}}
.chart{{width:100%;max-width:1250px}}b.held{{color:#207020}}b.not{{color:#b02020}}
p,li{{max-width:75em}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{study.accounts:,} seeded accounts (seed {study.seed}; {first.positions:,} positions,
open interest {_money(first.open_interest)} USD), collateral sized
{html.escape(study.sizing.value)}; the same shock under each margin mode. Shock (applied at
once in round 1):</p><ul>{moves}</ul>
<h2>Comparison</h2>{_table(["", *modes], rows)}
<h2>Claims</h2><ul>{claims}</ul>
<h2>Charts</h2>{_charts(study)}
<h2>Contagion map</h2><p>A liquidation is caused by its own price when the account, as it
stood in that round, would have been below maintenance margin with only that instrument's
underlying moved; otherwise it came through a collateral asset whose price moved, or through
the equity the position shares with the account's other positions.</p>
{_contagion_tables(study)}
<h2>Rounds</h2>{_round_tables(study)}
</body></html>
""")
    return page
