"""Results of a large book written as they are made: ``compute --json`` and ``compare --json``
start writing before the last account is made, and ``compute``'s tables keep a bounded number
of accounts, with the same text as before. Before: a million accounts' results were held
whole (``compute --json`` 56 s and 6.5 GB, ``compute`` 40 s and 5.1 GB to print its summary,
``compare --json`` of 100,000 accounts 95 s and 4.4 GB)."""

from __future__ import annotations

import io
import json
import math
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from margin_engine.cli.app import app
from margin_engine.cli.render import LISTED_ACCOUNTS, print_compute
from margin_engine.io import json_stream
from margin_engine.margin import run as model_run
from tests.conftest import shown_on_terminal

ITEMS: list[list[Any]] = [
    [], [1], ["a\nb"], [{"a": 1, "b": [1, 2, {"c": None}], "d": {}}],
    [{"x": k, "s": "é\t\"", "y": [k, [k]]} for k in range(7)], [[], {}, "x", None, 1.5],
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 2_000])
@pytest.mark.parametrize("indent", [None, 0, 2, 4])
@pytest.mark.parametrize("sort_keys", [False, True])
def test_the_text_is_json_dumps_of_the_whole_document(monkeypatch: pytest.MonkeyPatch,
                                                      chunk: int, indent: int | None,
                                                      sort_keys: bool) -> None:
    """With sorted keys the list stands among the head's keys (the monitor's stored setup:
    "accounts" before "schema"), a head's nested lists and its text around the list kept."""
    monkeypatch.setattr(json_stream, "CHUNK", chunk)
    for items in ITEMS:
        for head in ({"model": "portfolio", "timestamp": "2025-06-01T00:00:00Z"}, {},
                     {"schema": "s", "b": {"accounts": [], "z": [1, ["a"]]}, "aa": "[]"}):
            want = json.dumps({**head, "accounts": items}, indent=indent, sort_keys=sort_keys,
                              allow_nan=False)
            got = "".join(json_stream.json_document_text(head, "accounts", items, indent,
                                                         sort_keys))
            assert got == want


def test_a_number_json_cannot_hold_is_refused_before_anything_is_given_out() -> None:
    pieces = json_stream.json_document_text({"model": "m"}, "accounts", [1.0, math.nan], None)
    with pytest.raises(ValueError, match="Out of range float"):
        next(pieces)


def test_the_list_key_is_not_in_the_head() -> None:
    with pytest.raises(ValueError, match="'accounts'"):
        next(json_stream.json_document_text({"accounts": 1}, "accounts", [], None))


def _book(tmp_path: Path, accounts: int) -> list[str]:
    """A bulk book of ``accounts`` accounts and its market, as CLI arguments."""
    from margin_engine.batch.book import write_part
    from margin_engine.bench.run import _book as bench_book
    from margin_engine.bench.run import instrument_names, random_book_columns
    from margin_engine.demo.market import demo_market_document

    names = instrument_names(60)
    write_part(bench_book(names, random_book_columns(accounts, 4, names, 3)),
               tmp_path / "book", "part-00000")
    (tmp_path / "market.json").write_text(json.dumps(demo_market_document()))
    return [str(tmp_path / "book" / "positions" / "part-00000.parquet"), "--accounts",
            str(tmp_path / "book" / "accounts" / "part-00000.parquet"), "--market",
            str(tmp_path / "market.json")]


