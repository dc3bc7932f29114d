"""``compare --profiles``: load, run every profile, print a table or the JSON document."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from margin_engine.core.errors import InputError


def compare_profiles_command(portfolio: Path, market: Path, spec: str, *,
                             config: Path | None, accounts: Path | None, liquidation: str,
                             as_json: bool, emit_json: Callable[[Any], None]) -> None:
    from margin_engine.cli.loading import load_bound, load_config
    from margin_engine.margin.run import LIQUIDATION_PRICE_LIMIT
    from margin_engine.profiles.registry import parse_profiles
    from margin_engine.profiles.run import compare_profiles

    if liquidation not in ("auto", "on", "off"):
        raise InputError("auto, on or off", field="--liquidation-prices", value=liquidation)
    chosen = parse_profiles(spec)
    risk = load_config(config)
    bound = load_bound(portfolio, market, accounts)
    wanted = liquidation == "on" or (liquidation == "auto"
                                     and bound.account_count <= LIQUIDATION_PRICE_LIMIT)
    document = compare_profiles(bound, chosen, tuple(risk.haircuts.stablecoins), wanted)
    if as_json:
        emit_json(document)
        return
    from margin_engine.cli.console import make_console

    make_console().print(profiles_table(document))


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def profiles_table(document: dict[str, Any]) -> Table:
    names = [p["name"] for p in document["profiles"]]
    table = Table(title=f"Initial margin by venue profile at {document['timestamp']} "
                  "(n/a: the venue cannot carry the book)", title_justify="left",
                  caption="IM in USD; liq.: nearest liquidation price of the account's first "
                  "underlying; driving term: the IM term with the largest gap between the "
                  "cheapest and the dearest venue")
    table.add_column("account")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("cheapest")
    table.add_column("driving term")
    for acc in document["accounts"]:
        row = [acc["id"]]
        for name in names:
            entry = acc["profiles"][name]
            if not entry["supported"]:
                row.append("n/a")
                continue
            cell = _money(entry["initial_margin"])
            liq = next((c["liquidation_price"] for c in entry.get("underlyings", {}).values()
                        if c["liquidation_price"] is not None), None)
            if liq is not None:
                cell += f"\nliq. {liq:,.0f}"
            row.append(cell)
        comparison = acc["comparison"]
        if comparison is None:
            row += ["-", "-"]
        else:
            row += [comparison["cheapest"],
                    f"{comparison['driving_term'] or '-'} "
                    f"({_money(comparison['driving_term_difference'])})"]
        table.add_row(*row)
    return table
