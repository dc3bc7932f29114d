"""`margin-engine` command line: compute, compare, explain, demo, bench."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Portfolio-margin and liquidation risk engine for crypto derivatives.",
)
_R = TypeVar("_R")

PortfolioArg = Annotated[Path, typer.Argument(
    help="Portfolio JSON (margin-engine/portfolio/v1) or a CSV/Parquet positions file.")]
MarketOpt = Annotated[Path, typer.Option("--market", help="Market snapshot JSON "
                                         "(margin-engine/market/v1).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Risk configuration "
                                                "(JSON or TOML); defaults to SPEC values.")]
AccountsOpt = Annotated[Path | None, typer.Option(
    "--accounts", help="With a CSV/Parquet positions file: accounts file (account, mode, "
    "collateral_<ASSET> columns).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def _guarded(action: Callable[[], _R]) -> _R:
    """Run a command body; engine errors become one line on stderr and exit code 2."""
    from margin_engine.core.errors import MarginEngineError

    try:
        return action()
    except MarginEngineError as exc:
        typer.echo(f"margin-engine: error: {exc}", err=True)
        raise typer.Exit(code=2) from None


def _emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")


@app.command()
def compute(
    portfolio: PortfolioArg,
    market: MarketOpt,
    model: Annotated[str, typer.Option(
        "--model", help="isolated, cross, portfolio, or 'account' for each account's own mode."
    )] = "account",
    config: ConfigOpt = None,
    accounts: AccountsOpt = None,
    explain: Annotated[bool, typer.Option("--explain", help="List every contribution.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Initial and maintenance margin of every account."""

    def body() -> None:
        from margin_engine.cli.loading import prepare_run
        from margin_engine.margin.explain import explain_account
        from margin_engine.margin.run import compute_document

        risk, run = prepare_run(portfolio, market, model=model, config=config,
                                accounts=accounts)
        document = compute_document(run, model)
        if explain:
            for a, entry in enumerate(document["accounts"]):
                entry["explain"] = explain_account(run.bound, risk, run.results[entry["model"]],
                                                   a)
        if as_json:
            _emit_json(document)
            return
        from margin_engine.cli.console import make_console
        from margin_engine.cli.render import compute_table, print_explanation

        console = make_console()
        console.print(compute_table(document))
        if explain:
            for entry in document["accounts"]:
                print_explanation(console, entry["explain"])

    _guarded(body)


@app.command()
def compare(
    portfolio: PortfolioArg,
    market: MarketOpt,
    config: ConfigOpt = None,
    accounts: AccountsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every model side by side, with margin efficiency (gross notional / IM)."""

    def body() -> None:
        from margin_engine.cli.loading import prepare_run
        from margin_engine.margin.run import compare_document

        _, run = prepare_run(portfolio, market, model="all", config=config, accounts=accounts)
        document = compare_document(run)
        if as_json:
            _emit_json(document)
            return
        from margin_engine.cli.console import make_console
        from margin_engine.cli.render import compare_table

        make_console().print(compare_table(document))

    _guarded(body)


@app.command()
def explain(
    portfolio: PortfolioArg,
    market: MarketOpt,
    model: Annotated[str, typer.Option("--model", help="isolated, cross, portfolio or "
                                       "'account'.")] = "account",
    account: Annotated[list[str] | None, typer.Option(
        "--account", help="Account id to explain (repeatable); default all.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every contribution to an account's margin."""

    def body() -> None:
        from margin_engine.cli.loading import prepare_run
        from margin_engine.core.errors import InputError
        from margin_engine.margin.explain import explain_account

        risk, run = prepare_run(portfolio, market, model=model, config=config)
        bound = run.bound
        ids = list(bound.book.account_ids)
        wanted = account or ids
        for name in wanted:
            if name not in ids:
                raise InputError(f"an account of this portfolio ({len(ids)} accounts)",
                                 field="--account", value=name)
        explanations = []
        for name in wanted:
            a = ids.index(name)
            explanations.append(explain_account(bound, risk, run.results[run.model_of(a, model)],
                                                a))
        if as_json:
            _emit_json({"accounts": explanations})
            return
        from margin_engine.cli.console import make_console
        from margin_engine.cli.render import print_explanation

        console = make_console()
        for item in explanations:
            print_explanation(console, item)

    _guarded(body)


@app.command()
def demo(
    accounts: Annotated[int, typer.Option("--accounts", min=10,
                                          help="Accounts in the demo book.")] = 5000,
    output: Annotated[Path, typer.Option("--output", help="Folder for the chart and JSON.")] =
    Path("out"),
    seed: Annotated[int, typer.Option("--seed")] = 7,
) -> None:
    """Build a realistic book, margin it under every model, print efficiency per strategy."""

    def body() -> None:
        from margin_engine.demo.run import run_demo

        run_demo(accounts=accounts, output=output, seed=seed)

    _guarded(body)


@app.command()
def bench(
    accounts: Annotated[int, typer.Option("--accounts", min=1)] = 100_000,
    positions: Annotated[int, typer.Option("--positions", min=1)] = 10,
    instruments: Annotated[int, typer.Option("--instruments", min=100)] = 2400,
    baseline_positions: Annotated[int, typer.Option(
        "--baseline-positions", help="Positions priced by the naive baseline.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Time the portfolio model on a seeded random book against a naive baseline."""

    def body() -> None:
        from margin_engine.bench.run import run_bench

        report = run_bench(accounts=accounts, positions=positions, instruments=instruments,
                           baseline_positions=baseline_positions, seed=seed,
                           progress=not as_json)
        if as_json:
            _emit_json(report)
        else:
            from margin_engine.bench.run import print_report

            print_report(report)

    _guarded(body)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
