"""Stored accounts as portfolio documents, and audited changes to them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from margin_engine.io.portfolio_file import PORTFOLIO_SCHEMA
from margin_engine.store.base import Event, EventKind
from margin_engine.store.service import AUDIT_TICK, AccountRows, BookOp, BookWrite

AUDIT_KIND = {BookOp.PUT_ACCOUNT: EventKind.ACCOUNT_PUT,
              BookOp.DELETE_ACCOUNT: EventKind.ACCOUNT_DELETED,
              BookOp.PUT_POSITION: EventKind.POSITION_PUT,
              BookOp.DELETE_POSITION: EventKind.POSITION_DELETED,
              BookOp.PUT_COLLATERAL: EventKind.COLLATERAL_PUT,
              BookOp.DELETE_COLLATERAL: EventKind.COLLATERAL_DELETED}


def account_document(rows: AccountRows) -> dict[str, Any]:
    """The account object of a portfolio document."""
    return {"id": rows.account, "mode": rows.mode,
            "collateral": {asset: amount for asset, amount in rows.collateral},
            "positions": [{"instrument": name, "size": size, "entry_price": entry}
                          for name, size, entry in rows.positions]}


def portfolio_document(accounts: Sequence[Mapping[str, Any]],
                       instruments: Mapping[str, Any] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"schema": PORTFOLIO_SCHEMA, "accounts": list(accounts)}
    if instruments:
        document["instruments"] = dict(instruments)
    return document


def book_documents(accounts: Sequence[tuple[str, str]],
                   positions: Sequence[tuple[str, str, float, float]],
                   collateral: Sequence[tuple[str, str, float]]) -> list[dict[str, Any]]:
    """Every stored account as a portfolio account object (rows sorted by account)."""
    by_id: dict[str, dict[str, Any]] = {
        a: {"id": a, "mode": m, "collateral": {}, "positions": []} for a, m in accounts}
    for account, name, size, entry in positions:
        if account in by_id:
            by_id[account]["positions"].append(
                {"instrument": name, "size": float(size), "entry_price": float(entry)})
    for account, asset, amount in collateral:
        if account in by_id:
            by_id[account]["collateral"][asset] = float(amount)
    return list(by_id.values())


def audit_event(write: BookWrite, key_id: str, before: Any, after: Any) -> Event:
    """The audit event of a book change: which key changed what, from what to what."""
    payload = {"key_id": key_id, "op": write.op.value, "account": write.account,
               "name": write.name, "before": before, "after": after}
    return Event(AUDIT_TICK, AUDIT_KIND[write.op].value, write.account,
                 json.dumps(payload, sort_keys=True, separators=(",", ":")))


def changed(rows: AccountRows | None, write: BookWrite) -> dict[str, Any] | None:
    """The account object after ``write`` (None: deleted)."""
    if write.op is BookOp.DELETE_ACCOUNT:
        return None
    base = account_document(rows) if rows is not None else {
        "id": write.account, "mode": write.mode, "collateral": {}, "positions": []}
    document = {**base, "collateral": dict(base["collateral"]),
                "positions": [dict(p) for p in base["positions"]]}
    if write.op is BookOp.PUT_ACCOUNT:
        document["mode"] = write.mode
    elif write.op in (BookOp.PUT_POSITION, BookOp.DELETE_POSITION):
        document["positions"] = [p for p in document["positions"]
                                 if p["instrument"] != write.name]
        if write.op is BookOp.PUT_POSITION:
            document["positions"].append({"instrument": write.name, "size": write.size,
                                          "entry_price": write.entry_price})
            document["positions"].sort(key=lambda p: p["instrument"])
    elif write.op is BookOp.PUT_COLLATERAL:
        document["collateral"][write.name] = write.amount
    else:
        document["collateral"].pop(write.name, None)
    return document
