"""API keys: ``me.<key id>.<secret>``. The id is public (it names the key in the audit log and
in ``keys list``); the secret is 256 random bits shown once at creation. At rest only
scrypt(secret, per-key 16-byte salt, n=2^14, r=8, p=1) is kept.

Scopes: ``read`` (margins, what-if, the account's data), ``trade`` (also change positions and
collateral), ``admin`` (everything, every account and the pool; never bound to an account). A
key bound to an account reads and changes that account only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from margin_engine.core.errors import InputError
from margin_engine.core.names import EXPECTED_ACCOUNT_ID, account_id_problem
from margin_engine.core.numbers import parse_float
from margin_engine.store.base import Event, EventKind
from margin_engine.store.service import AUDIT_TICK, KeyRow, ServiceRepository

PREFIX = "me"
SCRYPT_N, SCRYPT_R, SCRYPT_P, DIGEST_BYTES = 2**14, 8, 1, 32
_TOKEN = re.compile(r"me\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")


class Scope(StrEnum):
    READ = "read"
    TRADE = "trade"
    ADMIN = "admin"


IMPLIED = {Scope.READ: {Scope.READ}, Scope.TRADE: {Scope.READ, Scope.TRADE},
           Scope.ADMIN: {Scope.READ, Scope.TRADE, Scope.ADMIN}}


def parse_scopes(text: str) -> frozenset[Scope]:
    """``read``, ``trade``, ``admin`` separated by commas or spaces; each implies the ones
    before it."""
    names = [s for s in re.split(r"[,\s]+", text.strip()) if s]
    if not names:
        raise InputError("one or more of read, trade, admin", field="--scope", value=text)
    scopes: set[Scope] = set()
    for name in names:
        try:
            scopes |= IMPLIED[Scope(name)]
        except ValueError:
            raise InputError("read, trade or admin", field="--scope", value=name) from None
    return frozenset(scopes)


def scrypt(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                          dklen=DIGEST_BYTES, maxmem=64 * 2**20)


def split_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _TOKEN.fullmatch(token.strip())
    return (match.group(1), match.group(2)) if match else None


def verify(row: KeyRow, secret: str) -> bool:
    return hmac.compare_digest(scrypt(secret, row.salt), row.digest)


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedKey:
    key_id: str
    token: str  # shown once
    scopes: frozenset[Scope]
    account: str | None


def _audit(kind: EventKind, key_id: str, payload: dict[str, object]) -> Event:
    return Event(AUDIT_TICK, kind.value, None,
                 json.dumps({"key_id": key_id, "by": "cli", **payload}, sort_keys=True))


def create_key(store: ServiceRepository, *, scopes: frozenset[Scope], account: str | None,
               label: str = "", rate_per_second: float | None = None,
               burst: float | None = None) -> CreatedKey:
    if Scope.ADMIN in scopes and account is not None:
        raise InputError("no --account for an admin key (admin sees the whole pool)",
                         field="--account", value=account)
    if account is not None:  # an id as books give them
        problem = account_id_problem(account) if account else "it is empty"
        if problem is not None:
            raise InputError(f"{EXPECTED_ACCOUNT_ID}; {problem}", field="--account",
                             value=account)
    for name, value in (("--rate", rate_per_second), ("--burst", burst)):
        if value is not None:  # finite: an infinite rate broke `keys list --json`
            parse_float(value, field=name, strictly_positive=True)
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    ordered = " ".join(s.value for s in Scope if s in scopes)
    row = KeyRow(key_id=key_id, salt=salt, digest=scrypt(secret, salt), scopes=ordered,
                 account=account, label=label, created_ns=time.time_ns(),
                 rate_per_second=rate_per_second, burst=burst)
    store.insert_key(row, _audit(EventKind.KEY_CREATED, key_id, {
        "scopes": ordered, "account": account, "label": label}))
    return CreatedKey(key_id=key_id, token=f"{PREFIX}.{key_id}.{secret}", scopes=scopes,
                      account=account)


def revoke_key(store: ServiceRepository, key_id: str) -> None:
    if not store.revoke_key(key_id, time.time_ns(), _audit(EventKind.KEY_REVOKED, key_id, {})):
        raise InputError("the id of a live key (see `margin-engine keys list`)",
                         field="KEY_ID", value=key_id)


def describe(row: KeyRow) -> dict[str, object]:
    """A key as ``keys list`` shows it (never the hash)."""
    from margin_engine.core.timeutil import ns_to_iso

    return {"key_id": row.key_id, "scopes": row.scopes.split(), "account": row.account,
            "label": row.label, "created": ns_to_iso(row.created_ns),
            "revoked": None if row.revoked_ns is None else ns_to_iso(row.revoked_ns),
            "rate_per_second": row.rate_per_second, "burst": row.burst}
