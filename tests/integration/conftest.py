"""Real servers for integration tests: PostgreSQL and NATS on this machine, started if down.
When one cannot start: a failure under CI=true, a loud skip otherwise."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
NATS_URL = "nats://127.0.0.1:4222"
START = {
    5432: "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    4222: "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
          "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_server(port: int, name: str) -> None:
    if _listening(port):
        return
    subprocess.run(START[port], shell=True, check=False, capture_output=True, timeout=60)
    for _ in range(50):
        if _listening(port):
            return
        time.sleep(0.2)
    message = (f"!!! {name} is not running on 127.0.0.1:{port} and could not be started "
               f"with: {START[port]}")
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{message} (CI=true: integration servers are required)", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    ensure_server(5432, "PostgreSQL")
    schema = f"me_test_{uuid.uuid4().hex[:12]}"
    url = f"{PG_URL}?schema={schema}"
    yield url
    from margin_engine.store.postgres import PostgresRepository

    repo = PostgresRepository(url)
    repo.drop()
    repo.close()


@pytest.fixture
def nats_url() -> str:
    ensure_server(4222, "NATS")
    return NATS_URL


def committed_ticks(db: Path) -> int:
    """The ticks a monitor's SQLite store has committed, read without writing (0 before the
    store has its tables): sequence numbers start at 1 and are committed in order, so the
    largest is also the count."""
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            row = con.execute("SELECT MAX(seq) FROM ticks").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row and row[0] is not None else 0
