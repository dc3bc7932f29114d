"""A TCP server on a loopback port standing for a server of another kind at an address given
for a Dask scheduler or a NATS feed: one that greets first, or one that never answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def loopback_server(greeting: bytes | None) -> Iterator[int]:
    """The port of a loopback TCP server that sends ``greeting`` to every connection (None:
    it reads and never answers, as a server waiting for its own protocol's first line)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)
            if greeting is not None:
                conn.sendall(greeting)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