def _written_while_made(monkeypatch: pytest.MonkeyPatch, module: Any = model_run,
                        name: str = "account_margin") -> list[int]:
    """Spy on ``module.name``, the making of one account's results: the length of stdout
    when each is made."""
    written: list[int] = []
    make = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        sys.stdout.flush()
        written.append(len(sys.stdout.buffer.getvalue()))  # type: ignore[union-attr]
        return make(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return written


@pytest.mark.parametrize("command", ["compute", "compare"])
def test_json_results_are_written_before_the_last_account_is_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    monkeypatch.setattr(json_stream, "CHUNK", 100)
    args = _book(tmp_path, 450)
    written = _written_while_made(monkeypatch)
    out = CliRunner().invoke(app, [command, *args, "--json", "--liquidation-prices", "off"])
    assert out.exit_code == 0, out.output
    document = json.loads(out.stdout)
    assert [a["id"] for a in document["accounts"]] == [f"a{k}" for k in range(450)]
    made = len(written) // (1 if command == "compute" else len(document["models"]))
    assert made == 450
    assert written[0] == 0  # the first chunk is made before anything is written
    assert 0 < written[-1] < len(out.stdout)  # ... and the last account after some were


def test_compare_tables_make_only_the_accounts_they_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``compare`` without --json lists the first 100 accounts; it made every account's
    results under every model first (100,000 accounts: 4.4 GB)."""
    args = _book(tmp_path, 450)
    made = _written_while_made(monkeypatch)
    out = CliRunner().invoke(app, ["compare", *args], env={"COLUMNS": "100"})
    assert out.exit_code == 0, out.output
    assert "The first 100 of 450 accounts (--json lists all)." in out.stdout
    assert "a99 " in out.stdout
    assert "a100 " not in out.stdout
    assert len(made) == 100 * 4  # the four models without a price history


def test_explain_of_every_account_is_written_as_it_is_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``explain`` looked each account up by a scan of the book's ids (20,000 accounts of a
    portfolio file: 10.9 s, now 5.1 s) and held every explanation before writing any."""
    from margin_engine.margin import explain as model_explain

    monkeypatch.setattr(json_stream, "CHUNK", 50)
    args = _book(tmp_path, 240)
    written = _written_while_made(monkeypatch, model_explain, "explain_account")
    out = CliRunner().invoke(app, ["explain", *args, "--json"])
    assert out.exit_code == 0, out.output
    ids = [e["account"] for e in json.loads(out.stdout)["accounts"]]
    assert ids == [f"a{k}" for k in range(240)]
    assert written[0] == 0
    assert 0 < written[-1] < len(out.stdout)


def test_explain_reads_a_bulk_book_with_its_accounts_file(tmp_path: Path) -> None:
    """A bulk book's collateral and modes are in its accounts file: without ``--accounts``
    (there was no such option) ``explain`` margined every account with no collateral, so
    coin collateral was missing from the scenarios. Its explanation is now ``compute
    --explain``'s, account by account."""
    args = _book(tmp_path, 30)
    runner = CliRunner()
    computed = json.loads(runner.invoke(app, ["compute", *args, "--explain", "--json",
                                              "--liquidation-prices", "off"]).stdout)
    by_id = {a["id"]: a["explain"] for a in computed["accounts"]}
    coins = [a for a, e in by_id.items()
             if e["underlyings"]["BTC"]["collateral_pnl_in_worst_scenario"] != 0.0]
    chosen = [coins[1], "a3", coins[0]]  # BTC collateral in the scenarios of two of them
    out = runner.invoke(app, ["explain", *args, "--json",
                              *[x for a in chosen for x in ("--account", a)]])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["accounts"] == [by_id[a] for a in chosen]
    missing = runner.invoke(app, ["explain", *args, "--account", "a3", "--account", "zz"])
    assert missing.exit_code == 2
    assert "--account" in missing.output
    assert "'zz'" in missing.output


def test_the_cycle_collector_is_off_while_the_accounts_are_made_and_on_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The accounts' results are acyclic and dropped by the thousand; the collector's passes
    over them (each batch promoted to its old generation before it is dropped) found nothing
    and took about a tenth of ``compute --json``'s time on 1,000,000 accounts."""
    import gc

    args = _book(tmp_path, 30)
    seen: list[bool] = []
    make = model_run.account_margin

    def watched(*a: Any, **k: Any) -> Any:
        seen.append(gc.isenabled())
        return make(*a, **k)

    monkeypatch.setattr(model_run, "account_margin", watched)
    assert gc.isenabled()
    for extra in (["--json"], []):
        out = CliRunner().invoke(app, ["compute", *args, *extra, "--liquidation-prices", "off"])
        assert out.exit_code == 0, out.output
        assert gc.isenabled()
    assert len(seen) == 60
    assert not any(seen)


class _Entry(dict[str, Any]):
    """An account's entry that can be watched (a dict cannot be referred to weakly)."""

    __slots__ = ("__weakref__",)


def test_the_tables_hold_a_bounded_number_of_accounts_and_print_the_same() -> None:
    """A one-pass iterable of 5,000 accounts under two models: at most the first and the
    nearest LISTED_ACCOUNTS of each model are alive at any time, the 100 listed are those
    nearest liquidation (highest MM / equity, then no equity left, deepest first, then book
    order), and the text is that of the same accounts given as a list."""
    alive = [0]
    most = [0]

    def gone() -> None:
        alive[0] -= 1

    def entries() -> Iterator[_Entry]:
        for k in range(5_000):
            equity = float((k * 7919) % 5_000 - 1_500)
            mm = 300.0 + (k % 17) * 40.0
            entry = _Entry(id=f"a{k}", model="portfolio" if k % 3 else "cross",
                           adjusted_equity=equity, initial_margin=1.25 * mm,
                           maintenance_margin=mm, excess=equity - 1.25 * mm,
                           margin_ratio=mm / equity if equity > 0 else None,
                           efficiency=None, gross_notional=10.0 * k)
            weakref.finalize(entry, gone)
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            yield entry

    def nearness(entry: _Entry) -> tuple[float, float]:
        ratio = entry["margin_ratio"]
        if ratio is None:
            below = entry["adjusted_equity"] < entry["maintenance_margin"]
            ratio = math.inf if below else 0.0
        return -ratio, entry["adjusted_equity"] - entry["maintenance_margin"]

    streamed, listed = (Console(width=100, record=True, file=io.StringIO()) for _ in range(2))
    print_compute({"model": "account", "timestamp": "t", "accounts": entries()}, streamed)
    assert most[0] <= 2 * (2 * LISTED_ACCOUNTS) + 1
    every = list(entries())
    print_compute({"model": "account", "timestamp": "t", "accounts": every}, listed)
    text = streamed.export_text()
    assert text == listed.export_text()
    for model in ("portfolio", "cross"):
        want = [e["id"] for e in sorted((e for e in every if e["model"] == model),
                                        key=nearness)[:LISTED_ACCOUNTS]]
        table = text.split(f"{model} model:")[1].split(" model:")[0]
        assert [line.split()[0] for line in table.splitlines()
                if line.split() and line.split()[0].startswith("a")
                and line.split()[0][1:].isdigit()] == want
    assert text.count("The 100 nearest liquidation") == 2


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """``compute --json | head -c 100``: the writes meet a closed pipe. Before: 'margin-engine:
    error: Broken pipe' on stderr, exit code 2 (and more often now that the document is
    written as it is made). Now nothing on stderr and 141, as a shell reports a command ended
    by SIGPIPE."""
    import subprocess

    args = _book(tmp_path, 450)
    command = [sys.executable, "-m", "margin_engine.cli.app", "compute", *args, "--json",
               "--liquidation-prices", "off"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stderr is not None
    head = process.stdout.read(100)
    process.stdout.close()
    error = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, error
    assert head.startswith(b'{"model": "account"')
    assert error == ""


def test_a_broken_pipe_elsewhere_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Only stdout's reader going away ends a command quietly: a broken pipe or socket of
    another kind (a server that went away) is an error line and exit code 2."""
    import typer

    from margin_engine.cli import app as cli_app

    def body() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(typer.Exit) as ended:
        cli_app._guarded(body)
    assert ended.value.exit_code == 2
    assert capsys.readouterr().err == "margin-engine: error: Broken pipe\n"


def test_on_a_terminal_the_status_line_leaves_stdout_to_its_file(tmp_path: Path) -> None:
    """stderr a terminal, stdout a file (`compute --json > out.json` typed by hand): a line on
    the terminal says what the command is doing and counts the accounts written, and the
    whole document goes to the file. rich's status redirects stdout through its display by
    default: the document went to the terminal, a line at a time, and the file stayed empty."""
    args = _book(tmp_path, 450)
    out = tmp_path / "out.json"
    shown = shown_on_terminal(["compute", *args, "--json", "--liquidation-prices", "off"], out)
    document = json.loads(out.read_text())
    assert len(document["accounts"]) == 450
    assert b"reading the book, margining it" in shown
    assert b'"accounts"' not in shown
