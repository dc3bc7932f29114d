"""The batch on a Dask cluster started as the README tells a venue: a scheduler and workers as
processes of their own (``dask scheduler``, ``dask worker``), each in a folder of its own, and
the batch pointed at the scheduler's address from a third folder with relative paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from margin_engine.batch.book import Partition, write_partitioned_book
from margin_engine.batch.run import BatchJob, WorkerLost, margin_partition, read_results, run_batch
from margin_engine.core.errors import InputError
from margin_engine.margin.config import RiskConfig
from tests.unit.level_books import declared_instruments_document, level_market, random_level_book
from tests.unit.test_batch import single_process

DASK = Path(sys.executable).parent / "dask"
START_SECONDS = 60.0


@contextmanager
def running_cluster(home: Path, workers: int, env: dict[str, str] | None = None
                    ) -> Iterator[str]:
    """A scheduler on a free loopback port and one worker process of ``workers``
    single-threaded workers, started in folders of their own under ``home`` (``env``: more
    environment for the scheduler); its address."""
    address_file = home / "scheduler.json"
    (home / "scheduler").mkdir(parents=True)
    (home / "workers").mkdir()
    common = ["--no-dashboard"]
    scheduler = subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--scheduler-file", str(address_file), *common],
        cwd=home / "scheduler", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})})
    process = None
    try:
        address = _address(address_file, scheduler)
        process = subprocess.Popen(
            [str(DASK), "worker", address, "--nworkers", str(workers), "--nthreads", "1",
             *common], cwd=home / "workers", stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        _wait_for_workers(address, workers)
        yield address
    finally:
        for running in (process, scheduler):
            if running is not None:
                running.terminate()
                try:
                    running.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    running.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two workers, as a venue runs them."""
    with running_cluster(tmp_path_factory.mktemp("cluster"), 2) as address:
        yield address


def _address(address_file: Path, scheduler: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            pytest.fail(f"dask scheduler exited with {scheduler.returncode}")
        try:
            address = str(json.loads(address_file.read_text())["address"])
            if address.startswith("tcp://127.0.0.1:"):
                return address
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    pytest.fail(f"dask scheduler wrote no address within {START_SECONDS:.0f} s")


def _wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    with Client(address, timeout=START_SECONDS) as client:
        client.wait_for_workers(count, timeout=START_SECONDS)


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("venue") / "books" / "today"
    bound = random_level_book(400, seed=37, asked_margins=False)
    write_partitioned_book(bound.book, folder, 3, declared_instruments_document())
    return folder


def test_relative_paths_reach_workers_running_elsewhere(cluster: str, book: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the workers were given the client's relative paths and looked for
    ``books/today/positions/part-00000.parquet`` in their own folder."""
    venue = book.parent.parent
    monkeypatch.chdir(venue)
    summary = run_batch(Path("books/today"), level_market(), RiskConfig().to_dict(),
                        output=Path("results/today"), scheduler=cluster)
    assert summary["partitions"] == 3
    assert len(summary["peak_rss_mb_per_worker"]) >= 1
    assert all(worker.startswith("tcp://127.0.0.1:")
               for worker in summary["peak_rss_mb_per_worker"])
    got = read_results(venue / "results" / "today")
    want = single_process(book)
    assert got.column("account").to_pylist() == want["account"].tolist()
    for name in ("equity", "adjusted_equity", "initial_margin", "maintenance_margin",
                 "gross_notional"):
        np.testing.assert_array_equal(got.column(name).to_numpy(), want[name], err_msg=name)


def test_a_worker_that_cannot_see_the_book_says_so(cluster: str, book: Path,
                                                   tmp_path: Path) -> None:
    """A partition file the worker cannot read is named with the worker and what a remote
    cluster needs, and nothing is written."""
    from distributed import Client

    gone = Partition(name="part-00009", positions=str(book / "positions" / "part-00009.parquet"),
                     accounts=str(book / "accounts" / "part-00009.parquet"))
    job = BatchJob(market=level_market(), config=RiskConfig().to_dict(), model="account",
                   instruments=declared_instruments_document(), output=str(tmp_path))
    with Client(cluster, timeout=START_SECONDS) as client, \
            pytest.raises(InputError) as raised:
        client.submit(margin_partition, gone, job, pure=False).result()
    message = str(raised.value)
    assert "part-00009.parquet" in message
    assert "worker (tcp://127.0.0.1:" in message
    assert "at the paths the client gives" in message
    assert list(tmp_path.iterdir()) == []


def test_a_worker_killed_mid_batch_changes_nothing(cluster: str, tmp_path: Path) -> None:
    """kill -9 of a worker process once the first part is back (its nanny starts another):
    the parts it held are computed again elsewhere and the results are those of one process,
    every part whole."""
    from distributed import Client

    folder = tmp_path / "book"
    bound = random_level_book(2400, seed=41, asked_margins=False)
    write_partitioned_book(bound.book, folder, 12, declared_instruments_document())
    with Client(cluster, timeout=START_SECONDS) as client:
        pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed: list[int] = []

    def kill_once(_: dict[str, object]) -> None:
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    summary = run_batch(folder, level_market(), RiskConfig().to_dict(), scheduler=cluster,
                        output=tmp_path / "out", progress=kill_once)
    assert killed == [victim]
    assert summary["partitions"] == 12
    got = read_results(tmp_path / "out")
    want = single_process(folder)
    assert got.column("account").to_pylist() == want["account"].tolist()
    for name in ("equity", "adjusted_equity", "initial_margin", "maintenance_margin"):
        np.testing.assert_array_equal(got.column(name).to_numpy(), want[name], err_msg=name)
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_a_partition_whose_workers_all_die_is_one_error(tmp_path: Path) -> None:
    """Every worker that runs a partition dies (here: a scheduler that allows no failure, its
    one worker killed while the batch runs; at a venue, a worker over its memory limit).
    Before: Dask's KilledWorker reached the user as a traceback."""
    folder = tmp_path / "book"
    bound = random_level_book(6000, seed=43, asked_margins=False)  # parts that take a while
    write_partitioned_book(bound.book, folder, 6, declared_instruments_document())
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    with running_cluster(tmp_path / "cluster", 1, env) as address:
        from distributed import Client

        with Client(address, timeout=START_SECONDS) as client:
            victim = next(iter(client.run(os.getpid).values()))

        killed: list[int] = []

        def kill(_: dict[str, object]) -> None:  # once the first part is back
            if not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        with pytest.raises(WorkerLost) as raised:
            run_batch(folder, level_market(), RiskConfig().to_dict(), scheduler=address,
                      output=tmp_path / "out", progress=kill)
    message = str(raised.value)
    assert message.startswith("partition part-0000"), message
    assert "the 1 worker that ran it died (the last tcp://127.0.0.1:" in message, message
    assert "this run is not complete: run it again" in message
    assert not (tmp_path / "out" / "_batch.json").exists()
