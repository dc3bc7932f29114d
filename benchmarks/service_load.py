"""Bounded loopback load test of ``POST /v1/accounts/{id}/what-if`` (not run by the test suite).

A SQLite store holds one portfolio-margined account with 10 positions (BTC and ETH perps,
futures and options) and two collateral assets; ``margin-engine serve`` runs as a subprocess
(no access log, a key with no effective rate limit); each what-if adds one order.
The load generator keeps ``--connections`` keep-alive HTTP/1.1 requests in flight: ``wrk``
(C, two threads; Debian: ``apt-get install -y wrk``) when it is installed, else a lean asyncio
client in this process (which then takes a good part of the machine's CPU from the server: the
report says which client ran). Reports requests/s and latency percentiles for the full what-if
(liquidation prices before and after), for margins only (``"liquidation_prices": false``), and
the floor of the HTTP stack (``GET`` of the account: auth and a store read, no margin).

    .venv/bin/python benchmarks/service_load.py [--seconds 10] [--connections 16]
        [--workers 1] [--client auto|wrk|asyncio] [--append benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "margin_engine.cli.app"]
MARKET: dict[str, Any] = {
    "schema": "margin-engine/market/v1", "timestamp": "2025-06-01T00:00:00Z",
    "underlyings": {"BTC": {"index": 65000, "vol": {"type": "flat", "sigma": 0.55}},
                    "ETH": {"index": 2500, "vol": {"type": "atm_by_expiry", "points": {
                        "27JUN25": 0.62, "26SEP25": 0.66}}}},
    "assets": {"USDC": {"price": 0.9995}, "USD": {"price": 1}, "BTC": {"price": 65000},
               "ETH": {"price": 2500}},
    "correlation": {"BTC": {"ETH": 0.8}}}
POSITIONS = [("BTC-PERP", 1.0, 64000.0), ("BTC-27JUN25", -0.5, 65500.0),
             ("BTC-27JUN25-75000-C", -1.0, 900.0), ("BTC-27JUN25-60000-P", 2.0, 800.0),
             ("BTC-26SEP25-70000-C", 1.0, 3000.0), ("BTC-26SEP25-55000-P", -1.0, 1500.0),
             ("ETH-PERP", 10.0, 2400.0), ("ETH-26SEP25", -5.0, 2550.0),
             ("ETH-27JUN25-3000-C", -10.0, 40.0), ("ETH-27JUN25-2200-P", 5.0, 60.0)]
ORDER = {"instrument": "BTC-PERP", "size": 0.5, "price": 65100}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str) -> str:
    return subprocess.run([*CLI, *args], check=True, capture_output=True, text=True,
                          cwd=ROOT).stdout


def setup(folder: Path) -> tuple[str, Path, str]:
    store = f"sqlite:{folder / 'load.db'}"
    market = folder / "market.json"
    market.write_text(json.dumps(MARKET))
    admin = run("keys", "create", "--scope", "admin", "--store", store, "--rate", "1e9",
                "--burst", "1e9").strip()
    return store, market, admin


def start_server(store: str, market: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    server = subprocess.Popen([*CLI, "serve", "--store", store, "--market", str(market),
                               "--port", str(port), "--workers", str(workers),
                               "--no-access-log"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"the server did not start: {server.stderr.read() if server.stderr else ''}")


def fill_account(url: str, admin: str) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as client:
        client.put("/v1/accounts/bench", json={"mode": "portfolio"}).raise_for_status()
        for instrument, size, entry in POSITIONS:
            client.put(f"/v1/accounts/bench/positions/{instrument}",
                       json={"size": size, "entry_price": entry}).raise_for_status()
        for asset, amount in (("USDC", 250000.0), ("BTC", 1.0)):
            client.put(f"/v1/accounts/bench/collateral/{asset}",
                       json={"amount": amount}).raise_for_status()


def request_bytes(port: int, key: str, body: dict[str, Any] | None) -> bytes:
    """One keep-alive HTTP/1.1 request, built once: the client's per-request work is a write
    and a read (httpx spends more CPU per request than the server on this 2-core machine)."""
    if body is None:
        return (f"GET /v1/accounts/bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {key}\r\n\r\n").encode()
    payload = json.dumps(body).encode()
    return (f"POST /v1/accounts/bench/what-if HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def load(port: int, key: str, body: dict[str, Any] | None, seconds: float,
               connections: int, warmup: float) -> dict[str, Any]:
    """``body`` None: ``GET /v1/accounts/bench`` instead (auth and a store read, no margin:
    the floor of the HTTP stack)."""
    request = request_bytes(port, key, body)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop = measure_from + seconds

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (now := time.perf_counter()) < stop:
                status = await _exchange(reader, writer, request)
                done = time.perf_counter()
                if status != 200:
                    errors += 1
                elif now >= measure_from:
                    latencies.append(done - now)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - measure_from
    ms = np.array(latencies) * 1e3
    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "requests_per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if ms.size else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if ms.size else None,
            "max_ms": round(float(ms.max()), 2) if ms.size else None}


WRK_SCRIPT = """wrk.method = "{method}"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.headers["Content-Type"] = "application/json"
{body}
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def wrk_load(port: int, key: str, body: dict[str, Any] | None, seconds: float,
             connections: int, warmup: float, folder: Path) -> dict[str, Any]:
    """The same measure with ``wrk`` (a warm-up run first, not counted)."""
    script = folder / "request.lua"
    script.write_text(WRK_SCRIPT.format(
        method="GET" if body is None else "POST", key=key,
        body="" if body is None else _varied_orders(body)))
    path = "/v1/accounts/bench" + ("" if body is None else "/what-if")
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "--latency",
               "-s", str(script)]
    url = f"http://127.0.0.1:{port}{path}"
    if warmup > 0:
        subprocess.run([*command, "-d", f"{max(1, round(warmup))}s", url], check=True,
                       capture_output=True)
    out = subprocess.run([*command, "-d", f"{max(1, round(seconds))}s", url], check=True,
                         capture_output=True, text=True).stdout
    return parse_wrk(out)


