"""``compare --profiles``: load, run every profile, print a table or the JSON document."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from margin_engine.core.errors import InputError

# ``--liquidation-prices auto`` searches every profile's levels for books up to this size
# (the search adds about 0.3 s per 1,000 accounts with all seven profiles, so the whole
# command stays under 2 s); above it they are opt-in with ``on``.
PROFILE_LIQUIDATION_LIMIT = 2_000
ROWS_SHOWN = 40  # accounts listed in the text tables (--json lists them all)


def _run(portfolio: Path, market: Path, chosen: list[Any], *, config: Path | None,
         accounts: Path | None, liquidation: str) -> dict[str, Any]:
    """Load the book and run ``chosen`` profiles: the ``compare --profiles`` document."""
    import sys

    from margin_engine.cli.loading import load_bound, load_config
    from margin_engine.profiles.run import compare_profiles

    if liquidation not in ("auto", "on", "off"):
        raise InputError("auto, on or off", field="--liquidation-prices", value=liquidation)
    risk = load_config(config)
    bound = load_bound(portfolio, market, accounts)
    count = bound.account_count
    wanted = liquidation == "on" or (liquidation == "auto"
                                     and count <= PROFILE_LIQUIDATION_LIMIT)
    if liquidation == "auto" and not wanted:
        sys.stderr.write(f"note: liquidation prices skipped for {count:,} accounts (more than "
                         f"{PROFILE_LIQUIDATION_LIMIT:,}); --liquidation-prices on to compute "
                         "them (about 0.3 s per 1,000 accounts)\n")
    return compare_profiles(bound, chosen, tuple(risk.haircuts.stablecoins), wanted)


def compare_profiles_command(portfolio: Path, market: Path, spec: str, *,
                             config: Path | None, accounts: Path | None, liquidation: str,
                             as_json: bool, emit_json: Callable[[Any], None]) -> None:
    """``compare --profiles``: every profile side by side, the cheapest venue and why."""
    from margin_engine.profiles.registry import parse_profiles

    document = _run(portfolio, market, parse_profiles(spec), config=config,
                    accounts=accounts, liquidation=liquidation)
    if as_json:
        emit_json(document)
        return
    from margin_engine.cli.console import make_console

    console = make_console()
    if len(document["accounts"]) > ROWS_SHOWN:
        console.print(profiles_summary(document))
    console.print(profiles_table(document))
    _more(console, len(document["accounts"]))


def compute_profile_command(portfolio: Path, market: Path, spec: str, *,
                            config: Path | None, accounts: Path | None, liquidation: str,
                            as_json: bool, emit_json: Callable[[Any], None]) -> None:
    """``compute --profile NAME|FILE``: every account's margin as one venue would compute it."""
    from margin_engine.profiles.registry import get_profile

    chosen = get_profile(spec, option="--profile")
    compared = _run(portfolio, market, [chosen], config=config, accounts=accounts,
                    liquidation=liquidation)
    name = chosen.info.name
    document = {"timestamp": compared["timestamp"], "profile": compared["profiles"][0],
                "accounts": [{"id": acc["id"], "mode": acc["mode"],
                              "gross_notional": acc["gross_notional"], **acc["profiles"][name]}
                             for acc in compared["accounts"]]}
    if as_json:
        emit_json(document)
        return
    from margin_engine.cli.console import make_console

    console = make_console()
    console.print(profile_table(document))
    _more(console, len(document["accounts"]))


def _more(console: Any, count: int) -> None:
    if count > ROWS_SHOWN:
        console.print(f"... {count - ROWS_SHOWN:,} more accounts (--json lists them all)")


def profiles_summary(document: dict[str, Any]) -> Table:
    """Per profile over the whole book: accounts it can carry, total IM and MM, efficiency
    (gross notional of the carried accounts / their IM) and how often it is the cheapest."""
    table = Table(title=f"{len(document['accounts']):,} accounts by venue profile",
                  title_justify="left", caption="efficiency: gross notional of the accounts "
                  "the venue can carry / their total IM")
    for column in ("profile", "accounts carried", "total IM", "total MM", "efficiency",
                   "cheapest for"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    cheapest: dict[str, int] = {}
    for acc in document["accounts"]:
        if acc["comparison"] is not None:
            name = acc["comparison"]["cheapest"]
            cheapest[name] = cheapest.get(name, 0) + 1
    for info in document["profiles"]:
        name = info["name"]
        carried = [a for a in document["accounts"] if a["profiles"][name]["supported"]]
        im = sum(a["profiles"][name]["initial_margin"] for a in carried)
        mm = sum(a["profiles"][name]["maintenance_margin"] for a in carried)
        gross = sum(a["gross_notional"] for a in carried)
        table.add_row(name, f"{len(carried):,}", _money(im), _money(mm),
                      f"{gross / im:.2f}x" if im > 0 else "-", f"{cheapest.get(name, 0):,}")
    return table


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
    for acc in document["accounts"][:ROWS_SHOWN]:
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
    table.add_column("account", overflow="fold", min_width=10)
    for name in names:  # "deribit-pm" as "deribit-" over "pm": narrow columns, whole names
        table.add_column(name.replace("-", "-\n", 1), justify="right")
    table.add_column("cheapest", overflow="fold")
    table.add_column("driving term", overflow="fold", min_width=10)
    for acc in document["accounts"][:ROWS_SHOWN]:
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
