"""Human output of ``simulate cascade``: a progress bar per mode advancing round by round
(stderr), the comparison table, the claims and the contagion map's names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from margin_engine.liquidation.cascade import RoundProgress
from margin_engine.liquidation.cascade_report import METRIC_LABELS, contagion_map
from margin_engine.liquidation.cascade_study import CascadeStudy, metrics


@contextmanager
def round_bars(console: Console, *, enabled: bool) -> Iterator[Any]:
    """(on_round, on_stage) callbacks drawing one bar per mode: a step per round."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=not enabled,
                  transient=False) as bar:
        tasks: dict[str, Any] = {}
        stage = {"text": ""}

        def on_round(p: RoundProgress) -> None:
            task = tasks.get(p.model)
            if task is None:
                task = tasks[p.model] = bar.add_task(p.model, total=p.max_rounds)
            if p.done:
                bar.update(task, completed=p.round, total=max(p.round, 1),
                           description=f"{p.model}: {p.round} round"
                                       f"{'' if p.round == 1 else 's'}, "
                                       f"{p.liquidatable:,} left below MM")
                return
            bar.update(task, completed=p.round,
                       description=f"{p.model}: round {p.round}, {p.liquidated:,} of "
                                   f"{p.liquidatable:,} liquidatable liquidated")

        def on_stage(text: str) -> None:
            stage["text"] = text
            if enabled:
                console.print(Text(text, style="dim"))

        yield on_round, on_stage


def _cell(key: str, value: float) -> str:
    if key == "contagion_share":
        return f"{100 * value:.1f} %"
    return f"{value:,.0f}"


def print_study(console: Console, study: CascadeStudy, page: str | None) -> None:
    moves = ", ".join(f"{m.symbol} {100 * (m.ratio - 1):+.2f} %" for m in study.shock.moves)
    console.print(Text(f"Cascade: {study.shock.spec} ({moves})", style="bold"))
    first = study.results[0]
    console.print(Text(f"{study.accounts:,} accounts, {first.positions:,} positions, open "
                       f"interest {first.open_interest:,.0f} USD; collateral sized "
                       f"{study.sizing.value}; insurance fund {first.insurance_fund_start:,.0f} "
                       "USD"))
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("")
    for r in study.results:
        table.add_column(r.model, justify="right")
    compared = [metrics(r) for r in study.results]
    for key, label in METRIC_LABELS.items():
        table.add_row(label, *[_cell(key, m[key]) for m in compared])
    console.print(table)
    for claim in study.claims:
        verdict = "held" if claim.held else "did not hold" if claim.held is False \
            else "not tested"
        console.print(Text.assemble((f"{claim.name}: ", "bold"), (verdict, "bold green"
                                    if claim.held else "bold red"), f" ({claim.statement})"))
        console.print(Text(f"  {claim.evidence}", style="dim"))
    for r in study.results:
        found = contagion_map(r)
        unmoved = found["hit_while_unmoved"]
        spread = [x["instrument"] for x in found["instruments"]
                  if x["liquidated_notional"] > x["own_price"]]
        console.print(Text(f"{r.model}: liquidated while their underlying had not moved: "
                           f"{', '.join(unmoved[:8]) or 'none'}"
                           f"{' ...' if len(unmoved) > 8 else ''} ({len(unmoved)}); through "
                           f"contagion: {len(spread)} instruments"))
    if page:
        console.print(Text(f"report: {page}", style="dim"))
