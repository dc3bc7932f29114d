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


def compute_profile_command(portfolio: Path, market: Path, spec: str, *,
                            config: Path | None, accounts: Path | None, liquidation: str,
                            as_json: bool, emit_json: Callable[[Any], None]) -> None:
    """``compute --profile NAME|FILE``: every account's margin as one venue would compute it."""
    from margin_engine.cli.loading import load_bound, load_config
    from margin_engine.margin.run import LIQUIDATION_PRICE_LIMIT
    from margin_engine.profiles.registry import get_profile
    from margin_engine.profiles.run import compare_profiles

    if liquidation not in ("auto", "on", "off"):
        raise InputError("auto, on or off", field="--liquidation-prices", value=liquidation)
    chosen = get_profile(spec, option="--profile")
    risk = load_config(config)
    bound = load_bound(portfolio, market, accounts)
    wanted = liquidation == "on" or (liquidation == "auto"
                                     and bound.account_count <= LIQUIDATION_PRICE_LIMIT)
    compared = compare_profiles(bound, [chosen], tuple(risk.haircuts.stablecoins), wanted)
    name = chosen.info.name
    document = {"timestamp": compared["timestamp"], "profile": compared["profiles"][0],
                "accounts": [{"id": acc["id"], "mode": acc["mode"],
                              "gross_notional": acc["gross_notional"], **acc["profiles"][name]}
                             for acc in compared["accounts"]]}
    if as_json:
        emit_json(document)
        return
    from margin_engine.cli.console import make_console

    make_console().print(profile_table(document))


def profile_table(document: dict[str, Any]) -> Table:
    """One row per account: margins, equity, excess, efficiency, the IM terms and the
    liquidation prices per underlying."""
    info = document["profile"]
    table = Table(title=f"{info['name']}: {info['venue']} (parameters of "
                  f"{info['parameters_as_of']}) at {document['timestamp']}",
                  title_justify="left",
                  caption="USD; n/a: the venue cannot carry the book (reason shown); liq.: "
                  "index levels where the venue's equity meets its liquidation threshold, "
                  "everything else fixed. Sources and what the profile leaves out: --json.")
    for column in ("account", "IM", "MM", "equity", "excess", "efficiency", "IM terms",
                   "liquidation prices"):
        table.add_column(column, justify="left" if column in ("account", "IM terms",
                                                                "liquidation prices")
                         else "right")
    for acc in document["accounts"]:
        if not acc["supported"]:
            table.add_row(acc["id"], "n/a", "", "", "", "", acc["unsupported_reason"], "")
            continue
        terms = "\n".join(f"{k} {_money(v)}" for k, v in acc["terms"].items() if v)
        levels = []
        for u, cell in acc.get("underlyings", {}).items():
            sides = cell["liquidation_prices"]
            down = _money(sides["down"]["price"]) if sides["down"] else "-"
            up = _money(sides["up"]["price"]) if sides["up"] else "-"
            levels.append(f"{u} {down} / {up}")
        efficiency = acc["efficiency"]
        table.add_row(acc["id"], _money(acc["initial_margin"]),
                      _money(acc["maintenance_margin"]), _money(acc["equity"]),
                      _money(acc["excess"]), "-" if efficiency is None else f"{efficiency:.2f}x",
                      terms or "-", "\n".join(levels) or "-")
    return table


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
