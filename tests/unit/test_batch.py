"""``margin-engine batch``: a partitioned Parquet book margined one partition per Dask task (a
LocalCluster of 2 workers here) gives the single-process results bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from margin_engine.batch.book import partitions, read_book, write_partitioned_book
from margin_engine.batch.run import RESULT_COLUMNS, read_results, run_batch
from margin_engine.book.bound import bind_market
from margin_engine.cli.app import app
from margin_engine.core.errors import InputError
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import get_model
from margin_engine.margin.run import margins_by_mode
from tests.unit.level_books import declared_instruments_document, level_market, random_level_book


@pytest.fixture(scope="module")
def book_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batch") / "book"
    bound = random_level_book(600, seed=31, asked_margins=False)
    write_partitioned_book(bound.book, folder, 4, declared_instruments_document())
    return folder


def single_process(folder: Path, model: str = "account") -> dict[str, np.ndarray]:
    """The whole book read and margined at once in this process."""
    bound = bind_market(read_book(folder), parse_market(level_market()))
    config = RiskConfig()
    margins = margins_by_mode(bound, model, lambda name: get_model(name).compute(bound, config))
    return {"account": np.array(bound.book.account_ids), "equity": margins.equity,
            "adjusted_equity": margins.adjusted_equity, "initial_margin": margins.initial,
            "maintenance_margin": margins.maintenance,
            "gross_notional": bound.account_gross_notional()}


def test_local_cluster_of_two_workers_gives_the_single_process_results(
        book_folder: Path, tmp_path: Path) -> None:
    summary = run_batch(book_folder, level_market(), RiskConfig().to_dict(),
                        output=tmp_path / "out", scheduler="local", workers=2)
    assert summary["partitions"] == 4
    assert summary["accounts"] == 600
    assert len(summary["peak_rss_mb_per_worker"]) == 2  # both workers took partitions
    got = read_results(tmp_path / "out")
    assert got.column_names == list(RESULT_COLUMNS)
    want = single_process(book_folder)
    assert got.column("account").to_pylist() == want["account"].tolist()
    for name in ("equity", "adjusted_equity", "initial_margin", "maintenance_margin",
                 "gross_notional"):
        np.testing.assert_array_equal(got.column(name).to_numpy(), want[name], err_msg=name)


def test_a_running_scheduler_is_reached_by_its_address(book_folder: Path,
                                                       tmp_path: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        run_batch(book_folder, level_market(), RiskConfig().to_dict(), model="portfolio",
                  output=tmp_path / "remote", scheduler=address, only=["part-00001"])
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), model="portfolio",
              output=tmp_path / "here", scheduler="none", only=["part-00001"])
    remote = pq.read_table(tmp_path / "remote" / "part-00001.parquet")
    assert remote.equals(pq.read_table(tmp_path / "here" / "part-00001.parquet"))
    assert set(remote.column("model").to_pylist()) == {"portfolio"}


@pytest.mark.parametrize("scheduler", ["tcp://", "tcp://127.0.0.1:notaport", "tcp://:8786",
                                       "tcp://host:0", "tcp://host:65536", "udp://host:8786",
                                       "tcp://host:８７８６", "LOCAL", "tcp://::1:8786",
                                       "tcp://a b:8786", "tcp://host/x:8786"])
def test_a_malformed_scheduler_is_refused_before_anything_is_written(
        book_folder: Path, tmp_path: Path, scheduler: str) -> None:
    """Before: a traceback from dask ('missing port number', 'invalid literal for int()')."""
    market = tmp_path / "market.json"
    market.write_text(json.dumps(level_market()))
    out = CliRunner().invoke(app, ["batch", "--book", str(book_folder), "--market", str(market),
                                   "--scheduler", scheduler, "--output", str(tmp_path / "o")])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("margin-engine: error: field '--scheduler': got "), out.output
    assert "Traceback" not in out.output
    assert not (tmp_path / "o").exists()


def test_what_a_worker_killed_while_writing_left_is_removed(book_folder: Path,
                                                            tmp_path: Path) -> None:
    """A worker killed in the middle of writing a part leaves its hidden temporary; another
    writes the part again. Before: the temporary stayed in the output folder until the next
    run (here the killed writer's file is made while the run goes on)."""
    out = tmp_path / "out"
    stale = out / ".part-00001.parquet.999999.tmp"
    other = out / ".notes.txt.1.tmp"  # not a temporary of this run's parts: kept

    def killed_writer(_: dict[str, object]) -> None:
        stale.write_bytes(b"PAR1 half a part")
        other.write_text("someone else's")

    run_batch(book_folder, level_market(), RiskConfig().to_dict(), scheduler="none",
              output=out, progress=killed_writer)
    assert not stale.exists()
    assert other.read_text() == "someone else's"
    assert read_results(out).num_rows == 600


def test_a_second_batch_into_a_folder_being_written_is_refused(book_folder: Path,
                                                                tmp_path: Path) -> None:
    """Two runs into one folder (a slow nightly run and the next one): the second is refused
    while the first holds the folder, and the first's results are untouched. Before: the
    second deleted the first's manifest and wrote its parts among the first's."""
    import fcntl
    import subprocess
    import sys

    out = tmp_path / "out"
    config = RiskConfig().to_dict()
    run_batch(book_folder, level_market(), config, scheduler="none", output=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    holder = subprocess.Popen(  # another process holding the folder, as a running batch does
        [sys.executable, "-c", "import fcntl, sys, time\n"
         f"h = open({str(out / '_batch.lock')!r}, 'a')\n"
         "fcntl.flock(h, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match="no other batch is writing to"):
            run_batch(book_folder, level_market(), config, scheduler="none", output=out)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    finally:
        holder.kill()
        holder.wait()
    with open(out / "_batch.lock", "a") as handle:  # the holder's death released it
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)
    run_batch(book_folder, level_market(), config, scheduler="none", output=out)
    assert read_results(out).num_rows == 600


def test_an_output_folder_that_cannot_be_made_is_named(book_folder: Path,
                                                       tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(InputError, match=r"--output.*expected an output folder that can be "
                       r"created here \(Not a directory\)"):
        run_batch(book_folder, level_market(), RiskConfig().to_dict(), scheduler="none",
                  output=tmp_path / "a-file" / "out")


def test_progress_counts_the_parts_as_they_come_back(book_folder: Path,
                                                     tmp_path: Path) -> None:
    seen: list[tuple[int, int, str]] = []
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), scheduler="none",
              output=tmp_path / "out",
              progress=lambda item: seen.append((item["done"], item["total"],
                                                 item["partition"])))
    assert seen == [(k + 1, 4, f"part-0000{k}") for k in range(4)]


def test_a_filesystem_without_locks_runs_unguarded_and_says_so(
        book_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import errno
    import fcntl

    def no_locks(*_: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), scheduler="none",
              output=tmp_path / "out")
    assert read_results(tmp_path / "out").num_rows == 600
    assert "no lock (" in caplog.text


def test_the_summary_totals_equal_one_process_over_the_whole_book(book_folder: Path,
                                                                   tmp_path: Path) -> None:
    """IM, MM and gross notional summed, and the accounts liquidatable (adjusted equity < MM)
    or in a margin call (< IM only), as the service's pool health counts them."""
    summary = run_batch(book_folder, level_market(), RiskConfig().to_dict(), scheduler="none",
                        output=tmp_path / "out")
    bound = bind_market(read_book(book_folder), parse_market(level_market()))
    config = RiskConfig()
    margins = margins_by_mode(bound, "account", lambda name: get_model(name).compute(bound,
                                                                                      config))
    liquidatable = margins.gap(1.0) < 0.0
    in_call = (margins.adjusted_equity < margins.initial) & ~liquidatable
    assert summary["accounts_liquidatable"] == int(liquidatable.sum()) > 0
    assert summary["accounts_in_margin_call"] == int(in_call.sum()) > 0
    assert summary["initial_margin_usd"] == pytest.approx(margins.initial.sum(), rel=1e-12)
    assert summary["maintenance_margin_usd"] == pytest.approx(margins.maintenance.sum(),
                                                              rel=1e-12)
    assert summary["gross_notional_usd"] == pytest.approx(
        float(np.sum(bound.account_gross_notional())), rel=1e-12)


def test_more_local_workers_than_cpus_are_refused_before_any_starts(book_folder: Path,
                                                                    tmp_path: Path) -> None:
    """Before: a typo such as --workers 200 started 200 processes of a few hundred MB each."""
    import os

    too_many = len(os.sched_getaffinity(0)) + 1
    with pytest.raises(InputError, match="worker processes on this machine's") as raised:
        run_batch(book_folder, level_market(), RiskConfig().to_dict(), scheduler="local",
                  workers=too_many, output=tmp_path / "out")
    assert raised.value.field == "--workers"
    assert not (tmp_path / "out").exists()


def test_batch_command_writes_one_result_part_per_partition(book_folder: Path,
                                                            tmp_path: Path) -> None:
    market = tmp_path / "market.json"
    market.write_text(json.dumps(level_market()))
    out = CliRunner().invoke(app, ["batch", "--book", str(book_folder), "--market", str(market),
                                   "--scheduler", "none", "--output", str(tmp_path / "o"),
                                   "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["partitions"] == 4
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "_batch.json", "_batch.lock",  # (the lock stays: see run._claim_output)
        *(f"part-0000{k}.parquet" for k in range(4))]  # no temporary left
    np.testing.assert_array_equal(read_results(tmp_path / "o").column("initial_margin"),
                                  single_process(book_folder)["initial_margin"])


def test_batch_names_the_expiries_it_settled_at_the_index(book_folder: Path,
                                                           tmp_path: Path) -> None:
    """The book holds ETH and BTC 30MAY25 positions, settled on 30 May; the market gives
    BTC's settlement price only: ETH's are settled at the index. Each task says which
    expiries it settled so, and the command names them on stderr as ``compute`` does (before:
    nothing); with ETH's price given, nothing is said."""
    document = level_market()
    for name, settlements in (("a", document["settlements"]),
                              ("b", {**document["settlements"], "ETH-30MAY25": 1950})):
        market = tmp_path / f"{name}.json"
        market.write_text(json.dumps({**document, "settlements": settlements}))
        out = CliRunner().invoke(app, ["batch", "--book", str(book_folder), "--market",
                                       str(market), "--scheduler", "none", "--output",
                                       str(tmp_path / name), "--json"])
        assert out.exit_code == 0, out.output
        summary = json.loads(out.stdout)
        if name == "a":
            assert summary["settled_at_index"] == [{"underlying": "ETH",
                                                    "expiry": "2025-05-30T08:00:00Z"}]
            assert "after the expiry of ETH 2025-05-30, held in the book" in out.stderr
            assert all(p["settled_at_index"] == [["ETH", 1748592000000000000]]
                       for p in summary["parts"])
        else:
            assert summary["settled_at_index"] == []
            assert out.stderr == ""
    text = CliRunner().invoke(app, ["batch", "--book", str(book_folder), "--market",
                                    str(tmp_path / "a.json"), "--scheduler", "none",
                                    "--output", str(tmp_path / "c")], env={"COLUMNS": "100"})
    assert text.exit_code == 0, text.output
    assert "ETH 2025-05-30" in text.stderr
    assert "1748592000000000000" not in text.stdout  # no raw tuple in the table


def _assert_single_process(results: pa.Table, folder: Path) -> None:
    want = single_process(folder)
    assert results.column("account").to_pylist() == want["account"].tolist()
    for name in ("equity", "initial_margin", "maintenance_margin", "gross_notional"):
        np.testing.assert_array_equal(results.column(name).to_numpy(), want[name],
                                      err_msg=name)


def test_nested_partitions_are_parts_and_metadata_files_are_not(book_folder: Path,
                                                                tmp_path: Path) -> None:
    """A Hive-style book (parts in subfolders of positions/ and accounts/) beside a writer's
    marker and metadata files: the parts are the Parquet files, found at any depth and named
    by their path; the results mirror that layout and equal the single-process run's."""
    import shutil

    nested = tmp_path / "nested"
    for sub in ("positions", "accounts"):
        for k, part in enumerate(sorted((book_folder / sub).glob("*.parquet"))):
            target = nested / sub / f"day=2026-12-0{k % 2 + 1}" / part.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(part, target)
        (nested / sub / "_SUCCESS").write_text("")
        (nested / sub / "_metadata").write_bytes(b"PAR1")
        (nested / sub / "_temporary").mkdir()
        shutil.copy(part, nested / sub / "_temporary" / "part-09999.parquet")
        shutil.copy(part, nested / sub / ".part-09999.parquet")
    shutil.copy(book_folder / "instruments.json", nested / "instruments.json")
    assert [p.name for p in partitions(nested)] == [
        "day=2026-12-01/part-00000", "day=2026-12-01/part-00002",
        "day=2026-12-02/part-00001", "day=2026-12-02/part-00003"]
    run_batch(nested, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
              scheduler="none")
    assert (tmp_path / "out" / "day=2026-12-02" / "part-00001.parquet").is_file()
    results = read_results(tmp_path / "out")
    assert results.num_rows == 600
    # the single-process run reads the partitions in the same (name) order
    assert sorted(results.column("account").to_pylist()) == sorted(
        single_process(book_folder)["account"].tolist())
    _assert_single_process(results, nested)
    run_batch(nested, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
              scheduler="none")  # the same book again into its own output: accepted


@pytest.mark.parametrize("layout", ["spark", "pyarrow"])
def test_parts_named_by_two_writer_jobs_pair_by_their_number(book_folder: Path,
                                                              tmp_path: Path,
                                                              layout: str) -> None:
    """A Spark job names its part k ``part-0000k-<the job's uuid>-c000.snappy.parquet``: the
    positions and the accounts, written by two jobs, differ by the uuid, and the batch
    refused the book ('accounts part ... is missing'). The parts now pair when their names are
    the same but for a job id, one with one; the results are the single process's. pyarrow's
    ``write_to_dataset`` names a folder's part ``<uuid hex>-0.parquet`` the same way. Two
    accounts parts that would pair with the same positions part are not guessed between."""
    import shutil
    import uuid

    def named(k: int, job: uuid.UUID) -> str:
        if layout == "spark":
            return f"part-{k:05d}-{job}-c000.snappy.parquet"
        return f"day=2026-12-0{k + 1}/{job.hex}-0.parquet"

    book = tmp_path / layout
    jobs = {"positions": uuid.uuid4(), "accounts": uuid.uuid4()}
    for sub, job in jobs.items():
        for k, part in enumerate(sorted((book_folder / sub).glob("*.parquet"))):
            target = book / sub / named(k, job)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(part, target)
            (target.parent / f".{target.name}.crc").write_bytes(b"crc")
        (book / sub / "_SUCCESS").write_text("")
    shutil.copy(book_folder / "instruments.json", book / "instruments.json")
    found = partitions(book)
    assert [p.name for p in found] == [
        named(k, jobs["positions"]).removesuffix(".parquet") for k in range(4)]
    assert all(str(jobs["accounts"].hex if layout == "pyarrow" else jobs["accounts"])
               in p.accounts for p in found)
    run_batch(book, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
              scheduler="none")
    _assert_single_process(read_results(tmp_path / "out"), book)
    second = book / "accounts" / named(1, uuid.uuid4())  # part 1 of a third job
    shutil.copy(book / "accounts" / named(1, jobs["accounts"]), second)
    with pytest.raises(InputError, match="is missing"):
        partitions(book)


def test_an_empty_partition_gives_an_empty_result_part(book_folder: Path,
                                                       tmp_path: Path) -> None:
    """A part with no account and no position (a partitioned writer leaves such parts) gives
    a result part without rows, typed as every other; positions without their accounts are
    refused."""
    import shutil

    book = tmp_path / "book"
    shutil.copytree(book_folder, book)
    for sub in ("positions", "accounts"):
        table = pq.read_table(book / sub / "part-00000.parquet")
        pq.write_table(table.slice(0, 0), book / sub / "part-00004.parquet")
    summary = run_batch(book, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
                        scheduler="none")
    assert summary["partitions"] == 5
    empty = pq.read_table(tmp_path / "out" / "part-00004.parquet")
    assert empty.num_rows == 0
    assert empty.schema == pq.read_table(tmp_path / "out" / "part-00000.parquet").schema
    _assert_single_process(read_results(tmp_path / "out"), book)
    table = pq.read_table(book / "positions" / "part-00000.parquet")
    pq.write_table(table, book / "positions" / "part-00004.parquet")  # accounts not there
    with pytest.raises(InputError, match="part-00004"):
        run_batch(book, level_market(), RiskConfig().to_dict(), output=tmp_path / "again",
                  scheduler="none", only=["part-00004"])


def test_an_account_in_two_partitions_is_refused(book_folder: Path, tmp_path: Path) -> None:
    """An account whose rows two partitions hold would be margined twice, each time with
    part of its positions and collateral: the run is refused naming it and both parts, and
    no manifest is written (its results are not read); the single-process read refuses it
    too."""
    import shutil

    book = tmp_path / "book"
    shutil.copytree(book_folder, book)
    shared = pq.read_table(book / "accounts" / "part-00000.parquet").column("account")[3]
    first = pq.read_table(book / "accounts" / "part-00002.parquet").column("account")[0]
    for sub in ("accounts", "positions"):
        path = book / sub / "part-00002.parquet"
        table = pq.read_table(path)
        taken = table.column("account").cast(pa.string()).to_pylist()
        renamed = [shared.as_py() if a == first.as_py() else a for a in taken]
        pq.write_table(table.set_column(0, "account", pa.array(renamed)), path)
    with pytest.raises(InputError, match=rf"'{shared.as_py()}' is in both part-00000 and "
                                         "part-00002"):
        run_batch(book, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
                  scheduler="none")
    assert not (tmp_path / "out" / "_batch.json").exists()
    with pytest.raises(InputError, match="part-00000 and part-00002"):
        read_book(book)


def test_an_output_that_is_a_file_is_refused_by_name(book_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "out").write_text("")
    with pytest.raises(InputError, match="an output folder"):
        run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
                  scheduler="none")


def test_account_id_hashes_are_equal_for_equal_ids_whatever_the_arrow_type() -> None:
    from margin_engine.batch.ids import id_hashes, shared_accounts
    from margin_engine.book.columnar import TextColumn

    ids = ["a", "bb", "", "é", "a0" * 40]
    plain = id_hashes(ids)
    assert len(set(plain.tolist())) == len(ids)
    for array in (pa.array(ids), pa.array(ids, type=pa.large_string()),
                  pa.array(["x", *ids]).slice(1), pa.array(ids).dictionary_encode()):
        np.testing.assert_array_equal(id_hashes(TextColumn(array)), plain)
    assert shared_accounts([plain[:2], plain[2:], plain[1:2]]) == [(0, 2)]
    assert shared_accounts([plain, np.zeros(0, dtype=np.uint64)]) == []
    # one hash held by three parts (an id shared by parts 0 and 2, another id of part 1
    # with the same hash): every pair is checked, not only neighbours in the sort
    same = plain[:1]
    assert shared_accounts([same, same, same]) == [(0, 1), (0, 2), (1, 2)]


def test_an_account_shared_as_a_number_and_as_text_is_refused(book_folder: Path,
                                                               tmp_path: Path) -> None:
    """Account 7 written as a number in one partition and as the text '7' in another is one
    account (the reader takes ids as text): refused, as the single-process read does."""
    book = tmp_path / "book"
    for k, ids in enumerate(([7, 8], ["7", "9"])):
        for sub, table in (("accounts", pa.table({
                "account": pa.array(ids), "mode": ["cross"] * 2,
                "collateral_USDC": [1e5, 1e5]})), ("positions", pa.table({
                "account": pa.array(ids), "instrument": ["BTC-PERP"] * 2,
                "size": [1.0, -1.0], "entry_price": [60000.0, 60000.0]}))):
            (book / sub).mkdir(parents=True, exist_ok=True)
            pq.write_table(table, book / sub / f"part-{k}.parquet")
    with pytest.raises(InputError, match="'7' is in both part-0 and part-1"):
        run_batch(book, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
                  scheduler="none")
    with pytest.raises(InputError, match="'7' is in both"):
        read_book(book)


def test_partitions_through_symbolic_links_are_parts(book_folder: Path, tmp_path: Path) -> None:
    """A book put together from links to partition folders elsewhere: the linked parts are
    parts (a walk that does not follow links skipped them without a word), each folder once
    even with a link back up the tree; the results are read back through the links."""
    import os
    import shutil

    elsewhere, book = tmp_path / "elsewhere", tmp_path / "book"
    for sub in ("positions", "accounts"):
        for k, part in enumerate(sorted((book_folder / sub).glob("*.parquet"))):
            where = (elsewhere if k % 2 else book) / sub / f"d={k % 2}"
            where.mkdir(parents=True, exist_ok=True)
            shutil.copy(part, where / part.name)
        os.symlink(elsewhere / sub / "d=1", book / sub / "d=1")
        os.symlink(book / sub, book / sub / "d=0" / "loop")
    shutil.copy(book_folder / "instruments.json", book / "instruments.json")
    assert [p.name for p in partitions(book)] == [
        "d=0/part-00000", "d=0/part-00002", "d=1/part-00001", "d=1/part-00003"]
    out = tmp_path / "out"
    (tmp_path / "results-d1").mkdir()
    out.mkdir()
    os.symlink(tmp_path / "results-d1", out / "d=1")
    run_batch(book, level_market(), RiskConfig().to_dict(), output=out, scheduler="none")
    assert read_results(out).num_rows == 600
    _assert_single_process(read_results(out), book)


def test_a_book_of_empty_parts_only_is_refused_by_the_single_process_read(
        book_folder: Path, tmp_path: Path) -> None:
    book = tmp_path / "book"
    for sub in ("positions", "accounts"):
        table = pq.read_table(book_folder / sub / "part-00000.parquet")
        (book / sub).mkdir(parents=True)
        pq.write_table(table.slice(0, 0), book / sub / "part-00000.parquet")
    with pytest.raises(InputError, match="at least one account"):
        read_book(book)
    summary = run_batch(book, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
                        scheduler="none")
    assert summary["accounts"] == 0
    assert read_results(tmp_path / "out").num_rows == 0


def test_parts_are_in_the_same_order_under_every_scheduler(book_folder: Path,
                                                             tmp_path: Path) -> None:
    """Names that sort one way with their suffix and another without ('p-1.parquet' <
    'p.parquet' but 'p' < 'p-1'): the listing, the summary and the manifest agree."""
    import shutil

    book = tmp_path / "book"
    for sub in ("positions", "accounts"):
        (book / sub).mkdir(parents=True)
        shutil.copy(book_folder / sub / "part-00000.parquet", book / sub / "p.parquet")
        shutil.copy(book_folder / sub / "part-00001.parquet", book / sub / "p-1.parquet")
    shutil.copy(book_folder / "instruments.json", book / "instruments.json")
    assert [p.name for p in partitions(book)] == ["p", "p-1"]
    for scheduler in ("none", "local"):
        summary = run_batch(book, level_market(), RiskConfig().to_dict(),
                            output=tmp_path / scheduler, scheduler=scheduler, workers=1)
        assert [d["partition"] for d in summary["parts"]] == ["p", "p-1"]
        manifest = json.loads((tmp_path / scheduler / "_batch.json").read_text())
        assert [d["partition"] for d in manifest["parts"]] == ["p", "p-1"]


def test_a_failing_part_on_a_local_cluster_is_one_error_line_without_a_traceback(
        book_folder: Path, tmp_path: Path) -> None:
    """The workers' own log of a failed task (with its traceback) stays out of the user's
    terminal: the command prints the part's error once and exits 2 (bad input)."""
    import shutil
    import subprocess
    import sys

    book = tmp_path / "book"
    shutil.copytree(book_folder, book)
    (book / "positions" / "part-00001.parquet").write_text("not parquet")
    market = tmp_path / "market.json"
    market.write_text(json.dumps(level_market()))
    done = subprocess.run(
        [sys.executable, "-m", "margin_engine.cli.app", "batch", "--book", str(book), "--market",
         str(market), "--scheduler", "local", "--workers", "1", "--output",
         str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "Compute Failed" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "part-00001.parquet" in lines[0]


def test_partitions_are_listed_not_read_and_a_missing_part_is_refused(tmp_path: Path) -> None:
    bound = random_level_book(30, seed=32, asked_margins=False)
    found = write_partitioned_book(bound.book, tmp_path / "b", 3, declared_instruments_document())
    assert [p.name for p in found] == ["part-00000", "part-00001", "part-00002"]
    (tmp_path / "b" / "accounts" / "part-00002.parquet").unlink()
    with pytest.raises(InputError, match="accounts/part-00002.parquet is missing"):
        partitions(tmp_path / "b")
    with pytest.raises(InputError, match="partitioned book folder"):
        partitions(tmp_path / "nothing")
    (tmp_path / "b" / "positions" / "part-00002.parquet").unlink()
    assert len(partitions(tmp_path / "b")) == 2
    (tmp_path / "b" / "accounts" / "part-00007.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="positions/part-00007.parquet is missing"):
        partitions(tmp_path / "b")  # its accounts would not be margined


def test_a_bad_partition_is_refused_naming_its_file(tmp_path: Path) -> None:
    from dataclasses import replace

    book = random_level_book(40, seed=33, asked_margins=False).book
    asked = np.full(book.position_count, np.nan)
    asked[int(book.offsets[30])] = 1e12  # an isolated margin above the account's collateral
    write_partitioned_book(replace(book, position_margin=asked), tmp_path / "b", 2,
                           declared_instruments_document())
    with pytest.raises(InputError, match="positions/part-00001.parquet"):
        run_batch(tmp_path / "b", level_market(), RiskConfig().to_dict(),
                  output=tmp_path / "out", scheduler="none")


def test_a_part_is_written_whole_or_not_at_all(book_folder: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped while it writes a part leaves the earlier part whole, no temporary file
    and no manifest: the folder is refused until the batch runs again."""
    out = tmp_path / "out"
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=out,
              scheduler="none")
    before = pq.read_table(out / "part-00001.parquet")
    real_write = pq.write_table

    def stopped_mid_write(table: object, where: object, **kwargs: object) -> None:
        if Path(str(where)).name.startswith(".part-00001"):
            Path(str(where)).write_bytes(b"PAR1 half a file")
            raise KeyboardInterrupt  # the process stopped here
        real_write(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", stopped_mid_write)
    with pytest.raises(KeyboardInterrupt):
        run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=out,
                  scheduler="none")
    assert pq.read_table(out / "part-00001.parquet").equals(before)  # the old part, whole
    assert not list(out.glob(".*"))  # no temporary left
    with pytest.raises(InputError, match="stopped before its end"):
        read_results(out)
    monkeypatch.setattr(pq, "write_table", real_write)
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=out,
              scheduler="none")
    np.testing.assert_array_equal(read_results(out).column("initial_margin"),
                                  single_process(book_folder)["initial_margin"])


def test_kill_minus_9_mid_batch_then_run_again(tmp_path: Path) -> None:
    """The batch command killed with SIGKILL after its first part: every part on disk is
    whole, no manifest claims the run; the same command again completes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    bound = random_level_book(1600, seed=34, asked_margins=False)
    write_partitioned_book(bound.book, tmp_path / "book", 16, declared_instruments_document())
    market = tmp_path / "market.json"
    market.write_text(json.dumps(level_market()))
    out = tmp_path / "out"
    args = [str(Path(sys.executable).parent / "margin-engine"), "batch", "--book",
            str(tmp_path / "book"), "--market", str(market), "--scheduler", "none",
            "--output", str(out), "--json"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and not (
            out.is_dir() and any(out.glob("part-*.parquet"))):
        time.sleep(0.005)
    killed = process.poll() is None
    if killed:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    print(f"killed: {killed}, parts on disk: {len(list(out.glob('*.parquet')))} of 16")
    for part in out.glob("*.parquet"):
        assert pq.read_table(part).column_names == list(RESULT_COLUMNS), part.name
    if killed and not (out / "_batch.json").exists():
        with pytest.raises(InputError, match="stopped before its end"):
            read_results(out)
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["partitions"] == 16
    assert not list(out.glob(".*"))
    got = read_results(out)
    want = single_process(tmp_path / "book")
    assert got.column("account").to_pylist() == want["account"].tolist()
    np.testing.assert_array_equal(got.column("initial_margin").to_numpy(),
                                  want["initial_margin"])


def test_an_output_folder_of_another_book_or_inside_the_book_is_refused(
        book_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=out,
              scheduler="none")  # 4 parts
    small = random_level_book(20, seed=35, asked_margins=False)
    write_partitioned_book(small.book, tmp_path / "small", 2, declared_instruments_document())
    with pytest.raises(InputError, match="part-00002.parquet, part-00003.parquet"):
        run_batch(tmp_path / "small", level_market(), RiskConfig().to_dict(), output=out,
                  scheduler="none")
    assert len(read_results(out)) == 600  # the first run's results, untouched
    positions = sorted((book_folder / "positions").iterdir())
    sizes = [p.stat().st_size for p in positions]
    for inside in (book_folder, book_folder / "positions"):
        with pytest.raises(InputError, match="outside the book folder"):
            run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=inside,
                      scheduler="none")
    assert [p.stat().st_size for p in sorted((book_folder / "positions").iterdir())] == sizes


def test_a_changed_part_or_a_broken_manifest_is_refused(book_folder: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=out,
              scheduler="none")
    (out / ".notes.tmp").write_text("a file of the user's")  # not the run's: left alone
    part = pq.read_table(out / "part-00002.parquet")
    pq.write_table(part.slice(0, 10), out / "part-00002.parquet")
    with pytest.raises(InputError, match="rows in part-00002.parquet"):
        read_results(out)
    manifest = json.loads((out / "_batch.json").read_text())
    manifest["parts"][0] = {"file": 3}
    (out / "_batch.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="parts of"):
        read_results(out)
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=out,
              scheduler="none")
    assert len(read_results(out)) == 600
    assert (out / ".notes.tmp").read_text() == "a file of the user's"


def test_a_folder_of_other_files_is_not_taken_for_an_output(book_folder: Path,
                                                           tmp_path: Path) -> None:
    """A non-empty folder that was never a batch's output (a project or home folder given by
    mistake). Before: the run wrote its parts, manifest and lock among the folder's files."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "README.md").write_text("a project")
    before = sorted(p.name for p in project.iterdir())
    (tmp_path / "market.json").write_text(json.dumps(level_market()))
    out = CliRunner().invoke(app, ["batch", "--book", str(book_folder), "--market",
                                   str(tmp_path / "market.json"), "--scheduler", "none",
                                   "--output", str(project)])
    assert out.exit_code == 2, out.output
    assert out.output.startswith(f"margin-engine: error: field '--output': got '{project}', "
                                 "expected an empty output folder or one of this book's runs "
                                 "(it holds README.md, src and no _batch.json or _batch.lock"), \
        out.output
    assert sorted(p.name for p in project.iterdir()) == before  # nothing written there
    kept = tmp_path / "kept"  # a folder kept in version control: its hidden files are no bar
    kept.mkdir()
    (kept / ".gitkeep").write_text("")
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=kept,
              scheduler="none")
    assert len(read_results(kept)) == 600
    # a batch's own output keeps the user's files beside its results, as before
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
              scheduler="none")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    run_batch(book_folder, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
              scheduler="none")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_compute_reads_a_book_folder_as_the_same_book_in_a_portfolio_file(
        tmp_path: Path) -> None:
    """`compute FOLDER` (a book folder of partitions, inverse and sized instruments declared in
    its instruments.json) gives the document `compute` gives for the same book as a portfolio
    JSON built by hand. Before: 'expected a readable CSV/Parquet table (... is a
    directory)'; the batch alone read folders."""
    from typer.testing import CliRunner

    from margin_engine.cli.app import app
    from tests.unit.test_book_document import independent_document

    book = random_level_book(120, seed=44, asked_margins=False).book
    write_partitioned_book(book, tmp_path / "book", 3, declared_instruments_document())
    (tmp_path / "p.json").write_text(json.dumps(independent_document(book)))
    (tmp_path / "m.json").write_text(json.dumps(level_market()))
    runner = CliRunner()
    documents = []
    for given in (tmp_path / "book", tmp_path / "p.json"):
        out = runner.invoke(app, ["compute", str(given), "--market", str(tmp_path / "m.json"),
                                  "--json"])
        assert out.exit_code == 0, out.output
        documents.append(json.loads(out.stdout))
    assert documents[0] == documents[1]
    assert len(documents[0]["accounts"]) == 120
    refused = runner.invoke(app, ["compute", str(tmp_path / "book"), "--accounts",
                                  str(tmp_path / "p.json"), "--market",
                                  str(tmp_path / "m.json")])
    assert refused.exit_code == 2
    assert "no --accounts with a book folder" in refused.stderr


def _compute_levels(folder: Path, model: str = "account",
                    market: dict[str, Any] | None = None) -> dict[str, list[float | None]]:
    """Every level column as ``compute`` finds it over the whole book read at once (the
    report's cells: None where an account has no level or no exposure)."""
    from margin_engine.app.compute import compute_bound

    snapshot = parse_market(market or level_market())
    report = compute_bound(bind_market(read_book(folder), snapshot), RiskConfig(), model=model,
                           liquidation="on")
    columns: dict[str, list[float | None]] = {}
    for u in sorted(snapshot.underlyings):
        sides: dict[str, list[float | None]] = {"price": [], "down": [], "up": []}
        for entry in report.accounts:
            cell = entry.underlyings.get(u)
            found = None if cell is None else cell.liquidation
            sides["price"].append(None if found is None else found.nearest)
            for side in ("down", "up"):
                level = None if found is None else getattr(found, side)
                sides[side].append(None if level is None else level.price)
        columns.update({f"liquidation_{side}_{u}": values for side, values in sides.items()})
    return columns


@pytest.mark.parametrize("model", ["account", "portfolio", "cross", "isolated", "sensitivity"])
def test_liquidation_prices_in_the_parts_are_compute_s_over_the_whole_book(
        book_folder: Path, tmp_path: Path, model: str) -> None:
    """Each part's levels (searched on that part alone, under each account's model) are the
    numbers `compute --liquidation-prices on` gives for the same accounts in one book, bit for
    bit; the summary counts the levels found."""
    from margin_engine.batch.levels import level_columns

    summary = run_batch(book_folder, level_market(), RiskConfig().to_dict(), scheduler="none",
                        output=tmp_path / "out", model=model, liquidation_prices=True)
    got = read_results(tmp_path / "out")
    want = _compute_levels(book_folder, model)
    assert got.column_names == [*RESULT_COLUMNS,
                                *level_columns(parse_market(level_market()).underlyings)]
    assert list(want) == got.column_names[len(RESULT_COLUMNS):]
    for name, values in want.items():
        assert got.column(name).to_pylist() == values, name
    for side in ("down", "up"):
        found = sum(sum(v is not None for v in values) for name, values in want.items()
                    if name.startswith(f"liquidation_{side}_"))
        assert summary[f"liquidation_levels_{side}"] == found > 0
    assert json.loads((tmp_path / "out" / "_batch.json").read_text())["liquidation_prices"]
    margins = single_process(book_folder, model)  # the margins as without the levels
    np.testing.assert_array_equal(got.column("initial_margin").to_numpy(),
                                  margins["initial_margin"])


def test_an_empty_partition_has_the_level_columns_too(book_folder: Path,
                                                      tmp_path: Path) -> None:
    import shutil

    book = tmp_path / "book"
    shutil.copytree(book_folder, book)
    for sub in ("positions", "accounts"):
        table = pq.read_table(book / sub / "part-00000.parquet")
        pq.write_table(table.slice(0, 0), book / sub / "part-00004.parquet")
    run_batch(book, level_market(), RiskConfig().to_dict(), output=tmp_path / "out",
              scheduler="none", liquidation_prices=True)
    empty = pq.read_table(tmp_path / "out" / "part-00004.parquet")
    assert empty.num_rows == 0
    assert empty.schema == pq.read_table(tmp_path / "out" / "part-00000.parquet").schema
    assert read_results(tmp_path / "out").num_rows == 600


def test_batch_command_with_liquidation_prices_counts_the_levels(book_folder: Path,
                                                                 tmp_path: Path) -> None:
    market = tmp_path / "market.json"
    market.write_text(json.dumps(level_market()))
    args = ["batch", "--book", str(book_folder), "--market", str(market), "--scheduler",
            "none", "--liquidation-prices"]
    out = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "o"), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    results = read_results(tmp_path / "o")
    assert summary["liquidation_levels_up"] == sum(
        len(results.column(n)) - results.column(n).null_count
        for n in results.column_names if n.startswith("liquidation_up_")) > 0
    shown = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "p")])
    assert shown.exit_code == 0, shown.output
    assert f"liquidation levels down {summary['liquidation_levels_down']:,}" in " ".join(
        shown.stdout.split())


def test_liquidation_prices_on_a_local_cluster_are_those_of_one_process(
        book_folder: Path, tmp_path: Path) -> None:
    """The workers' parts (levels searched in other processes, on their numba threads) equal
    the parts made in this process, every column."""
    for scheduler in ("local", "none"):
        run_batch(book_folder, level_market(), RiskConfig().to_dict(), scheduler=scheduler,
                  workers=2, output=tmp_path / scheduler, liquidation_prices=True)
    assert read_results(tmp_path / "local").equals(read_results(tmp_path / "none"))


def test_later_parts_take_the_instrument_states_the_first_parts_computed(
        tmp_path: Path) -> None:
    """The parts of one run are bound to one market: the search's instrument states on its
    grid (its shared table: parts with several positions an instrument) are computed once in
    a process and taken by its later parts (they were built again for every part), with the
    same levels as compute over the whole book; another market computes its own."""
    from margin_engine.liquidation.shared_states import REUSED

    book_folder = tmp_path / "book"
    write_partitioned_book(random_level_book(1500, seed=37, asked_margins=False).book,
                           book_folder, 3, declared_instruments_document())
    market = level_market()
    market["underlyings"]["ETH"]["index"] *= 1.003  # a market no other test keeps rows of
    before = dict(REUSED)
    run_batch(book_folder, market, RiskConfig().to_dict(), scheduler="none",
              output=tmp_path / "out", liquidation_prices=True)
    reused, computed = (REUSED[k] - before[k] for k in ("rows", "computed"))
    assert reused > computed > 0
    got = read_results(tmp_path / "out")
    for name, values in _compute_levels(book_folder, market=market).items():
        assert got.column(name).to_pylist() == values, name
    moved = json.loads(json.dumps(market))
    moved["underlyings"]["BTC"]["index"] *= 1.01
    before = dict(REUSED)
    run_batch(book_folder, moved, RiskConfig().to_dict(), scheduler="none",
              output=tmp_path / "moved", liquidation_prices=True)
    assert REUSED["computed"] - before["computed"] == computed
