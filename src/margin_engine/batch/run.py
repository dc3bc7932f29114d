"""``margin-engine batch``: margin a partitioned bulk book, one partition per task, on a Dask
cluster (``dask.distributed``) or in this process.

Each task reads its own partition (nothing else: the client only lists the folder), binds it to
the market, runs the model and writes its results to ``OUTPUT/part-NNNNN.parquet``; it returns a
few numbers (rows, seconds, the worker's peak RSS). Accounts are independent of each other in
every model, so a partition's results are those of the same accounts in a single run over the
whole book, bit for bit.

Result columns: ``account, mode, model, equity, adjusted_equity, initial_margin,
maintenance_margin, excess, gross_notional`` (USD; ``model`` is the model the account was
margined under: its own mode with ``--model account``); with ``--liquidation-prices`` also,
per underlying U of the market, ``liquidation_price_U``, ``liquidation_down_U`` and
``liquidation_up_U`` (``batch.levels``).

Every part is written whole or not at all (a hidden temporary file beside it, renamed over it
once complete), and ``OUTPUT/_batch.json`` (``MANIFEST``: the book, the model, each part's file
and rows) is written last, when every part is: a run stopped part-way (a worker or the client
killed) leaves no manifest and no truncated part, and ``read_results`` refuses the folder until
the batch is run again. The output folder must lie outside the book and hold no result part
that is not a partition of this book (a folder of another book's results would be read as one);
a run holds it (``LOCK``), and a second run into it meanwhile is refused.

Schedulers: ``local`` starts a ``LocalCluster`` of ``workers`` processes (one thread each) on
this machine; ``tcp://HOST:PORT`` connects to a running scheduler (every worker needs
margin-engine installed and the book and output folders at the same paths: a shared or
network filesystem; the paths are made absolute here, and a worker that cannot see a part
says so); ``none`` runs the partitions one after the other in this process.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from margin_engine.batch.book import Partition, declared_instruments, parquet_parts, partitions
from margin_engine.batch.scheduler import SCHEDULER_TIMEOUT, check_scheduler, reach_scheduler
from margin_engine.core.errors import InputError, MarginEngineError
from margin_engine.core.files import write_whole
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.margin.registry import MODEL_NAMES, ModelSelection

MODELS = (ModelSelection.ACCOUNT.value, *MODEL_NAMES)  # var needs a history: not in batches
MANIFEST = "_batch.json"  # written last: the parts of the run that completed
LOCK = "_batch.lock"  # held by the run writing the folder
# a part's sums and counts, summed over the run's parts in its summary: USD totals, and the
# accounts below MM (liquidatable) and below IM only (in a margin call), as the pool health
TOTALS = ("initial_margin_usd", "maintenance_margin_usd", "gross_notional_usd")
COUNTS = ("accounts_liquidatable", "accounts_in_margin_call")
# with --liquidation-prices: the levels found below and above today's index (over underlyings)
LEVEL_COUNTS = ("liquidation_levels_down", "liquidation_levels_up")
MANIFEST_FORMAT = "margin-engine/batch-result/v1"
RESULT_COLUMNS = ("account", "mode", "model", "equity", "adjusted_equity", "initial_margin",
                  "maintenance_margin", "excess", "gross_notional")


@dataclass(frozen=True, slots=True)
class BatchJob:
    """Everything a task needs, as plain data (shipped to the workers)."""

    market: Mapping[str, Any]  # the market document (margin-engine/market/v1)
    config: Mapping[str, Any]  # RiskConfig.to_dict()
    model: str
    instruments: Mapping[str, Any]  # the book's declared instruments (document form)
    output: str  # folder of the result parts
    liquidation_prices: bool = False  # also the liquidation levels (``batch.levels``)

    def market_key(self) -> str:
        """sha256 of the market, config and declared instruments: what every part is bound
        to alike (the key of the instrument states a worker keeps between parts)."""
        import hashlib

        text = json.dumps([self.market, self.config, self.instruments], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def margin_partition(partition: Partition, job: BatchJob) -> dict[str, Any]:
    """Read, bind and margin one partition; write its results; return its summary."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from margin_engine.batch.book import is_empty, parse_declared, read_partition
    from margin_engine.batch.ids import id_hashes
    from margin_engine.batch.levels import levels_found, liquidation_columns
    from margin_engine.book.bound import bind_market, settled_at_index
    from margin_engine.book.columnar import MODES_BY_CODE
    from margin_engine.io.market_file import parse_market
    from margin_engine.margin.config import RiskConfig
    from margin_engine.margin.isolated import check_asked_margins
    from margin_engine.margin.registry import get_model
    from margin_engine.margin.run import margins_by_mode

    started = time.perf_counter()
    _refuse_unseen(partition)
    target = Path(job.output) / f"{partition.name}.parquet"
    market = parse_market(job.market)
    underlyings = tuple(market.underlyings) if job.liquidation_prices else ()
    if is_empty(partition):
        write_whole(target, lambda path: pq.write_table(_empty_results(underlyings), path))
        return _part_summary(partition, target, started, 0, np.zeros(0, dtype=np.uint64),
                             dict.fromkeys(TOTALS, 0.0), dict.fromkeys(_counts(job), 0))
    config = RiskConfig.from_dict(job.config)
    book = read_partition(partition, parse_declared(job.instruments))
    try:
        bound = bind_market(book, market)
        check_asked_margins(bound, config)
    except InputError as exc:
        raise exc.located(source=partition.positions) from None
    margins = margins_by_mode(bound, job.model,
                              lambda name: get_model(name).compute(bound, config))
    gross = np.asarray(bound.account_gross_notional())
    liquidatable, in_margin_call = margins.standing()  # as the service's pool health
    mode = [MODES_BY_CODE[int(c)].value for c in book.mode]
    model = mode if job.model == ModelSelection.ACCOUNT else [job.model] * book.account_count
    table = pa.table({
        "account": pa.array(book.account_ids, type=pa.string()),
        "mode": pa.array(mode, type=pa.string()),
        "model": pa.array(model, type=pa.string()),
        "equity": margins.equity, "adjusted_equity": margins.adjusted_equity,
        "initial_margin": margins.initial, "maintenance_margin": margins.maintenance,
        "excess": margins.adjusted_equity - margins.initial,
        "gross_notional": gross,
    })
    levels = {}
    if job.liquidation_prices:
        levels = liquidation_columns(bound, config, margins, underlyings, job.market_key())
        for name, column in levels.items():
            table = table.append_column(name, column)
    write_whole(target, lambda path: pq.write_table(table, path))
    sums = (margins.initial, margins.maintenance, gross)
    return _part_summary(partition, target, started, book.position_count,
                         id_hashes(book.account_ids),
                         {key: float(v.sum()) for key, v in zip(TOTALS, sums, strict=True)},
                         {**{key: int(v.sum()) for key, v in
                             zip(COUNTS, (liquidatable, in_margin_call), strict=True)},
                          **(levels_found(levels) if job.liquidation_prices else {})},
                         settled_at_index(bound))


