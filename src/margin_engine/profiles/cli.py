"""``compare --profiles``: load, run every profile, print a table or the JSON document."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from rich.table import Table

from margin_engine.core.errors import InputError

# ``--liquidation-prices auto`` searches every profile's levels for books up to this size
# (the search adds about 0.3 s per 1,000 accounts with all seven profiles, so the whole
# command stays under 2 s); above it they are opt-in with ``on``.
PROFILE_LIQUIDATION_LIMIT = 2_000
ROWS_SHOWN = 40  # accounts listed in the text tables (--json lists them all)
# writes a document's head, then its list under a key as the items come (and their count)
JsonDocumentWriter = Callable[[dict[str, Any], str, Iterable[Any], int], None]


def _run(portfolio: Path, market: Path, chosen: list[Any], *, config: Path | None,
         accounts: Path | None, liquidation: str
         ) -> tuple[dict[str, Any], Iterator[dict[str, Any]], int]:
    """Load the book and run ``chosen`` profiles: the ``compare --profiles`` document's
    fields before its accounts, its accounts as they are made (``compared_accounts``) and
    how many there are."""
    import sys

    from margin_engine.cli.loading import load_bound, load_config
    from margin_engine.profiles.run import compared_accounts, profiles_head

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
    return profiles_head(bound, chosen), compared_accounts(
        bound, chosen, tuple(risk.haircuts.stablecoins), wanted), count


def compare_profiles_command(portfolio: Path, market: Path, spec: str, *,
                             config: Path | None, accounts: Path | None, liquidation: str,
                             as_json: bool, emit_json: JsonDocumentWriter) -> None:
    """``compare --profiles``: every profile side by side, the cheapest venue and why."""
    from margin_engine.cli.console import counted, stage_status
    from margin_engine.profiles.registry import parse_profiles

    head, entries, count = _run(portfolio, market, parse_profiles(spec), config=config,
                                accounts=accounts, liquidation=liquidation)
    if as_json:
        emit_json(head, "accounts", entries, count)
        return
    from margin_engine.cli.console import make_console

    summary = _Summary([p["name"] for p in head["profiles"]])
    with stage_status("running the venue profiles") as say:  # (the summary needs them all)
        shown = summary.shown(counted(entries, count, say, "accounts run"))
    document = {**head, "accounts": shown}
    console = make_console()
    if summary.count > ROWS_SHOWN:
        console.print(profiles_summary(document, summary))
    console.print(profiles_table(document))
    _more(console, summary.count)


def compute_profile_command(portfolio: Path, market: Path, spec: str, *,
                            config: Path | None, accounts: Path | None, liquidation: str,
                            as_json: bool, emit_json: JsonDocumentWriter) -> None:
    """``compute --profile NAME|FILE``: every account's margin as one venue would compute it."""
    from margin_engine.profiles.registry import get_profile

    chosen = get_profile(spec, option="--profile")
    compared_head, compared, count = _run(portfolio, market, [chosen], config=config,
                                          accounts=accounts, liquidation=liquidation)
    name = chosen.info.name
    head = {"timestamp": compared_head["timestamp"], "profile": compared_head["profiles"][0]}
    entries = ({"id": acc["id"], "mode": acc["mode"], "gross_notional": acc["gross_notional"],
                **acc["profiles"][name]} for acc in compared)
    if as_json:
        emit_json(head, "accounts", entries, count)
        return
    from margin_engine.cli.console import make_console

    shown = list(islice(entries, ROWS_SHOWN))  # (only the accounts shown are run)
    console = make_console()
    console.print(profile_table({**head, "accounts": shown}))
    _more(console, count)


def _more(console: Any, count: int) -> None:
    if count > ROWS_SHOWN:
        console.print(f"... {count - ROWS_SHOWN:,} more accounts (--json lists them all)")


class _Summary:
    """Per profile over a whole book taken once: accounts carried, their IM, MM and gross
    notional summed in book order, and how often it is the cheapest."""

    def __init__(self, names: list[str]) -> None:
        self.count = 0
        self.carried = dict.fromkeys(names, 0)
        self.sums = {name: [0.0, 0.0, 0.0] for name in names}  # IM, MM, gross notional
        self.cheapest: dict[str, int] = {}

    def shown(self, accounts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take every account in; the first ``ROWS_SHOWN`` are kept for the table."""
        kept: list[dict[str, Any]] = []
        for acc in accounts:
            self.count += 1
            if len(kept) < ROWS_SHOWN:
                kept.append(acc)
            if acc["comparison"] is not None:
                name = acc["comparison"]["cheapest"]
                self.cheapest[name] = self.cheapest.get(name, 0) + 1
            for name, sums in self.sums.items():
                entry = acc["profiles"][name]
                if entry["supported"]:
                    self.carried[name] += 1
                    sums[0] += entry["initial_margin"]
                    sums[1] += entry["maintenance_margin"]
                    sums[2] += acc["gross_notional"]
        return kept


def profiles_summary(document: dict[str, Any], summary: _Summary) -> Table:
    """Per profile over the whole book: accounts it can carry, total IM and MM, efficiency
    (gross notional of the carried accounts / their IM) and how often it is the cheapest."""
    table = Table(title=f"{summary.count:,} accounts by venue profile",
                  title_justify="left", caption="efficiency: gross notional of the accounts "
                  "the venue can carry / their total IM")
    for column in ("profile", "accounts carried", "total IM", "total MM", "efficiency",
                   "cheapest for"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    for info in document["profiles"]:
        name = info["name"]
        im, mm, gross = summary.sums[name]
        table.add_row(name, f"{summary.carried[name]:,}", _money(im), _money(mm),
                      f"{gross / im:.2f}x" if im > 0 else "-",
                      f"{summary.cheapest.get(name, 0):,}")
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
