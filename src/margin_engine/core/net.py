"""What answers at a TCP address: the reason an address given for a server (a Dask scheduler, a
NATS feed) leads nowhere, in words a user can act on."""

from __future__ import annotations

import socket


class Unreachable(Exception):
    """No TCP connection to the address; ``str()`` says why."""


def address(host: str, port: int) -> str:
    """host:port as written in a URL (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tcp_connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to host:port (the caller closes it), or Unreachable saying why: an
    unknown host, nothing listening, no answer within ``timeout`` seconds, another error."""
    where = address(host, port)
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise Unreachable(f"the host {host!r} is not known: {exc.strerror}") from None
    except ConnectionRefusedError:
        raise Unreachable(f"nothing listens at {where}: connection refused") from None
    except TimeoutError:
        raise Unreachable(f"no answer from {where} in {timeout:g} s") from None
    except OSError as exc:
        raise Unreachable(f"{where}: {exc.strerror or exc}") from None


def first_bytes(host: str, port: int, timeout: float, most: int = 64) -> bytes:
    """What the server at host:port sends first, unasked, within ``timeout`` seconds (b"" when
    it sends nothing: it waits for the client to speak, or closed the connection); Unreachable
    when there is no connection."""
    with tcp_connect(host, port, timeout) as conn:
        conn.settimeout(timeout)
        try:
            return conn.recv(most)
        except (TimeoutError, ConnectionResetError):
            return b""


def shown(data: bytes, most: int = 24) -> str:
    """The first ``most`` bytes of ``data`` for a message: printable ASCII as text, the rest
    escaped."""
    return repr(data[:most])[2:-1] + ("..." if len(data) > most else "")


def listen_problem(host: str, port: int) -> tuple[str, str] | None:
    """Why a server could not listen on host:port, as (the option at fault, ``--host`` or
    ``--port``; the reason), or None when it can (port 0: any free port). Bound the way the
    server binds (SO_REUSEADDR: a port in TIME_WAIT is free) and released at once."""
    import errno

    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        return "--host", f"the host {host!r} is not known: {exc.strerror}"
    with socket.socket(family, kind, proto) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "--port", f"port {port} on {host} is in use by another program"
            if exc.errno == errno.EADDRNOTAVAIL:
                return "--host", f"{host} is not an address of this machine"
            if exc.errno == errno.EACCES:
                return "--port", f"port {port} needs privileges this user does not have"
            return "--port", f"{address(host, port)}: {exc.strerror or exc}"
    return None