def _part_summary(partition: Partition, target: Path, started: float, positions: int,
                  hashes: Any, totals: dict[str, float], counts: dict[str, int],
                  settled: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    """What a task hands back: its rows, its ids' hashes, its TOTALS and COUNTS, the expiries
    it settled at the index (``settled_at_index``), time, worker and peak RSS."""
    return {"partition": partition.name, "accounts": int(hashes.size), "positions": positions,
            "account_hashes": hashes, **totals, **counts,
            "settled_at_index": [list(key) for key in settled or ()],
            "seconds": time.perf_counter() - started, "worker": _worker_name(),
            "peak_rss_mb": _peak_rss_mb(), "output": str(target)}


def _refuse_unseen(partition: Partition) -> None:
    """InputError naming this worker when it cannot see a file of the partition: a worker
    of a remote cluster reads the book at the path the client listed it under."""
    for path in (partition.positions, partition.accounts):
        if not Path(path).is_file():
            raise InputError(f"a file this worker ({_worker_name()}) can read: every worker "
                             "needs the book and output folders at the paths the client "
                             "gives (a shared filesystem mounted alike)",
                             source=f"partition {partition.name}", value=path)


def _counts(job: BatchJob) -> tuple[str, ...]:
    """The counts a part returns: COUNTS, and LEVEL_COUNTS with the liquidation levels."""
    return COUNTS + LEVEL_COUNTS if job.liquidation_prices else COUNTS


def _empty_results(underlyings: tuple[str, ...] = ()) -> Any:
    """A result table without rows: RESULT_COLUMNS (and the level columns of
    ``underlyings``), the texts as strings, the numbers as float64 (as every result part)."""
    import pyarrow as pa

    from margin_engine.batch.levels import empty_level_columns

    return pa.table({**{name: pa.array([], type=pa.string() if name in ("account", "mode",
                                                                        "model")
                                       else pa.float64()) for name in RESULT_COLUMNS},
                     **empty_level_columns(underlyings)})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def run_batch(book: str | Path, market: Mapping[str, Any], config: Mapping[str, Any], *,
              model: str = "account", output: str | Path, scheduler: str = "local",
              workers: int = 2, only: list[str] | None = None,
              progress: Callable[[dict[str, Any]], None] | None = None,
              liquidation_prices: bool = False) -> dict[str, Any]:
    """Margin every partition of ``book`` (or those named in ``only``) and write the result
    parts to ``output``; returns the run's summary (partitions, wall time, per-worker peak
    RSS). ``scheduler``: ``local``, ``tcp://HOST:PORT`` or ``none``. ``progress`` is called
    with each part's summary as it comes back, with ``done`` (parts back so far) and
    ``total`` (parts of the run) added. ``liquidation_prices``: the parts hold every
    account's liquidation levels too (``batch.levels``; the search takes about as long again
    as the margins, or longer)."""
    if model not in MODELS:
        raise InputError(f"one of {', '.join(MODELS)} (account: each account under its own "
                         "mode)", field="--model", value=model)
    check_scheduler(scheduler)
    cpus = len(os.sched_getaffinity(0))
    if scheduler == "local" and not 1 <= workers <= cpus:
        raise InputError(f"1 to {cpus} worker processes on this machine's {cpus} CPUs (each "
                         "margins one partition at a time on one core and holds its own "
                         "few hundred MB: more only add memory)", field="--workers",
                         value=workers)
    if scheduler not in ("local", "none"):
        reach_scheduler(scheduler)  # before the output folder is touched
    # absolute paths, as given (symbolic links kept): the workers of a remote cluster run in
    # folders of their own and see the book where the client does, not the client's folder
    book = Path(book).absolute()
    every = partitions(book)
    wanted = None if only is None else set(only)
    parts = every if wanted is None else [p for p in every if p.name in wanted]
    out = Path(output).absolute()
    with _claim_output(out, book, every):  # until the manifest is written
        _prepare_output(out, every)
        job = BatchJob(market=market, config=config, model=model,
                       instruments=declared_instruments(book), output=str(out),
                       liquidation_prices=liquidation_prices)
        started = time.perf_counter()
        done = _margin_parts(parts, job, scheduler, workers, progress)
        wall = time.perf_counter() - started
        # what a worker killed while writing left (its part was written again by another)
        _remove_temporaries(out, [f"{d['partition']}.parquet" for d in done])
        _refuse_shared_accounts(done, {p.name: p for p in every})
        manifest = {"format": MANIFEST_FORMAT, "book": str(book), "model": model,
                    "liquidation_prices": liquidation_prices,
                    "market_timestamp": market.get("timestamp"),
                    "accounts": sum(d["accounts"] for d in done),
                    "parts": [{"partition": d["partition"], "file": f"{d['partition']}.parquet",
                               "accounts": d["accounts"]} for d in done]}
        write_whole(out / MANIFEST,
                    lambda path: path.write_text(json.dumps(manifest, indent=1)))
    per_worker: dict[str, float] = {}
    for item in done:
        per_worker[item["worker"]] = max(per_worker.get(item["worker"], 0.0),
                                         item["peak_rss_mb"])
    return {"book": str(book), "output": str(out), "scheduler": scheduler, "model": model,
            "partitions": len(done), "accounts": sum(d["accounts"] for d in done),
            "positions": sum(d["positions"] for d in done),
            **{key: math.fsum(d[key] for d in done) for key in TOTALS},
            **{key: sum(d[key] for d in done) for key in _counts(job)},
            "settled_at_index": [{"underlying": u, "expiry": ns_to_iso(e)} for u, e in sorted(
                {(u, e) for d in done for u, e in d["settled_at_index"]})],
            "wall_seconds": wall, "peak_rss_mb_per_worker": per_worker, "parts": done}


def _margin_parts(parts: list[Partition], job: BatchJob, scheduler: str, workers: int,
                  progress: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    """Every part's summary, in the listing's order, on the scheduler (``none``: here, one
    after the other); ``progress`` told each as it comes back (``_counted``)."""
    counted = None if progress is None else _counted(progress, len(parts))
    if scheduler != "none":
        return _on_dask(parts, job, scheduler, workers, counted)
    done = []
    for part in parts:
        done.append(margin_partition(part, job))
        if counted is not None:
            counted(done[-1])
    return done


def _counted(progress: Callable[[dict[str, Any]], None], total: int
             ) -> Callable[[dict[str, Any]], None]:
    """``progress`` told each part's summary with ``done`` and ``total`` added."""
    back = [0]

    def tick(item: dict[str, Any]) -> None:
        back[0] += 1
        progress({**item, "done": back[0], "total": total})
    return tick


def _refuse_shared_accounts(done: list[dict[str, Any]], parts: Mapping[str, Partition]
                            ) -> None:
    """InputError (and no manifest: the run's results are refused) when two partitions
    hold one account; the hashes leave the summaries."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from margin_engine.batch.ids import refuse_shared, shared_accounts

    hashes = [item.pop("account_hashes") for item in done]
    names = [str(item["partition"]) for item in done]
    def ids(k: int) -> list[str]:  # as the reader takes them: text, whatever the column type
        column = pq.read_table(parts[names[k]].accounts, columns=["account"]).column("account")
        return list(pc.cast(column, pa.string()).to_pylist())

    refuse_shared(shared_accounts(hashes), names, ids)


@contextmanager
def _claim_output(out: Path, book: Path, every: list[Partition]) -> Iterator[None]:
    """This run's hold on the output folder: refused inside the book (results would be
    written over its parts) or where a file is; created; then an exclusive lock on
    ``OUTPUT/_batch.lock`` while the block runs (released when it ends or the process dies),
    so that a second batch into the folder is refused instead of mixing its parts and
    manifest with this run's. The lock file stays: deleting it would let a run that opened
    it before the deletion and one that creates it anew both hold a lock."""
    import fcntl

    if out.resolve() == book.resolve() or book.resolve() in out.resolve().parents:
        raise InputError("an output folder outside the book folder", field="--output",
                         value=str(out))
    if out.exists() and not out.is_dir():
        raise InputError("an output folder (a file of that name is there)", field="--output",
                         value=str(out))
    _refuse_other_folder(out, every)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"an output folder that can be created here ({exc.strerror})",
                         field="--output", value=str(out)) from None
    with open(out / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"an output folder no other batch is writing to (another run "
                             f"holds {LOCK}: wait for it to end, or give another folder)",
                             field="--output", value=str(out)) from None
        except OSError as exc:  # a filesystem without locks (some network mounts): unguarded
            logging.getLogger(__name__).warning("%s: no lock (%s); another batch into this "
                                                "folder would not be refused", out, exc)
        yield


def _refuse_other_folder(out: Path, every: list[Partition], shown: int = 3) -> None:
    """Refuse a folder that holds something besides the folders this book's results go in
    (``every``'s partition folders, made or linked there beforehand) and hidden files, and
    was never a batch's output (no ``LOCK``, no ``MANIFEST``): a home or project folder given
    by mistake would get result parts, a manifest and a lock file among its own files. A
    batch's output may hold files of the user's besides (they are left alone)."""
    if not out.is_dir() or (out / LOCK).exists() or (out / MANIFEST).exists():
        return
    tops = {PurePosixPath(p.name).parts[0] for p in every if "/" in p.name}  # subfolders
    with os.scandir(out) as entries:
        others = sorted(e.name for e in entries if not (e.name in tops and e.is_dir())
                        and not e.name.startswith("."))  # (.gitkeep, a writer's temporaries)
    if others:
        listed = ", ".join(others[:shown]) + (", ..." if len(others) > shown else "")
        raise InputError(f"an empty output folder or one of this book's runs (it holds "
                         f"{listed} and no {MANIFEST} or {LOCK} of a batch)", field="--output",
                         value=str(out))


def _prepare_output(out: Path, every: list[Partition]) -> None:
    """Refuse an output folder holding result parts that are not partitions of this book
    (they would be read with this run's); forget the last run's manifest and what a stopped
    run left half-written."""
    mine = {f"{p.name}.parquet" for p in every}
    foreign = [name for name in parquet_parts(out) if name not in mine]
    if foreign:
        raise InputError(f"an empty output folder or one of this book's runs (it holds "
                         f"{len(foreign)} result part(s) that are not partitions of this book: "
                         f"{', '.join(foreign[:3])})", field="--output", value=str(out))
    (out / MANIFEST).unlink(missing_ok=True)
    _remove_temporaries(out, (*sorted(mine), MANIFEST))


def _remove_temporaries(out: Path, names: Iterable[str]) -> None:
    """Delete the hidden temporaries of ``names`` (files under ``out``) that a stopped writer
    left (``write_whole``): this run's own, nothing else."""
    for name in names:
        target = out / name
        if target.parent.is_dir():
            for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
                leftover.unlink(missing_ok=True)


class WorkerLost(MarginEngineError):
    """Every worker that ran a partition died (killed for its memory, or crashed); the run
    stops with no manifest, as if killed."""

    def __init__(self, partition: str, tries: int, last_worker: str) -> None:
        super().__init__(
            f"partition {partition}: the {tries} worker{'s' if tries != 1 else ''} that ran it "
            f"died (the last {last_worker}): killed for using more memory than a worker may "
            "(split the book into smaller partitions, or give each worker more memory) or "
            "crashed, as its log says; this run is not complete: run it again")


def _on_dask(parts: list[Partition], job: BatchJob, scheduler: str, workers: int,
             progress: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    import distributed

    dask: Any = distributed  # untyped
    if scheduler == "local":
        # the workers' own logs stay quiet: a part that fails is reported once, by its
        # InputError, not also as the worker's log of it with a traceback
        cluster = dask.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, memory_limit=0,
                                    silence_logs=logging.CRITICAL)
        client = dask.Client(cluster)
    else:
        cluster = None
        try:
            client = dask.Client(scheduler, timeout=SCHEDULER_TIMEOUT)  # (reached by run_batch)
        except (OSError, ValueError) as exc:  # (asyncio's and dask's time-outs: OSError)
            raise InputError(f"the address of a running Dask scheduler ({exc})",
                             field="--scheduler", value=scheduler) from None
    futures: list[Any] = []
    try:
        futures = [client.submit(margin_partition, part, job, key=f"margin-{part.name}",
                                 pure=False) for part in parts]
        done = []
        for future in dask.as_completed(futures):
            try:
                result = future.result()
            except dask.KilledWorker as exc:
                raise WorkerLost(str(exc.task).removeprefix("margin-"), exc.allowed_failures + 1,
                                 str(getattr(exc.last_worker, "address", exc.last_worker))
                                 ) from None
            done.append(result)
            future.release()
            if progress is not None:
                progress(result)
        order = {part.name: k for k, part in enumerate(parts)}  # the listing's order
        return sorted(done, key=lambda item: order[str(item["partition"])])
    finally:
        client.cancel([f for f in futures if not f.done()])  # a part failed: stop the rest
        client.close()
        if cluster is not None:
            cluster.close()


def read_results(output: str | Path) -> Any:
    """The result parts of the last complete batch run into ``output`` (those its manifest
    lists, in part order) as one Arrow table; refused when no run completed there or a part
    no longer has the rows the run wrote."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(output)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise InputError(f"the output folder of a batch run that completed (no readable "
                         f"{MANIFEST}: the run was stopped before its end, or this folder is "
                         "not a batch output; run the batch again)", source=str(output)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"a {MANIFEST} of format {MANIFEST_FORMAT}",
                         source=str(folder / MANIFEST))
    tables = []
    for part in manifest.get("parts", ()):
        if not (isinstance(part, dict) and isinstance(part.get("file"), str)
                and isinstance(part.get("accounts"), int)):
            raise InputError("parts of {file, accounts}", field="parts", value=str(part),
                             source=str(folder / MANIFEST))
        relative = PurePosixPath(part["file"])
        if relative.is_absolute() or ".." in relative.parts:
            raise InputError("parts inside the output folder", field="parts",
                             value=part["file"], source=str(folder / MANIFEST))
        path = folder / relative
        table = pq.read_table(path) if path.is_file() else None
        if table is None or table.num_rows != part["accounts"]:
            raise InputError(f"{part['accounts']} result rows in {part['file']}, as the run "
                             "wrote them (the part is missing or was changed since: run the "
                             "batch again)", source=str(path))
        tables.append(table)
    return pa.concat_tables(tables) if tables else _empty_results()
