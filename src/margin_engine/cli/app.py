"""`margin-engine` command line: compute, compare, explain, demo, bench."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar, overload

import typer

from margin_engine.cli.helpstyle import HelpTyper

app = HelpTyper(
    add_completion=False,
    no_args_is_help=True,
    help="Portfolio-margin and liquidation risk engine for crypto derivatives.",
)
_R = TypeVar("_R")
MODEL_HELP = ("Margin model: account (the default: each account under its own mode), "
              "isolated, cross, portfolio, sensitivity, or var (needs --history).")

PortfolioArg = Annotated[Path, typer.Argument(
    metavar="PORTFOLIO",
    help="Portfolio JSON (margin-engine/portfolio/v1), a CSV/Parquet positions file, or a book "
    "folder of partitions (as batch reads).")]
MarketOpt = Annotated[Path, typer.Option("--market", metavar="FILE", help="Market snapshot JSON "
                                         "(margin-engine/market/v1).")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", metavar="FILE", help="Risk configuration (JSON or TOML) overriding the built-in "
    "defaults: isolated IM tiers from 2 %, portfolio grid +/-16 %, collateral haircuts on "
    "(README, Models).")]
AccountsOpt = Annotated[Path | None, typer.Option(
    "--accounts", metavar="FILE", help="With a CSV/Parquet positions file: accounts file "
    "(account, mode, collateral_<ASSET> columns).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
ParamsOpt = Annotated[Path | None, typer.Option(
    "--params", metavar="FILE", help="Sensitivity-model parameter file (default: the shipped "
    "calibration).")]
HistoryOpt = Annotated[list[str] | None, typer.Option(
    "--history", metavar="U=FILE", help="Price history of underlying U for the var model; "
    "repeatable.")]
DvolOpt = Annotated[list[str] | None, typer.Option(
    "--dvol", metavar="U=FILE", help="Implied-vol index history of U (var vol moves); "
    "repeatable.")]
ConfidenceOpt = Annotated[float | None, typer.Option(
    "--confidence", help="var model: ES confidence, 0.975, 0.99 or 0.995 (default 0.99).")]
MporOpt = Annotated[int | None, typer.Option(
    "--mpor-days", min=1, help="var model: margin period of risk in days (default 1).")]
LiquidationOpt = Annotated[str, typer.Option(
    "--liquidation-prices", metavar="auto|on|off", help="Liquidation prices per account and "
    "underlying (a root search each): auto computes them with --json for up to 1,000,000 "
    "accounts (10,000 with the var model; with venue profiles, text too, for up to 2,000).")]


def _want_liquidation(choice: str, as_json: bool, accounts: int,
                      limit: int | None = None) -> bool:
    """``limit``: the most accounts ``auto`` searches (default: the account-by-account
    search's, ``LIQUIDATION_PRICE_LIMIT``)."""
    from margin_engine.core.errors import InputError
    from margin_engine.margin.run import LIQUIDATION_PRICE_LIMIT

    most = LIQUIDATION_PRICE_LIMIT if limit is None else limit
    if choice not in ("auto", "on", "off"):
        raise InputError("auto, on or off", field="--liquidation-prices", value=choice)
    if choice != "auto":
        return choice == "on"
    if as_json and accounts > most:
        typer.echo(f"note: liquidation prices skipped for {accounts:,} accounts (more than "
                   f"{most:,}); --liquidation-prices on to compute them", err=True)
    return as_json and accounts <= most


def _check_model(model: str, *, with_var: bool = True) -> None:
    """``--model``: account (each account under its own mode) or a margin model's name."""
    from margin_engine.core.errors import InputError
    from margin_engine.margin.registry import ALL_MODEL_NAMES, MODEL_NAMES, ModelSelection

    allowed = (ModelSelection.ACCOUNT.value, *(ALL_MODEL_NAMES if with_var else MODEL_NAMES))
    if model not in allowed:
        raise InputError(f"one of {', '.join(allowed)} (account, the default: each account "
                         "under its own mode)", field="--model", value=model)


def _model_data(params: Path | None, history: list[str] | None, dvol: list[str] | None,
                confidence: float | None, mpor_days: int | None) -> Any:
    from margin_engine.cli.loading import ModelData

    return ModelData(params=params, history=tuple(history or ()), dvol=tuple(dvol or ()),
                     confidence=confidence, mpor_days=mpor_days)


@overload
def checked_flag(value: float, option: str, maximum: float | None = None) -> float: ...
@overload
def checked_flag(value: float | None, option: str, maximum: float | None = None
                 ) -> float | None: ...
def checked_flag(value: float | None, option: str, maximum: float | None = None
                 ) -> float | None:
    """A number option checked as the risk configuration checks its numbers: finite, >= 0,
    of magnitude <= MAX_MAGNITUDE (and <= ``maximum``); InputError naming the option (typer
    checks at most a minimum, and lets nan, inf and 1e308 through)."""
    from margin_engine.core.numbers import parse_float

    return None if value is None else parse_float(value, field=option, minimum=0.0,
                                                  maximum=maximum)


EXIT_BROKEN_PIPE = 141  # as a shell reports a command ended by SIGPIPE (128 + 13)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reading end is closed (polled: POLLERR)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor, or no poll here
        return False


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null: what is left in its buffer is dropped at exit instead of
    failing on the closed pipe again (an 'Exception ignored' message)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (stdout replaced in process)
        pass
    finally:
        os.close(devnull)


def _guarded(action: Callable[[], _R]) -> _R:
    """Run a command body; engine errors become one line on stderr and exit code 2."""
    from margin_engine.core.errors import MarginEngineError

    try:
        return action()
    except MarginEngineError as exc:
        typer.echo(f"margin-engine: error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except BrokenPipeError as exc:
        if not _stdout_reader_gone():  # another pipe or socket: an error like any other
            typer.echo(f"margin-engine: error: {exc.strerror or exc}", err=True)
            raise typer.Exit(code=2) from None
        _stdout_to_devnull()  # stdout's reader stopped reading (`| head`): nothing to say
        raise typer.Exit(code=EXIT_BROKEN_PIPE) from None
    except OSError as exc:  # a file that cannot be written or read, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"margin-engine: error: {where}{exc.strerror or exc}", err=True)
        raise typer.Exit(code=2) from None
    except MemoryError as exc:  # a book larger than this machine's memory
        typer.echo(f"margin-engine: error: out of memory ({exc or 'an allocation failed'}): "
                   "a smaller book, or a machine with more memory (`batch` streams a "
                   "partitioned book)", err=True)
        raise typer.Exit(code=2) from None


def _emit_json(document: Any) -> None:
    """``--json`` on stdout: indented for a terminal, one compact line for a pipe or a file
    (the compiled encoder: a 20 MB document in a fraction of a second instead of over one)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(document, indent=indent, allow_nan=False) + "\n")


def _emit_json_document(head: dict[str, Any], key: str, items: Iterable[Any],
                        total: int | None = None) -> None:
    """``_emit_json({**head, key: list(items)})`` written as the items come
    (``json_stream``), the cycle collector off meanwhile: the items are acyclic results
    made and dropped by the thousand (its passes over them found nothing, in about a tenth of
    the time of a million accounts' document). With
    ``total`` (the items' count) a line on a terminal's stderr counts them as they go, when
    stdout is not that terminal."""
    from margin_engine.cli.console import counted, stage_status
    from margin_engine.core.collector import no_cycle_collection
    from margin_engine.io.json_stream import write_json_document

    on_terminal = sys.stdout.isatty()
    with no_cycle_collection():
        if total is None or on_terminal:  # (a status line would mix with the document)
            write_json_document(sys.stdout, head, key, items, 2 if on_terminal else None)
            return
        with stage_status(f"writing {key}") as say:
            write_json_document(sys.stdout, head, key,
                                counted(items, total, say, f"{key} written"), None)


@app.command()
def compute(
    portfolio: PortfolioArg,
    market: MarketOpt,
    model: Annotated[str, typer.Option("--model", metavar="MODEL", help=MODEL_HELP)] = "account",
    config: ConfigOpt = None,
    accounts: AccountsOpt = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Also list every contribution to each account's margin.")] = False,
    params: ParamsOpt = None,
    history: HistoryOpt = None,
    dvol: DvolOpt = None,
    confidence: ConfidenceOpt = None,
    mpor_days: MporOpt = None,
    liquidation_prices: LiquidationOpt = "auto",
    profile: Annotated[str | None, typer.Option(
        "--profile", metavar="NAME|FILE", help="Margin as a venue would: a venue profile "
        "(deribit-pm, derive-pmrm, okx-pm, binance-um, binance-pm, dydx-v4, hyperliquid) or a "
        "profile file (configs/profiles/*.toml), instead of --model.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Initial and maintenance margin of every account (under a model, or as a venue would
    with --profile)."""

    def body() -> None:
        from margin_engine.cli.console import stage_status
        from margin_engine.cli.loading import prepare_run
        from margin_engine.core.errors import InputError
        from margin_engine.core.timeutil import ns_to_iso
        from margin_engine.margin.explain import explain_account
        from margin_engine.margin.run import account_margins, liquidation_limit

        if profile is not None:
            from margin_engine.margin.registry import ModelSelection

            if model != ModelSelection.ACCOUNT or explain or params or history or dvol:
                raise InputError("--profile alone (a venue profile replaces --model, "
                                 "--explain, --params, --history and --dvol; its IM terms are "
                                 "in the output)", field="--profile", value=profile)
            from margin_engine.profiles.cli import compute_profile_command

            compute_profile_command(portfolio, market, profile, config=config,
                                    accounts=accounts, liquidation=liquidation_prices,
                                    as_json=as_json, emit_json=_emit_json_document)
            return
        _check_model(model)
        with stage_status(f"{portfolio.name}: reading the book, margining it") as say:
            risk, run = prepare_run(portfolio, market, model=model, config=config,
                                    accounts=accounts, data=_model_data(
                                        params, history, dvol, confidence, mpor_days))
            count = run.bound.account_count
            with_liquidation = _want_liquidation(liquidation_prices, as_json, count,
                                                 liquidation_limit([model], run.built))
            if with_liquidation:
                say(f"{portfolio.name}: liquidation prices of {count:,} accounts")
            made = account_margins(run, model, with_liquidation)

        def explained(a: int, entry: dict[str, Any]) -> dict[str, Any]:
            if explain:
                entry["explain"] = explain_account(run.bound, risk, run.results[entry["model"]],
                                                   a, run.built.get(entry["model"]))
            return entry

        head = {"model": model, "timestamp": ns_to_iso(run.bound.timestamp_ns)}
        entries = (explained(a, entry.to_json()) for a, entry in enumerate(made))
        if as_json:  # written as the accounts are made: a million accounts in a bounded memory
            _emit_json_document(head, "accounts", entries, count)
            return
        from margin_engine.cli.console import make_console
        from margin_engine.cli.render import print_compute, print_explanation

        console = make_console()
        if not explain:  # the tables take the accounts as they are made, as the JSON
            from margin_engine.core.collector import no_cycle_collection

            with no_cycle_collection():
                print_compute({**head, "accounts": entries}, console)
            return
        every = list(entries)
        print_compute({**head, "accounts": every}, console)
        for entry in every:
            print_explanation(console, entry["explain"])

    _guarded(body)


@app.command()
def compare(
    portfolio: PortfolioArg,
    market: MarketOpt,
    config: ConfigOpt = None,
    accounts: AccountsOpt = None,
    params: ParamsOpt = None,
    history: HistoryOpt = None,
    dvol: DvolOpt = None,
    confidence: ConfidenceOpt = None,
    mpor_days: MporOpt = None,
    liquidation_prices: LiquidationOpt = "auto",
    profiles: Annotated[str | None, typer.Option(
        "--profiles", help="Venue profiles instead of models: 'all' or names separated by "
        "commas (deribit-pm, derive-pmrm, okx-pm, binance-um, binance-pm, dydx-v4, "
        "hyperliquid) or profile files (configs/profiles/*.toml).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every model side by side with margin efficiency (var joins with --history); with
    --profiles, every venue profile, the cheapest venue and the term that drives the gap."""

    def body() -> None:
        from margin_engine.cli.console import stage_status
        from margin_engine.cli.loading import prepare_run
        from margin_engine.core.timeutil import ns_to_iso
        from margin_engine.margin.results import comparison_row
        from margin_engine.margin.run import account_comparisons, liquidation_limit

        if profiles is not None:
            from margin_engine.profiles.cli import compare_profiles_command

            compare_profiles_command(portfolio, market, profiles, config=config,
                                     accounts=accounts, liquidation=liquidation_prices,
                                     as_json=as_json, emit_json=_emit_json_document)
            return
        with stage_status(f"{portfolio.name}: reading the book, margining it") as say:
            _, run = prepare_run(portfolio, market, model="all", config=config,
                                 accounts=accounts, data=_model_data(
                                     params, history, dvol, confidence, mpor_days))
            count = run.bound.account_count
            with_liquidation = _want_liquidation(liquidation_prices, as_json, count,
                                                 liquidation_limit(list(run.results), run.built))
            if with_liquidation:
                say(f"{portfolio.name}: liquidation prices of {count:,} accounts, "
                    f"{len(run.results)} models")
            made = account_comparisons(run, with_liquidation)
        head = {"timestamp": ns_to_iso(run.bound.timestamp_ns), "models": list(run.results)}
        rows = (comparison_row(by_model) for by_model in made)
        if as_json:  # written as the accounts are made, as compute's
            _emit_json_document(head, "accounts", rows, count)
            return
        from margin_engine.cli.console import make_console
        from margin_engine.cli.render import print_compare

        # the tables list the first accounts only: only those are made
        print_compare({**head, "accounts": rows}, make_console(),
                      total=run.bound.account_count)

    _guarded(body)


@app.command()
def explain(
    portfolio: PortfolioArg,
    market: MarketOpt,
    model: Annotated[str, typer.Option("--model", metavar="MODEL", help=MODEL_HELP)] = "account",
    account: Annotated[list[str] | None, typer.Option(
        "--account", help="Account id to explain (repeatable); default all.")] = None,
    config: ConfigOpt = None,
    accounts: AccountsOpt = None,
    params: ParamsOpt = None,
    history: HistoryOpt = None,
    dvol: DvolOpt = None,
    confidence: ConfidenceOpt = None,
    mpor_days: MporOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every contribution to an account's margin."""

    def body() -> None:
        from margin_engine.cli.loading import prepare_run
        from margin_engine.core.errors import InputError
        from margin_engine.margin.explain import explain_account

        _check_model(model)
        risk, run = prepare_run(portfolio, market, model=model, config=config,
                                accounts=accounts,
                                data=_model_data(params, history, dvol, confidence, mpor_days))
        bound = run.bound
        row = {name: a for a, name in enumerate(bound.book.account_ids)}
        missing = [name for name in account or () if name not in row]
        if missing:
            raise InputError(f"an account of this portfolio ({len(row)} accounts)",
                             field="--account", value=missing[0])
        wanted = [row[name] for name in account] if account else range(len(row))

        def explained(a: int) -> dict[str, Any]:
            name_of = run.model_of(a, model)
            return explain_account(bound, risk, run.results[name_of], a, run.built.get(name_of))

        explanations = (explained(a) for a in wanted)  # made as they are written
        if as_json:
            _emit_json_document({}, "accounts", explanations)
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
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed of the book.")] = 7,
) -> None:
    """Build a realistic book, margin it under every model, print efficiency per strategy."""

    def body() -> None:
        from margin_engine.demo.run import run_demo

        run_demo(accounts=accounts, output=output, seed=seed)

    _guarded(body)


class BenchKind(StrEnum):
    """What ``bench`` times: a margin model on a random book, the monitor's tick path, or a
    partitioned book on a Dask cluster."""

    PORTFOLIO = "portfolio"
    SENSITIVITY = "sensitivity"
    VAR = "var"
    MONITOR = "monitor"
    BATCH = "batch"


@app.command()
def bench(
    accounts: Annotated[int, typer.Option("--accounts", min=1,
                                          help="Accounts in the random book.")] = 100_000,
    positions: Annotated[int, typer.Option("--positions", min=1,
                                           help="Positions per account.")] = 10,
    instruments: Annotated[int, typer.Option("--instruments", min=100,
                                             help="Distinct instruments listed.")] = 2400,
    baseline_positions: Annotated[int, typer.Option(
        "--baseline-positions", min=1, help="Positions priced by the naive baseline (whole "
        "accounts: at least one).")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed of the book.")] = 1,
    model: Annotated[str, typer.Option(
        "--model", help="portfolio (with the naive baseline), sensitivity, var, monitor "
        "(tick latency and store throughput), or batch (a partitioned book on a local Dask "
        "cluster)")] = "portfolio",
    scenarios: Annotated[int, typer.Option("--scenarios", min=10,
                                           help="var: joint scenarios")] = 1000,
    ticks: Annotated[int, typer.Option("--ticks", min=10, help="monitor: ticks")] = 400,
    rows: Annotated[int, typer.Option("--rows", min=1000,
                                      help="monitor: snapshot rows written")] = 200_000,
    runs: Annotated[int, typer.Option("--runs", min=1, help="portfolio: runs per measure "
                                      "(medians reported)")] = 3,
    liquidation_prices: Annotated[bool, typer.Option(
        "--liquidation-prices", help="portfolio, batch: also time both liquidation levels of "
        "every account")] = False,
    files: Annotated[bool, typer.Option(
        "--files/--no-files", help="portfolio: also time the full run from Parquet "
        "files")] = True,
    record: Annotated[Path | None, typer.Option(
        "--record", metavar="RESULTS.md", help="portfolio: append a row to the 'Scale' "
        "section of this file (benchmarks/RESULTS.md)")] = None,
    partitions: Annotated[int, typer.Option("--partitions", min=1,
                                            help="batch: partitions of the book")] = 40,
    workers: Annotated[int, typer.Option("--workers", min=1,
                                         help="batch: Dask worker processes")] = 2,
    as_json: JsonOpt = False,
) -> None:
    """Time a margin model on a seeded random book (portfolio: the per-tick re-margin against
    plain numpy, the memory-bandwidth floor and the scalar reference)."""

    def body() -> None:
        from margin_engine.bench.run import run_bench
        from margin_engine.core.errors import InputError

        try:
            kind = BenchKind(model)
        except ValueError:
            raise InputError(", ".join(k.value for k in BenchKind), field="--model",
                             value=model) from None
        # options that would do nothing are refused
        for given, option, kinds in (
                (record is not None, "--record", (BenchKind.PORTFOLIO,)),
                (liquidation_prices, "--liquidation-prices",
                 (BenchKind.PORTFOLIO, BenchKind.BATCH))):
            if given and kind not in kinds:
                raise InputError(f"{option} only with --model "
                                 f"{' or '.join(k.value for k in kinds)}", field="--model",
                                 value=model)
        if record is not None:
            from margin_engine.bench.run import check_record_path

            check_record_path(record)
        if kind is BenchKind.MONITOR:
            from margin_engine.bench.monitor_bench import run_monitor_bench

            result = run_monitor_bench(accounts=accounts, positions=positions, ticks=ticks,
                                       rows=rows, seed=seed)
            if as_json:
                _emit_json(result)
            else:
                from margin_engine.cli.render import print_measures

                print_measures("Monitor benchmark", result)
            return
        if kind is BenchKind.BATCH:
            from margin_engine.batch.bench import run_batch_bench

            result = run_batch_bench(accounts=accounts, positions=positions,
                                     partitions=partitions, workers=workers, seed=seed,
                                     progress=not as_json,
                                     liquidation_prices=liquidation_prices)
            if as_json:
                _emit_json(result)
            else:
                from margin_engine.cli.render import print_measures

                print_measures("Batch benchmark", result)
            return
        report = run_bench(accounts=accounts, positions=positions, instruments=instruments,
                           baseline_positions=baseline_positions, seed=seed,
                           progress=not as_json, model=model, scenarios=scenarios, runs=runs,
                           liquidation=liquidation_prices, files=files)
        if record is not None:
            from margin_engine.bench.run import record_results

            record_results(report, record)
        if as_json:
            _emit_json(report)
        else:
            from margin_engine.bench.run import print_report

            print_report(report)

    _guarded(body)


@app.command()
def batch(
    book: Annotated[Path, typer.Option(
        "--book", metavar="FOLDER", help="Partitioned Parquet book: positions/part-*.parquet "
        "and accounts/part-*.parquet (+ instruments.json); README, Batch.")],
    market: MarketOpt,
    scheduler: Annotated[str, typer.Option(
        "--scheduler", metavar="local|tcp://HOST:PORT|none", help="local: a Dask LocalCluster "
        "on this machine; tcp://HOST:PORT: a running Dask scheduler; none: in this "
        "process.")] = "local",
    workers: Annotated[int, typer.Option("--workers", min=1,
                                         help="local: worker processes")] = 2,
    model: Annotated[str, typer.Option("--model", metavar="MODEL", help="account (each "
                                       "account under its own mode), isolated, cross, "
                                       "portfolio or sensitivity")] = "account",
    config: ConfigOpt = None,
    output: Annotated[Path, typer.Option(
        "--output", metavar="FOLDER", help="Result parts (one Parquet file per "
        "partition).")] = Path("out/batch"),
    liquidation_prices: Annotated[bool, typer.Option(
        "--liquidation-prices", help="Also both liquidation levels of every account on every "
        "underlying (columns liquidation_price_U, liquidation_down_U, liquidation_up_U; "
        "README, Batch).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Margin a partitioned bulk book, one partition per Dask task, results streamed to
    Parquet."""

    def body() -> None:
        from rich.console import Console

        from margin_engine.batch.run import run_batch
        from margin_engine.cli.loading import load_config, write_settled_note
        from margin_engine.io.market_file import load_market

        snapshot = load_market(market)  # refuse a bad market here, before any worker starts
        document = json.loads(market.read_text())
        doing = "margining the partitions" + (" and their liquidation prices"
                                              if liquidation_prices else "")
        with Console(stderr=True, quiet=as_json, markup=False).status(doing) as status:
            def tick(item: dict[str, Any]) -> None:
                status.update(f"{doing}: {item['done']:,} of {item['total']:,} back, the last "
                              f"{item['partition']}")

            summary = run_batch(book, document, load_config(config).to_dict(), model=model,
                                output=output, scheduler=scheduler, workers=workers,
                                progress=tick, liquidation_prices=liquidation_prices)
        write_settled_note([(e["underlying"], e["expiry"]) for e in summary["settled_at_index"]],
                           snapshot.timestamp_ns, market)
        if as_json:
            _emit_json(summary)
            return
        from margin_engine.cli.render import print_measures

        print_measures("Batch", {k: v for k, v in summary.items()
                                 if k not in ("parts", "settled_at_index")})  # (the note's)

    _guarded(body)


market_app = HelpTyper(no_args_is_help=True, help="Market snapshots.")
vol_app = HelpTyper(no_args_is_help=True, help="Volatility surfaces from option chains.")
portfolio_app = HelpTyper(no_args_is_help=True, help="Portfolio files from venues' account "
                          "data.")
app.add_typer(market_app, name="market")
app.add_typer(vol_app, name="vol")
app.add_typer(portfolio_app, name="portfolio")


@portfolio_app.command("from-ccxt")
def portfolio_from_ccxt(
    venue: Annotated[list[str], typer.Option(
        "--venue", metavar="NAME=POSITIONS.json,BALANCE.json", help="One venue's saved ccxt "
        "fetch_positions and fetch_balance output; repeat for several venues (one account "
        "each, named NAME).")],
    mode: Annotated[str | None, typer.Option(
        "--mode", help="cross, isolated or portfolio for every account (default: isolated "
        "when every position is, else cross).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", metavar="FILE", help="Portfolio JSON path (default: stdout).")] = None,
) -> None:
    """A portfolio file from ccxt's unified account structures, offline (no network): each
    venue's positions and balances become one account; the snapshot time and the files' marks
    are recorded under "source"."""

    def body() -> None:
        from margin_engine.profiles.ccxt_files import merge_ccxt_accounts, parse_venue_files

        document = merge_ccxt_accounts([parse_venue_files(v) for v in venue], mode=mode)
        if output is None:
            _emit_json(document)
            return
        output.write_text(json.dumps(document, indent=2) + "\n")
        for name, seen in document["source"]["accounts"].items():
            account = next(a for a in document["accounts"] if a["id"] == name)
            typer.echo(f"{name}: {len(account['positions'])} positions, "
                       f"{len(account['collateral'])} balances, {account['mode']}, snapshot "
                       f"{seen['snapshot'] or 'not in the files'}", err=True)
        typer.echo(f"Wrote {output}. Margin it against a market snapshot: margin-engine "
                   f"compute {output} --market MARKET (--profile NAME for a venue's method).",
                   err=True)

    _guarded(body)
ChainFiles = Annotated[list[str], typer.Argument(
    metavar="FILE", help="Deribit chain, book-summary or mark files; UNDERLYING=FILE names the "
    "underlying.")]
AtOpt = Annotated[str | None, typer.Option(
    "--at", metavar="TIME", help="Snapshot time (ISO-8601 with zone); default: the files' own "
    "snapshot (required for chains without one).")]


@market_app.command("from-deribit")
def market_from_deribit(
    files: ChainFiles,
    at: AtOpt = None,
    output: Annotated[Path | None, typer.Option("--output", metavar="FILE", help="Market JSON "
                                                "path (default: stdout).")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", metavar="FILE", help="Write the fit report (per expiry RMSE, what became "
        "of every input row, arbitrage) as JSON here.")] = None,
    weighting: Annotated[str, typer.Option(
        "--weighting", metavar="vega|spread", help="Least-squares weights: vega, or vega / "
        "bid-ask spread where the file has a book.")] = "vega",
    min_days: Annotated[float, typer.Option("--min-days", help="Skip expiries closer than "
                                            "this many days.")] = 1.0,
    vega_cut: Annotated[float, typer.Option("--vega-cut", help="Fit only quotes whose vega "
                                            "per vol point is >= this x forward.")] = 1e-4,
    repair: Annotated[bool, typer.Option(
        "--repair/--no-repair", help="Repair butterfly and calendar arbitrage where it costs at "
        "most 1 vol point of fit error.")] = True,
) -> None:
    """Build a market snapshot with SVI surfaces fitted to Deribit option files."""

    def body() -> None:
        from margin_engine.vol.commands import fit_files_with_rows, fit_report, print_fit_report
        from margin_engine.vol.market_builder import market_document

        fits, rows, at_ns = fit_files_with_rows(
            files, at=at, weighting=weighting, min_days=checked_flag(min_days, "--min-days"),
            vega_cut=checked_flag(vega_cut, "--vega-cut"), repair=repair)
        document = market_document(fits, at_ns)
        print_fit_report(fits, rows)
        text = json.dumps(document, indent=2) + "\n"
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
            typer.echo(f"wrote {output}", err=True)
        if report is not None:
            report.write_text(json.dumps(fit_report(fits, rows), indent=2) + "\n")

    _guarded(body)


@vol_app.command("plot")
def vol_plot(
    files: ChainFiles,
    at: AtOpt = None,
    output: Annotated[Path, typer.Option("--output", help="Folder for the PNGs.")] = Path("out"),
) -> None:
    """Plot market vs fitted smiles per expiry (one PNG per file)."""

    def body() -> None:
        from margin_engine.vol.commands import fit_files
        from margin_engine.vol.plot import plot_smiles

        output.mkdir(parents=True, exist_ok=True)
        fits, _ = fit_files(files, at=at) if at else ([], 0)
        if not at:
            fits = [fit_files([spec])[0][0] for spec in files]
        for spec, fit in zip(files, fits, strict=True):
            path = output / f"smiles_{Path(spec.split('=')[-1]).stem}.png"
            plot_smiles(fit, path)
            typer.echo(f"wrote {path}")

    _guarded(body)


@vol_app.command("bench")
def vol_bench_command(
    quotes: Annotated[int, typer.Option("--quotes", min=100)] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Time a surface fit on a seeded synthetic chain."""

    def body() -> None:
        from margin_engine.vol.commands import vol_bench

        result = vol_bench(quotes)
        if as_json:
            _emit_json(result)
        else:
            after = result["arbitrage_after"]
            typer.echo(f"{result['quotes']:,} quotes ({result['fitted_quotes']:,} fitted, "
                       f"{result['expiries']} expiries): fitted in {result['seconds_median']:.3f}"
                       " s (median of 3 runs)")
            typer.echo(f"median RMSE {result['median_rmse_vol_points']:.2f} vol points; "
                       f"arbitrage left after repair: {after.get('butterfly_slices', 0)} "
                       f"butterfly slices, {after.get('calendar_pairs', 0)} calendar pairs")

    _guarded(body)


simulate_app = HelpTyper(no_args_is_help=True, help="Studies on the real data.")
app.add_typer(simulate_app, name="simulate")
PathOpt = Annotated[list[str], typer.Option(
    "--path", metavar="U=FILE", help="Price path of underlying U (any layout of "
    "../shared/data); repeatable.")]


def _window_paths(paths: dict[str, Any], assets: dict[str, Any], low: int | None,
                  high: int | None, start: str | None, end: str | None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paths and asset paths cut to the --start/--end window; refused, naming the window
    and each path's span, when it holds fewer than two of their common timestamps."""
    from margin_engine.core.errors import InputError
    from margin_engine.data.prices import align
    from margin_engine.liquidation.replay import path_spans

    cut_paths, cut_assets = ({k: v.between(low or 0, high or 2**62) for k, v in d.items()}
                             for d in (paths, assets))
    if align([*cut_paths.values(), *cut_assets.values()])[0].size < 2:
        raise InputError(f"a window holding at least two common timestamps of the paths "
                         f"({path_spans([*paths.values(), *assets.values()])})",
                         field="--start" if start else "--end",
                         value=f"{start or 'their start'} to {end or 'their end'}")
    return cut_paths, cut_assets


def _series_specs(specs: list[str], option: str) -> dict[str, Any]:
    from margin_engine.cli.loading import load_series

    return dict(load_series(tuple(specs), option))


@app.command()
def liquidate(
    portfolio: PortfolioArg,
    market: MarketOpt,
    path: PathOpt,
    asset_path: Annotated[list[str] | None, typer.Option(
        "--asset-path", metavar="ASSET=FILE", help="Price path of a collateral asset (e.g. a "
        "stablecoin's oracle price); repeatable.")] = None,
    breaker: Annotated[str | None, typer.Option(
        "--breaker", metavar="on|off", help="Circuit breaker (default: the risk "
        "configuration's, off).")] = None,
    latency_seconds: Annotated[float | None, typer.Option(
        "--latency-seconds", min=0.0, metavar="SECONDS", help="Trigger-to-execution delay "
        "(default 60).")] = None,
    model: Annotated[str, typer.Option(
        "--model", metavar="MODEL", help="Margin model: account (the default: each account "
        "under its own mode), isolated, cross, portfolio or sensitivity.")] = "account",
    insurance_fund: Annotated[float | None, typer.Option(
        "--insurance-fund", min=0.0, metavar="USD", help="Insurance fund at the start "
        "(default 0).")] = None,
    penalty_rate: Annotated[float | None, typer.Option(
        "--penalty-rate", min=0.0, metavar="RATE", help="Liquidation penalty as a fraction of "
        "the closed notional (default 0.01), to the insurance fund.")] = None,
    shortfall: Annotated[str | None, typer.Option(
        "--shortfall", metavar="adl|socialised", help="Who pays bad debt the fund cannot: "
        "auto-deleveraging (adl, the default) or all accounts (socialised).")] = None,
    start: Annotated[str | None, typer.Option(
        "--start", metavar="TIME", help="Start the path here (ISO-8601 with zone).")] = None,
    end: Annotated[str | None, typer.Option(
        "--end", metavar="TIME", help="End the path here (ISO-8601 with zone).")] = None,
    accounts: AccountsOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply real price paths to a book and show every liquidation step."""

    def body() -> None:
        from margin_engine.app.compute import load_book
        from margin_engine.core.errors import InputError
        from margin_engine.core.timeutil import parse_timestamp
        from margin_engine.io.market_file import load_market
        from margin_engine.liquidation.replay import replay

        if breaker not in (None, "on", "off"):
            raise InputError("on or off", field="--breaker", value=breaker)
        if shortfall not in (None, "adl", "socialised"):
            raise InputError("adl or socialised", field="--shortfall", value=shortfall)
        _check_model(model, with_var=False)
        paths = _series_specs(path, "--path")
        assets = _series_specs(asset_path or [], "--asset-path")
        low = parse_timestamp(start, field="--start") if start else None
        high = parse_timestamp(end, field="--end") if end else None
        if low is not None and high is not None and high <= low:
            raise InputError(f"a time after --start {start}", field="--end", value=end)
        if low is not None or high is not None:
            paths, assets = _window_paths(paths, assets, low, high, start, end)
        from dataclasses import replace

        from margin_engine.cli.loading import load_config
        from margin_engine.margin.config import PENALTY_RATE_MAX

        risk = load_config(config)
        settings = risk.liquidation
        overrides: dict[str, Any] = {
            "latency_seconds": checked_flag(latency_seconds, "--latency-seconds"),
            "insurance_fund": checked_flag(insurance_fund, "--insurance-fund"),
            "penalty_rate": checked_flag(penalty_rate, "--penalty-rate", PENALTY_RATE_MAX),
            "shortfall": shortfall}
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        if breaker is not None:
            settings = replace(settings, breaker=replace(settings.breaker,
                                                         enabled=breaker == "on"))
        snapshot = load_market(market)
        result = replay(load_book(portfolio, accounts), snapshot,
                        paths, config=risk, liquidation=settings, model=model,
                        asset_paths=assets or None)
        if as_json:
            _emit_json({**result.totals, "events": result.events})
            return
        from margin_engine.cli.render import print_liquidation
        from margin_engine.core.timeutil import ns_to_iso

        print_liquidation(result.totals, result.events,
                          book_start=ns_to_iso(snapshot.timestamp_ns))

    _guarded(body)


@app.command()
def backtest(
    prices: Annotated[list[str] | None, typer.Option(
        "--prices", help="UNDERLYING=FILE price history (any layout of ../shared/data).")] = None,
    portfolio: Annotated[Path | None, typer.Option(
        "--portfolio", help="Portfolio JSON with the one account to backtest.")] = None,
    market: Annotated[Path | None, typer.Option(
        "--market", help="Market snapshot (default: built at the history's first day, flat "
        "vol 0.6).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="A margin model.")] = None,
    forecaster: Annotated[str | None, typer.Option(
        "--forecaster", help="ewma, garch, har, implied, learned or predictive (predictive "
        "margin; predictive is the default without --model).")] = None,
    compare: Annotated[str | None, typer.Option(
        "--compare", help="Forecasters to compare on common dates, long and short, e.g. "
        "ewma,garch,har,learned,predictive: on --prices and --portfolio, else on every "
        "history of --data.")] = None,
    confidence: Annotated[float, typer.Option("--confidence")] = 0.99,
    mpor_days: Annotated[int, typer.Option("--mpor-days", min=1)] = 1,
    dvol: DvolOpt = None,
    funding: Annotated[list[str] | None, typer.Option(
        "--funding", help="UNDERLYING=FILE funding-rate history (learned features).")] = None,
    z: Annotated[str, typer.Option("--z", help="normal or empirical")] = "normal",
    apc: Annotated[str, typer.Option("--apc", help="none, buffer, floor, stressed_weight")]
    = "none",
    start: Annotated[str | None, typer.Option("--start")] = None,
    end: Annotated[str | None, typer.Option("--end")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Folder for the HTML report")]
    = None,
    study: Annotated[str | None, typer.Option("--study", help="crashes")] = None,
    data: Annotated[Path, typer.Option(
        "--data", help="The shared data folder (--study, --compare without --prices).")] =
    Path("../shared/data"),
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay real history through a margin model or a predictive margin."""

    def body() -> None:
        from margin_engine.backtest.engine import ApcMethod, ZMethod
        from margin_engine.core.errors import InputError

        if z not in tuple(ZMethod):
            raise InputError("normal or empirical", field="--z", value=z)
        if apc not in tuple(ApcMethod):
            raise InputError("none, buffer, floor or stressed_weight", field="--apc", value=apc)
        if study is not None:
            _run_study(study, data, z, as_json)
            return
        if compare is not None:
            if model is not None or forecaster is not None:
                raise InputError("--compare without --model or --forecaster", field="--compare",
                                 value=compare)
            _run_compare(compare, prices, portfolio, market, data, confidence, mpor_days, dvol,
                         funding, z, apc, start, end, output, config, as_json)
            return
        if model is None and forecaster is None:
            chosen: str | None = "predictive"
        else:
            chosen = forecaster
        _run_backtest(prices, portfolio, market, model, chosen, confidence, mpor_days,
                      dvol, funding, z, apc, start, end, output, config, as_json)

    _guarded(body)


def _run_study(study: str, data: Path, z: str, as_json: bool) -> None:
    from rich.text import Text

    from margin_engine.backtest.study import run_study
    from margin_engine.cli.render import print_backtest_study
    from margin_engine.core.errors import InputError

    if study != "crashes":
        raise InputError("crashes", field="--study", value=study)
    console = None if as_json else _stderr_console()
    result = run_study(data, z=z, progress=None if console is None else
                       (lambda text: console.print(Text(text, style="dim"))))
    if as_json:
        _emit_json(result)
    else:
        print_backtest_study(result)


def _stderr_console() -> Any:
    from margin_engine.cli.console import make_console

    return make_console(stderr=True)


def _backtest_inputs(prices: list[str] | None, portfolio: Path | None, market: Path | None,
                     dvol: list[str] | None, funding: list[str] | None) -> tuple[Any, Any, Any]:
    """(book, market snapshot, daily histories) of a backtest's files."""
    from margin_engine.backtest.inputs import daily_history
    from margin_engine.book.columnar import book_from_portfolio
    from margin_engine.cli.loading import load_series
    from margin_engine.core.errors import InputError
    from margin_engine.data.prices import load_funding_file
    from margin_engine.io.market_file import load_market, parse_market
    from margin_engine.io.portfolio_file import load_portfolio
    from margin_engine.market.documents import flat_market_document

    if not prices:
        raise InputError("--prices UNDERLYING=FILE (or --study crashes)", field="--prices")
    if portfolio is None:
        raise InputError("--portfolio PORTFOLIO", field="--portfolio")
    series = load_series(tuple(prices), "--prices")
    vols = load_series(tuple(dvol or ()), "--dvol")
    rates: dict[str, Any] = {}
    for spec in funding or []:
        name, _, path = spec.partition("=")
        rates[name.strip().upper()] = load_funding_file(path)
    histories = {u: daily_history(s, vols.get(u), rates.get(u)) for u, s in series.items()}
    if market is not None:
        snapshot = load_market(market)
    else:
        first = {u: float(h.closes[0]) for u, h in histories.items()}
        day = min(int(h.days_ns[0]) for h in histories.values())
        snapshot = parse_market(flat_market_document(first, day, btc_eth_correlation=None))
    return book_from_portfolio(load_portfolio(portfolio)), snapshot, histories


def _run_backtest(prices: list[str] | None, portfolio: Path | None, market: Path | None,
                  model: str | None, forecaster: str | None, confidence: float,
                  mpor_days: int, dvol: list[str] | None, funding: list[str] | None, z: str,
                  apc: str, start: str | None, end: str | None, output: Path | None,
                  config: Path | None, as_json: bool) -> None:
    from margin_engine.backtest.engine import ApcMethod, PredictiveConfig, ZMethod, run_backtest
    from margin_engine.cli.loading import load_config
    from margin_engine.core.timeutil import parse_day_or_timestamp

    book, snapshot, histories = _backtest_inputs(prices, portfolio, market, dvol, funding)
    progress_console = None if as_json else _stderr_console()
    from rich.progress import Progress

    # a bar on a terminal only: elsewhere its clearing left an empty line before any message
    drawn = progress_console is not None and progress_console.is_terminal
    with Progress(console=progress_console, transient=True, disable=not drawn) as bar:
        task = bar.add_task("backtesting", total=None)
        result = run_backtest(
            book, snapshot, histories,
            config=load_config(config), confidence=confidence, mpor_days=mpor_days,
            model=model, forecaster=forecaster,
            predictive=PredictiveConfig(z=ZMethod(z), apc=ApcMethod(apc)),
            start_ns=parse_day_or_timestamp(start, field="--start") if start else None,
            end_ns=parse_day_or_timestamp(end, field="--end") if end else None,
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    if output is not None:
        from margin_engine.backtest.report import write_report

        page = write_report(result, output, f"Backtest: {result.summary['method']}, "
                            f"{confidence:.1%} / {mpor_days} d")
        if not as_json:
            typer.echo(f"wrote {page}")
    if as_json:
        _emit_json(result.summary)
    else:
        from margin_engine.cli.render import print_backtest

        print_backtest(result.summary)


def _run_compare(compare: str, prices: list[str] | None, portfolio: Path | None,
                 market: Path | None, data: Path, confidence: float, mpor_days: int,
                 dvol: list[str] | None, funding: list[str] | None, z: str, apc: str,
                 start: str | None, end: str | None, output: Path | None, config: Path | None,
                 as_json: bool) -> None:
    from rich.text import Text

    from margin_engine.backtest.compare import compare_forecasters, parse_forecasters
    from margin_engine.backtest.compare_report import print_comparisons, write_comparison_report
    from margin_engine.backtest.engine import ApcMethod, PredictiveConfig, ZMethod
    from margin_engine.backtest.forecast_study import CRASH_DAYS, run_forecast_study
    from margin_engine.cli.loading import load_config
    from margin_engine.core.errors import InputError
    from margin_engine.core.timeutil import parse_day_or_timestamp

    forecasters = parse_forecasters(compare)
    console = None if as_json else _stderr_console()
    progress = None if console is None else (
        lambda text: console.print(Text(text, style="dim")))
    if prices:
        book, snapshot, histories = _backtest_inputs(prices, portfolio, market, dvol, funding)
        comparison = compare_forecasters(
            book, snapshot, histories, forecasters=forecasters, label=", ".join(prices),
            config=load_config(config), confidence=confidence, mpor_days=mpor_days,
            predictive=PredictiveConfig(z=ZMethod(z), apc=ApcMethod(apc)),
            start_ns=parse_day_or_timestamp(start, field="--start") if start else None,
            end_ns=parse_day_or_timestamp(end, field="--end") if end else None,
            progress=progress)
        comparisons = [comparison]
        document: dict[str, Any] = {"confidence": confidence, "mpor_days": mpor_days,
                                    "forecasters": list(forecasters),
                                    "histories": [comparison.to_json()]}
    else:
        for name, value in (("--portfolio", portfolio), ("--market", market),
                            ("--start", start), ("--end", end)):
            if value is not None:
                raise InputError("--prices with it (the --data study backtests a 1-coin "
                                 "perpetual over each whole history)", field=name)
        if z != ZMethod.NORMAL or apc != ApcMethod.NONE:
            raise InputError("--prices with --z or --apc (the --data study uses the "
                             "defaults)", field="--z" if z != ZMethod.NORMAL else "--apc")
        document, comparisons = run_forecast_study(data, forecasters=forecasters,
                                                   confidence=confidence, mpor_days=mpor_days,
                                                   progress=progress)
    if output is not None:
        page = write_comparison_report(document, comparisons, output, CRASH_DAYS)
        if not as_json:
            typer.echo(f"wrote {page}")
    if as_json:
        _emit_json(document)
    else:
        print_comparisons(document, comparisons)


@app.command()
def monitor(
    feed: Annotated[str, typer.Option("--feed", help="file:SYMBOL=PATH[,SYMBOL=PATH...] or "
                                      "nats://HOST:PORT")],
    store: Annotated[str, typer.Option("--store", help="sqlite:PATH or postgresql://...")] =
    "sqlite:out/monitor.db",
    book: Annotated[Path | None, typer.Option(
        "--book", help="Portfolio JSON, a CSV/Parquet positions file or a book folder of "
        "partitions to watch.")] = None,
    accounts: AccountsOpt = None,
    population: Annotated[int | None, typer.Option(
        "--population", min=1, help="Watch a seeded population of N leveraged accounts "
        "instead.")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 1,
    market: Annotated[Path | None, typer.Option(
        "--market", help="Market snapshot (default: at the file feed's first prices).")] = None,
    model: Annotated[str, typer.Option("--model")] = "account",
    speed: Annotated[float, typer.Option("--speed", help="File replay speed (0: as fast as "
                                         "possible).")] = 0.0,
    max_ticks: Annotated[int | None, typer.Option("--max-ticks", min=1)] = None,
    idle_seconds: Annotated[float, typer.Option("--idle-seconds", help="NATS: stop after "
                                                "this long without ticks.")] = 5.0,
    max_outage: Annotated[float, typer.Option(
        "--max-outage", min=0.5, help="NATS: keep reconnecting this many seconds before giving "
        "up (nothing is lost: restart to resume).")] = 60.0,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Watch every account on a price feed; events and pool health into the store."""

    def body() -> None:
        from margin_engine.cli.console import stage_status
        from margin_engine.cli.loading import load_config
        from margin_engine.engine.run import run_monitor

        for value, option in ((speed, "--speed"), (idle_seconds, "--idle-seconds"),
                              (max_outage, "--max-outage")):
            checked_flag(value, option)  # finite, >= 0: typer lets nan, inf and -1 through
        if store.startswith("sqlite:"):
            Path(store[len("sqlite:"):]).parent.mkdir(parents=True, exist_ok=True)
        result = run_monitor(feed=feed, store_spec=store, book=book, population=population,
                             seed=seed, accounts=accounts, market=market,
                             config=load_config(config),
                             model=model, speed=speed, max_ticks=max_ticks,
                             idle_seconds=idle_seconds, max_outage_seconds=max_outage,
                             live=not as_json and sys.stdout.isatty(), status=stage_status)
        if as_json:
            _emit_json(result)
        else:
            from margin_engine.cli.console import make_console

            console = make_console()
            for key, value in result.items():
                if isinstance(value, dict):
                    console.print(f"{key}:")
                    for name, item in value.items():
                        console.print(f"  {name}: {item}")
                elif key != "rejections":
                    console.print(f"{key}: {value}")
            for item in result["rejections"]:
                console.print(f"rejected tick {item['seq']} {item['symbol']}: {item['reason']}")

    _guarded(body)


@app.command()
def replay(
    store: Annotated[str, typer.Option("--store", help="sqlite:PATH or postgresql://...")],
    as_json: JsonOpt = False,
) -> None:
    """Re-run the stored tick log and check it reproduces every number bit for bit."""

    def body() -> None:
        from margin_engine.engine.run import run_replay

        result = run_replay(store)
        if as_json:
            _emit_json(result)
        else:
            for key, value in result.items():
                typer.echo(f"{key}: {value}")
        if not (result["equal"] and result["complete"]):
            raise typer.Exit(code=1)

    _guarded(body)


@app.command()
def report(
    output: Annotated[Path, typer.Option("--output", help="Folder for report.html and the "
                                         "PNG charts.")] = Path("out/report"),
    params: ParamsOpt = None,
    history: HistoryOpt = None,
    dvol: DvolOpt = None,
    config: ConfigOpt = None,
) -> None:
    """HTML report: margin efficiency per strategy under each model (var with --history)."""

    def body() -> None:
        from margin_engine.cli.loading import build_models, load_config
        from margin_engine.demo.report import build_report

        built = build_models(_model_data(params, history, dvol, None, None))
        document = build_report(output, built, load_config(config))
        if "var" not in document["models"]:
            typer.echo("note: the var model needs --history UNDERLYING=FILE; left out", err=True)
        typer.echo(f"wrote {output / 'report.html'}")

    _guarded(body)


@app.command()
def calibrate(
    prices: Annotated[list[str], typer.Option(
        "--prices", help="UNDERLYING=FILE price history (any layout of ../shared/data).")],
    dvol: Annotated[list[str] | None, typer.Option(
        "--dvol", help="UNDERLYING=FILE implied-vol index history (Deribit DVOL).")] = None,
    confidence: Annotated[float, typer.Option("--confidence")] = 0.99,
    mpor_days: Annotated[int, typer.Option("--mpor-days", min=1)] = 1,
    output: Annotated[Path | None, typer.Option("--output", help="Write the parameter file "
                                                "here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Calibrate the sensitivity model's risk weights and correlations on real history."""

    def body() -> None:
        from margin_engine.margin.calibration import calibrate as run_calibration

        params = run_calibration(_series_specs(prices, "--prices"),
                                 _series_specs(dvol or [], "--dvol") or None,
                                 confidence=confidence, mpor_days=mpor_days)
        if output is not None:
            params.save(output)
            typer.echo(f"wrote {output}", err=True)
        if as_json or output is None:
            _emit_json(params.to_document())

    _guarded(body)


@simulate_app.command("crashes")
def simulate_crashes(
    data: Annotated[Path, typer.Option("--data", help="The shared data folder.")] =
    Path("../shared/data"),
    accounts: Annotated[int, typer.Option("--accounts", min=10,
                                          help="Seeded leveraged accounts.")] = 500,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed of the population.")] = 1,
    latency_seconds: Annotated[float, typer.Option(
        "--latency-seconds", min=0.0, help="Trigger-to-execution delay in seconds.")] = 60.0,
    insurance_fund: Annotated[float, typer.Option(
        "--insurance-fund", min=0.0, help="Insurance fund at the start, USD.")] = 0.0,
    penalty_rate: Annotated[float, typer.Option(
        "--penalty-rate", min=0.0, help="Liquidation penalty, a fraction of the closed "
        "notional.")] = 0.01,
    as_json: JsonOpt = False,
) -> None:
    """Crash windows (breaker off and on) and the 2023 USDC depeg on a seeded population."""

    def body() -> None:
        from margin_engine.liquidation.studies import crash_replays, depeg_study
        from margin_engine.margin.config import PENALTY_RATE_MAX

        crashes = crash_replays(
            data, accounts=accounts, seed=seed,
            latency_seconds=checked_flag(latency_seconds, "--latency-seconds"),
            insurance_fund=checked_flag(insurance_fund, "--insurance-fund"),
            penalty_rate=checked_flag(penalty_rate, "--penalty-rate", PENALTY_RATE_MAX))
        depeg = depeg_study(data, accounts=accounts, seed=seed)
        if as_json:
            _emit_json({"crashes": crashes, "usdc_depeg": depeg})
            return
        from margin_engine.cli.render import print_crash_study

        print_crash_study(crashes, depeg)

    _guarded(body)


@simulate_app.command("cascade")
def simulate_cascade(
    shock: Annotated[str, typer.Option(
        "--shock", help="venue-token-90, usdc-2023, ust-2022 (USDT follows UST), "
        "crash-2025-10-10, crash-2024-08-05, SYMBOL=-90%, SYMBOL=ust-2022 or SYMBOL=FILE; "
        "comma-separated to combine.")],
    population: Annotated[int, typer.Option("--population", min=1,
                                            help="Seeded venue accounts.")] = 10_000,
    modes: Annotated[str, typer.Option(
        "--modes", help="Margin modes compared: isolated, cross, portfolio, account (each "
        "account's own).")] = "isolated,cross,portfolio",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed of the population.")] = 1,
    max_rounds: Annotated[int, typer.Option("--max-rounds", min=1,
                                            help="Rounds at most.")] = 10,
    impact: Annotated[str, typer.Option("--impact",
                                        help="linear or square-root.")] = "square-root",
    depth: Annotated[list[str] | None, typer.Option(
        "--depth", metavar="SYMBOL=USD", help="1 % depth of a symbol's book, USD; "
        "repeatable.")] = None,
    insurance_fund: Annotated[float | None, typer.Option(
        "--insurance-fund", min=0.0, help="Insurance fund at the start, USD (default: "
        "0.5 % of the open interest).")] = None,
    penalty_rate: Annotated[float, typer.Option(
        "--penalty-rate", min=0.0, help="Liquidation penalty, a fraction of the closed "
        "notional.")] = 0.01,
    shortfall: Annotated[str, typer.Option("--shortfall", help="adl or socialised.")] = "adl",
    collateral: Annotated[str, typer.Option(
        "--collateral", help="per-mode (each mode's IM / utilisation) or shared (the largest "
        "IM of the modes).")] = "per-mode",
    collateral_sales: Annotated[bool, typer.Option(
        "--collateral-sales/--no-collateral-sales",
        help="Liquidated accounts sell collateral to cover a negative USD balance.")] = True,
    data: Annotated[Path, typer.Option("--data", help="The shared data folder.")] =
    Path("../shared/data"),
    output: Annotated[Path, typer.Option("--output", help="Folder of the HTML report.")] =
    Path("out/cascade"),
    as_json: JsonOpt = False,
) -> None:
    """Liquidation cascade of a shock through a seeded venue, under each margin mode."""

    def body() -> None:
        from margin_engine.cli.cascade_view import print_study, round_bars
        from margin_engine.cli.console import make_console
        from margin_engine.core.errors import InputError
        from margin_engine.core.names import check_name
        from margin_engine.core.numbers import parse_float
        from margin_engine.liquidation.cascade import CascadeConfig
        from margin_engine.liquidation.cascade_report import study_document, write_html
        from margin_engine.liquidation.cascade_study import parse_modes, run_study
        from margin_engine.liquidation.impact import DEFAULT_DEPTH, ImpactConfig, ImpactLaw
        from margin_engine.liquidation.venue_population import CollateralSizing
        from margin_engine.margin.config import PENALTY_RATE_MAX

        laws = {law.value: law for law in ImpactLaw}
        if impact not in laws:
            raise InputError(f"one of {', '.join(laws)}", field="--impact", value=impact)
        sizings = {s.value: s for s in CollateralSizing}
        if collateral not in sizings:
            raise InputError(f"one of {', '.join(sizings)}", field="--collateral",
                             value=collateral)
        depths = dict(DEFAULT_DEPTH)
        for item in depth or []:
            symbol, sep, value = item.partition("=")
            if not sep or not symbol.strip():
                raise InputError("SYMBOL=USD (the 1 % depth)", field="--depth", value=item)
            name = check_name(symbol.strip(), field="--depth")
            depths[name] = parse_float(value.strip(), field=f"--depth {name}",
                                       strictly_positive=True)
        settings = CascadeConfig(
            max_rounds=max_rounds, impact=ImpactConfig(law=laws[impact], depth_usd=depths),
            penalty_rate=checked_flag(penalty_rate, "--penalty-rate", PENALTY_RATE_MAX),
            shortfall=shortfall, insurance_fund=checked_flag(insurance_fund, "--insurance-fund"),
            collateral_sales=collateral_sales)
        chosen = parse_modes(modes)
        console = make_console(stderr=True)
        with round_bars(console, enabled=not as_json) as (on_round, on_stage):
            study = run_study(shock_spec=shock, accounts=population, modes=chosen, seed=seed,
                              data=data, sizing=sizings[collateral], cascade=settings,
                              progress=on_round, stage=on_stage)
        page = write_html(study, output)
        if as_json:
            _emit_json({**study_document(study), "report": str(page)})
            return
        print_study(make_console(), study, str(page))

    _guarded(body)


StoreOpt = Annotated[str, typer.Option("--store", help="sqlite:PATH or postgresql://...")]


@app.command()
def serve(
    store: StoreOpt = "sqlite:out/service.db",
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    market: Annotated[Path | None, typer.Option(
        "--market", help="Market for stored accounts when the store has no monitor (a "
        "monitor's store brings its own, moved by its ticks).")] = None,
    config: ConfigOpt = None,
    model: Annotated[str, typer.Option("--model", help="Model of stored accounts without a "
                                       "monitor: a model or 'account'.")] = "account",
    rate: Annotated[float, typer.Option("--rate", min=0.001, help="Requests a second per key "
                                        "(token bucket), unless the key sets its own.")] = 20.0,
    burst: Annotated[float, typer.Option("--burst", min=1.0, help="Bucket size per key.")] =
    40.0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes (each with its "
                                         "own rate-limit buckets).")] = 1,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log")] = True,
) -> None:
    """HTTP API (OpenAPI at /docs), WebSocket event stream and dashboard at /."""

    def body() -> None:
        from margin_engine.app.compute import ModelChoice, model_choice
        from margin_engine.core.errors import InputError
        from margin_engine.core.net import listen_problem
        from margin_engine.service.server import serve as run_server
        from margin_engine.service.settings import ServiceSettings

        checked_flag(rate, "--rate")  # finite (typer's min lets inf through)
        checked_flag(burst, "--burst")
        problem = listen_problem(host, port)
        if problem is not None:
            option, reason = problem
            raise InputError(f"an address this server can listen on ({reason})",
                             field=option, value=host if option == "--host" else port)
        if store.startswith("sqlite:"):
            path = Path(store[len("sqlite:"):])
            if not path.exists():
                typer.echo(f"note: {path} did not exist: serving a new, empty store (no "
                           "accounts, no API keys: `margin-engine keys create --store "
                           f"{store}`)", err=True)
        choice = model_choice(model, field="--model")
        if choice is ModelChoice.VAR:
            raise InputError("a model that needs no price history (the service has none for "
                             "var)", field="--model", value=model)
        _service_store(store, create=True).close()  # a bad store: one error, before start
        settings = ServiceSettings(store=store, market=market, config=config,
                                   model=choice.value, rate_per_second=rate, burst=burst)
        run_server(settings, host=host, port=port, workers=workers, access_log=access_log)

    _guarded(body)


keys_app = typer.Typer(no_args_is_help=True, help="API keys of the HTTP service (stored "
                       "hashed with scrypt).")
app.add_typer(keys_app, name="keys")


def _service_store(store: str, *, create: bool = False) -> Any:
    """The service's store; a SQLite file is made (with its folder) only when ``create``."""
    from margin_engine.core.errors import InputError
    from margin_engine.store.base import open_store

    if store.startswith("sqlite:"):
        path = Path(store[len("sqlite:"):])
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise InputError("an existing store (`margin-engine keys create` makes one)",
                             field="--store", value=str(path))
    repository = open_store(store)
    repository.initialise_service()  # type: ignore[attr-defined]
    return repository


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option("--scope", help="read, trade or admin (each implies "
                                       "the ones before it)")],
    store: StoreOpt = "sqlite:out/service.db",
    account: Annotated[str | None, typer.Option(
        "--account", help="Bind the key to this account (it sees that account only).")] = None,
    label: Annotated[str, typer.Option("--label", help="A note for `keys list`.")] = "",
    rate: Annotated[float | None, typer.Option("--rate", help="Requests a second (default: "
                                               "the server's).")] = None,
    burst: Annotated[float | None, typer.Option("--burst")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key; the secret is printed once and only its scrypt hash is stored."""

    def body() -> None:
        from margin_engine.service.keys import create_key, parse_scopes

        repository = _service_store(store, create=True)
        try:
            created = create_key(repository, scopes=parse_scopes(scope), account=account,
                                 label=label, rate_per_second=rate, burst=burst)
        finally:
            repository.close()
        if as_json:
            _emit_json({"key_id": created.key_id, "key": created.token,
                        "scopes": sorted(s.value for s in created.scopes),
                        "account": created.account})
        else:
            typer.echo(created.token)
            typer.echo(f"key id {created.key_id}: keep the key above, it is not shown again",
                       err=True)

    _guarded(body)


@keys_app.command("list")
def keys_list(store: StoreOpt = "sqlite:out/service.db", as_json: JsonOpt = False) -> None:
    """Every key: id, scopes, account, label, created, revoked (never a secret or hash)."""

    def body() -> None:
        from margin_engine.service.keys import describe

        repository = _service_store(store)
        try:
            rows = [describe(row) for row in repository.key_rows()]
        finally:
            repository.close()
        if as_json:
            _emit_json({"keys": rows})
            return
        if not rows:
            typer.echo(f"no keys in {store}", err=True)
        for row in rows:
            state = "revoked " + str(row["revoked"]) if row["revoked"] else "live"
            scopes = ",".join(row["scopes"])  # type: ignore[arg-type]
            typer.echo(f"{row['key_id']}  {scopes:<16} {row['account'] or '-':<16} "
                       f"{state:<32} {row['label']}")

    _guarded(body)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (from `keys list`).")],
    store: StoreOpt = "sqlite:out/service.db",
) -> None:
    """Revoke a key (kept, marked revoked, for the audit trail)."""

    def body() -> None:
        from margin_engine.service.keys import revoke_key

        repository = _service_store(store)
        try:
            revoke_key(repository, key_id)
        finally:
            repository.close()
        typer.echo(f"revoked {key_id}", err=True)

    _guarded(body)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
