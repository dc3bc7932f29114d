"""Who is calling: the API key of the request (``Authorization: Bearer me.<id>.<secret>``),
checked against its scrypt hash once per process (then against the sha256 of the secret kept in
memory), refused when unknown or revoked (401), rate limited per key (429), and what it may do
(403): an account's key reads and changes that account only, the pool needs admin."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from .keys import Scope, split_token, verify
from .problems import ProblemError, ProblemKind
from .ratelimit import retry_after
from .state import ServiceState, service_state

bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                    description="An API key from `margin-engine keys create`: "
                                "`Authorization: Bearer me.<id>.<secret>`.")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="margin-engine"'}


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    key_id: str
    scopes: frozenset[Scope]
    account: str | None

    def require(self, scope: Scope, account: str | None = None) -> None:
        """403 unless the key has ``scope`` and, for an account's data, is that account's key
        or an admin key."""
        if scope not in self.scopes:
            raise ProblemError(ProblemKind.FORBIDDEN, f"this key has scopes "
                               f"{sorted(s.value for s in self.scopes)}, not {scope.value!r}")
        if account is None or Scope.ADMIN in self.scopes:
            return
        if self.account != account:
            whose = "no account" if self.account is None else f"account {self.account!r}"
            raise ProblemError(ProblemKind.FORBIDDEN, f"this key is bound to {whose}; it may "
                               f"not see or change account {account!r}")


async def principal_of(state: ServiceState, token: str | None) -> Principal:
    if not token:
        raise ProblemError(ProblemKind.UNAUTHENTICATED, "no API key: send Authorization: "
                           "Bearer <key>", headers=_CHALLENGE)
    parts = split_token(token)
    if parts is None:
        raise ProblemError(ProblemKind.UNAUTHENTICATED, "not an API key of this service "
                           "(me.<id>.<secret>)", headers=_CHALLENGE)
    key_id, secret = parts
    row = state.store.key_row(key_id)
    if row is None or row.revoked_ns is not None:
        raise ProblemError(ProblemKind.UNAUTHENTICATED, "unknown or revoked API key",
                           headers=_CHALLENGE)
    settings = state.settings
    fingerprint = hashlib.sha256(secret.encode()).digest()
    known = state.verified.get(key_id)
    if known is None or not hmac.compare_digest(known, fingerprint):
        wait = state.limiter.take(f"auth:{key_id}", settings.failed_auth_per_second,
                                  settings.failed_auth_burst)
        if wait is not None:  # bounds the scrypt work a guesser can cause
            raise ProblemError(ProblemKind.RATE_LIMITED, "too many failed attempts with this "
                               "key id", headers={"Retry-After": retry_after(wait)})
        if not await run_in_threadpool(verify, row, secret):
            raise ProblemError(ProblemKind.UNAUTHENTICATED, "unknown or revoked API key",
                               headers=_CHALLENGE)
        state.verified[key_id] = fingerprint
    wait = state.limiter.take(key_id, row.rate_per_second or settings.rate_per_second,
                              row.burst or settings.burst)
    if wait is not None:
        raise ProblemError(ProblemKind.RATE_LIMITED, f"rate limit of key {key_id} reached",
                           headers={"Retry-After": retry_after(wait)})
    return Principal(key_id=key_id, scopes=frozenset(Scope(s) for s in row.scopes.split()),
                     account=row.account)


async def authenticate(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Security(bearer)]) -> Principal:
    """The dependency of every /v1 route."""
    return await principal_of(service_state(request),
                              None if credentials is None else credentials.credentials)
