"""Shared fixtures: the worked-example folder (skipped with a reason when absent) and builders."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from margin_engine.book.bound import BoundBook, bind_market
from margin_engine.book.columnar import book_from_portfolio
from margin_engine.collateral.haircuts import CollateralConfig
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.margin.config import RiskConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# The shared worked examples and the hand-worked books assume no collateral haircuts.
NO_HAIRCUTS = RiskConfig(haircuts=CollateralConfig(enabled=False))
EXAMPLES = SHARED / "examples" / "foundation"

# The monitor's hand-worked book (2024-08-05): long 2 BTC (cross) with 5,000 USDC, margin call
# below 48,469 and liquidation below 47,980; an isolated short ETH; BTC held as collateral.
MONITOR_PORTFOLIO: dict[str, Any] = {"schema": "margin-engine/portfolio/v1", "accounts": [
    {"id": "long-20x", "mode": "cross", "collateral": {"USDC": 5000},
     "positions": [{"instrument": "BTC-PERP", "size": 2, "entry_price": 50000}]},
    {"id": "short-eth", "mode": "isolated", "collateral": {"USDC": 20000},
     "positions": [{"instrument": "ETH-PERP", "size": -10, "entry_price": 2500}]},
    {"id": "btc-collateral", "mode": "portfolio", "collateral": {"BTC": 1},
     "positions": []}]}
MONITOR_MARKET: dict[str, Any] = {
    "schema": "margin-engine/market/v1", "timestamp": "2024-08-05T00:00:00Z",
    "underlyings": {"BTC": {"index": 50000, "vol": {"type": "flat", "sigma": 0.6}},
                    "ETH": {"index": 2500, "vol": {"type": "flat", "sigma": 0.7}}},
    "assets": {"USDC": {"price": 1.0}, "BTC": {"price": 50000}, "ETH": {"price": 2500}}}


@pytest.fixture
def examples_dir() -> Path:
    if not (EXAMPLES / "expected.json").exists():
        pytest.skip(f"worked examples not found at {EXAMPLES} (../shared is absent)")
    return EXAMPLES


def market_doc(**overrides: Any) -> dict[str, Any]:
    """BTC 50,000 flat vol 0.5, ETH 2,000 flat vol 0.6; timestamp 2025-06-01T00:00:00Z."""
    doc: dict[str, Any] = {
        "schema": "margin-engine/market/v1",
        "timestamp": "2025-06-01T00:00:00Z",
        "underlyings": {
            "BTC": {"index": 50000, "vol": {"type": "flat", "sigma": 0.5}},
            "ETH": {"index": 2000, "vol": {"type": "flat", "sigma": 0.6}},
        },
        "assets": {"USDC": {"price": 1.0}, "BTC": {"price": 50000}, "ETH": {"price": 2000}},
    }
    doc.update(overrides)
    return doc


def portfolio_doc(*accounts: dict[str, Any], instruments: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": "margin-engine/portfolio/v1", "accounts": list(accounts)}
    if instruments is not None:
        doc["instruments"] = instruments
    return doc


def account(account_id: str, positions: list[tuple[str, float, float]],
            collateral: dict[str, Any] | None = None, mode: str = "portfolio") -> dict[str, Any]:
    return {"id": account_id, "mode": mode, "collateral": collateral or {"USDC": 100000},
            "positions": [{"instrument": i, "size": s, "entry_price": e} for i, s, e in positions]}


def bind(portfolio: dict[str, Any], market: dict[str, Any] | None = None) -> BoundBook:
    return bind_market(book_from_portfolio(parse_portfolio(portfolio)),
                       parse_market(market or market_doc()))


def assert_documents_close(got: Any, want: Any, rel: float, path: str = "$") -> None:
    """Two JSON-like documents equal in structure and text, numbers within ``rel`` relative."""
    if isinstance(want, bool) or isinstance(got, bool):
        assert got is want, f"{path}: {got!r} != {want!r}"
    elif isinstance(want, int | float) and isinstance(got, int | float):
        assert math.isclose(got, want, rel_tol=rel, abs_tol=0.0) or got == want, \
            f"{path}: {got!r} != {want!r} (rel {rel})"
    elif isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: {got!r} is not an object"
        assert set(got) == set(want), f"{path}: keys differ"
        for key in want:
            assert_documents_close(got[key], want[key], rel, f"{path}.{key}")
    elif isinstance(want, list | tuple):
        assert isinstance(got, list | tuple), f"{path}: {got!r} is not a list"
        assert len(got) == len(want), f"{path}: lengths differ"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_documents_close(g, w, rel, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def shown_on_terminal(arguments: list[str], stdout: Path, columns: int = 100) -> bytes:
    """Run ``margin-engine ARGUMENTS`` with stderr on a pseudo-terminal and stdout into the
    file ``stdout`` (a command typed by hand with its output redirected); what the terminal
    showed. The command must succeed."""
    import os
    import pty
    import subprocess
    import sys

    primary, secondary = pty.openpty()
    with stdout.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "margin_engine.cli.app", *arguments], stdout=sink,
            stderr=secondary, env={**os.environ, "COLUMNS": str(columns), "TERM": "xterm"})
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal's other end closed: the process is done
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=120) == 0, shown.decode(errors="replace")
    os.close(primary)
    return shown
