"""The ``--scheduler`` of a batch: its form checked, and a running Dask scheduler found there
before any output is written.

A well-formed address can still lead nowhere a batch can run: nothing listens there (Dask
retries for its whole connect time-out, 30 s), a host that does not answer, or another
server. Dask reads the first eight bytes it receives as the size of the message to follow,
so a database's or a message broker's greeting asks for exabytes (reported as "out of
memory"), and a server that waits for its own protocol's first line never answers Dask's
handshake, which Dask waits for without a time-out. ``reach_scheduler`` tells these apart
within ``SCHEDULER_TIMEOUT`` seconds: a TCP connection first, then Dask's handshake and an
``identity`` request, whose ``type`` must be ``Scheduler`` (a worker's port answers too).
"""

from __future__ import annotations

import asyncio
from typing import Any

from margin_engine.core.errors import InputError
from margin_engine.core.net import Unreachable, address, tcp_connect

SCHEDULER_TIMEOUT = 10.0  # seconds to connect to a scheduler and hear it answer
FIELD = "--scheduler"
_FORMS = "local, none or tcp://HOST:PORT (a port 1-65535, an IPv6 host in brackets)"
_RUNNING = "the address of a running Dask scheduler"


def check_scheduler(scheduler: str) -> str:
    """``scheduler`` when it is ``local``, ``none`` or ``tcp://HOST:PORT`` (a port 1-65535;
    an IPv6 host in brackets), else InputError naming it."""
    if scheduler not in ("local", "none"):
        host_port(scheduler)
    return scheduler


def host_port(scheduler: str) -> tuple[str, int]:
    """(host, port) of ``tcp://HOST:PORT`` (an IPv6 host without its brackets), else
    InputError naming the address."""
    if not scheduler.startswith("tcp://"):
        raise InputError(_FORMS, field=FIELD, value=scheduler)
    host, _, port = scheduler[len("tcp://"):].rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    name = host[1:-1] if bracketed else host
    if not (name and name.isascii() and not any(c.isspace() or c in "/[]" for c in name)
            and (bracketed or ":" not in name)
            and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise InputError(_FORMS, field=FIELD, value=scheduler)
    return name, int(port)


def reach_scheduler(scheduler: str, timeout: float = SCHEDULER_TIMEOUT) -> None:
    """Nothing when a Dask scheduler answers at ``scheduler`` (``tcp://HOST:PORT``) within
    ``timeout`` seconds; else InputError by ``--scheduler`` saying what is there instead:
    nothing listening, a host that does not answer, a server of another protocol, a Dask
    worker."""
    host, port = host_port(scheduler)
    where = address(host, port)
    try:
        tcp_connect(host, port, timeout).close()
    except Unreachable as exc:
        raise InputError(f"{_RUNNING} ({exc})", field=FIELD, value=scheduler) from None
    try:
        kind = asyncio.run(asyncio.wait_for(_identity(scheduler, timeout), timeout))
    except TimeoutError:
        raise InputError(f"{_RUNNING} (the server at {where} did not answer Dask's handshake "
                         f"in {timeout:g} s: another kind of server?)", field=FIELD,
                         value=scheduler) from None
    except Exception as exc:  # noqa: BLE001 (its greeting read as Dask's frames: any error)
        raise InputError(f"{_RUNNING} (the server at {where} answered, but not in Dask's "
                         f"protocol: {type(exc).__name__} reading it as a Dask message)",
                         field=FIELD, value=scheduler) from None
    if kind != "Scheduler":
        raise InputError(f"{_RUNNING} (the Dask server at {where} is a {kind}, not the "
                         "scheduler)", field=FIELD, value=scheduler)


async def _identity(scheduler: str, timeout: float) -> str:
    """The ``type`` of the Dask server at ``scheduler`` by its ``identity`` answer."""
    import distributed.comm

    dask: Any = distributed.comm  # untyped
    comm = await dask.connect(scheduler, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        answer = await comm.read()
    finally:
        await comm.close()
    return str(answer.get("type")) if isinstance(answer, dict) else type(answer).__name__