def _varied_orders(body: dict[str, Any]) -> str:
    """A wrk ``request`` function that sends ``body`` with each order's size drawn anew per
    request (0.1 to 2.0 in steps of 0.1, either sign), so no two consecutive what-ifs need
    the same after."""
    text = json.dumps(body)
    for order in body["orders"]:
        text = text.replace(f'"size": {json.dumps(order["size"])}', '"size": SIZE', 1)
    parts = text.split("SIZE")
    pieces = " .. size() .. ".join(json.dumps(p) for p in parts)
    return ("function size()\n  local s = math.random(1, 20) / 10\n"
            "  if math.random() < 0.5 then s = -s end\n  return string.format('%.1f', s)\n"
            "end\n"
            f"request = function()\n  return wrk.format(nil, nil, nil, {pieces})\nend\n")


def parse_wrk(out: str) -> dict[str, Any]:
    """requests, errors (non-2xx and socket errors), requests/s and latency percentiles
    from ``wrk --latency`` output."""
    def percentile(name: str) -> float | None:
        found = re.search(rf"^\s*{name}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        return round(float(found.group(1)) * _UNITS[found.group(2)], 2) if found else None

    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    seconds = float(total.group(2)) * _UNITS[total.group(3)] / 1e3
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"requests": int(total.group(1)), "errors": errors, "seconds": round(seconds, 2),
            "requests_per_second": round(float(rate.group(1)), 1) if rate else None,
            "p50_ms": percentile("50"), "p99_ms": percentile("99"), "max_ms": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of load before each measure, not counted (a server"
                        " started cold shows a tail in its first seconds)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--client", choices=("auto", "wrk", "asyncio"), default="auto",
                        help="load generator: wrk when installed (auto), or the asyncio one")
    parser.add_argument("--append", type=Path, default=None,
                        help="Append a table row per mode to this RESULTS.md")
    args = parser.parse_args()
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "asyncio"
        if client == "asyncio":
            print("wrk is not installed (Debian: apt-get install -y wrk): using the asyncio "
                  "client, which shares the CPU with the server", file=sys.stderr)
    elif client == "wrk" and not shutil.which("wrk"):
        parser.error("--client wrk: wrk is not installed (Debian: apt-get install -y wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        store, market, admin = setup(Path(tmp))
        port = free_port()
        server = start_server(store, market, port, args.workers)
        url = f"http://127.0.0.1:{port}"
        try:
            fill_account(url, admin)
            results = {}
            for mode, body in (
                    ("what-if with liquidation prices",
                     {"orders": [ORDER], "liquidation_prices": True}),
                    ("what-if, margins only", {"orders": [ORDER], "liquidation_prices": False}),
                    ("floor: GET the account (auth, store read, no margin)", None)):
                if client == "wrk":
                    results[mode] = wrk_load(port, admin, body, args.seconds,
                                             args.connections, args.warmup, Path(tmp))
                else:
                    results[mode] = asyncio.run(load(port, admin, body, args.seconds,
                                                     args.connections, args.warmup))
        finally:
            server.terminate()
            server.wait(timeout=30)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "client": client,
              "load_average": list(os.getloadavg()), "workers": args.workers,
              "connections": args.connections, "results": results}
    print(json.dumps(report, indent=2))
    if args.append is not None:
        with args.append.open("a") as out:
            for mode, r in results.items():
                out.write(f"| {mode} | {args.workers} | {args.connections} | "
                          f"{r['requests_per_second']:,} | {r['p50_ms']} | {r['p99_ms']} | "
                          f"{r['requests']:,} | {r['errors']} |\n")


if __name__ == "__main__":
    main()
