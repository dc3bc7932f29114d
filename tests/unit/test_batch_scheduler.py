"""``batch --scheduler tcp://HOST:PORT`` at an address where no Dask scheduler runs: one line
by the field, quickly, nothing written. Before: a port nobody listens at took Dask's 30 s
connect time-out; a server that greets first (a message broker, a database) had its greeting
read as a message size of exabytes and the batch failed "out of memory"; a server that waits
for its own protocol hung the batch for ever; a worker's address was taken for the
scheduler's."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from margin_engine.batch.book import write_partitioned_book
from margin_engine.batch.scheduler import reach_scheduler
from margin_engine.cli.app import app
from margin_engine.core.errors import InputError
from tests.unit.level_books import declared_instruments_document, level_market, random_level_book
from tests.unit.loopback import loopback_server

GREETING = b'INFO {"server_id":"x","version":"2.10.0","max_payload":1048576}\r\n'  # NATS's


def refused(address: str, timeout: float = 10.0) -> tuple[str, float]:
    started = time.perf_counter()
    with pytest.raises(InputError) as raised:
        reach_scheduler(address, timeout=timeout)
    assert raised.value.field == "--scheduler"
    assert raised.value.value == address
    return str(raised.value), time.perf_counter() - started


def test_a_server_that_greets_in_another_protocol_is_named_at_once() -> None:
    with loopback_server(GREETING) as port:
        message, seconds = refused(f"tcp://127.0.0.1:{port}")
    assert "answered, but not in Dask's protocol" in message, message
    assert seconds < 5.0


def test_a_server_that_never_answers_is_given_up_after_the_time_out() -> None:
    with loopback_server(None) as port:
        message, seconds = refused(f"tcp://127.0.0.1:{port}", timeout=0.5)
    assert "did not answer Dask's handshake in 0.5 s" in message, message
    assert seconds < 5.0


def test_a_port_nobody_listens_at_is_refused_at_once() -> None:
    with socket.socket() as probe:  # bound, never listening
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
        message, seconds = refused(address)
    assert "nothing listens at 127.0.0.1:" in message, message
    assert seconds < 5.0


def test_an_unknown_host_is_named() -> None:
    message, _ = refused("tcp://no-such-host.invalid:8786")
    assert "the host 'no-such-host.invalid' is not known" in message, message


def test_a_workers_address_is_not_taken_for_the_schedulers() -> None:
    import distributed

    with distributed.LocalCluster(n_workers=1, processes=False, protocol="tcp://",
                                  dashboard_address=None) as cluster:
        reach_scheduler(cluster.scheduler_address)  # the scheduler itself: accepted
        worker = next(iter(cluster.scheduler.workers))
        message, _ = refused(worker)
    assert "is a Worker, not the scheduler" in message, message


def test_the_cli_says_so_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    bound = random_level_book(40, seed=3, asked_margins=False)
    write_partitioned_book(bound.book, tmp_path / "book", 2, declared_instruments_document())
    (tmp_path / "market.json").write_text(json.dumps(level_market()))
    with loopback_server(GREETING) as port:
        address = f"tcp://127.0.0.1:{port}"
        out = CliRunner().invoke(app, ["batch", "--book", str(tmp_path / "book"), "--market",
                                       str(tmp_path / "market.json"), "--scheduler", address,
                                       "--output", str(tmp_path / "out")])
    assert out.exit_code == 2, out.output
    assert out.output.startswith(f"margin-engine: error: field '--scheduler': got '{address}', "
                                 "expected the address of a running Dask scheduler"), out.output
    assert "memory" not in out.output
    assert "Traceback" not in out.output
    assert not (tmp_path / "out").exists()


def test_an_ipv6_address_is_written_in_brackets() -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with probe:
        port = probe.getsockname()[1]
        message, _ = refused(f"tcp://[::1]:{port}")
    assert f"nothing listens at [::1]:{port}: connection refused" in message, message
