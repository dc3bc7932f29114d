"""Errors as RFC 9457 problem details (``application/problem+json``): ``type``, ``title``,
``status``, ``detail``, ``instance`` and, for bad input, ``errors``: every field at fault with
its path in the request (``portfolio.accounts[0].positions[1].size``), the value given and what
was expected."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from margin_engine.core.errors import InputError

log = logging.getLogger("margin_engine.service")
MEDIA_TYPE = "application/problem+json"


class ProblemKind(StrEnum):
    """Every kind of problem the service answers with (``type`` is ``/problems/<kind>``)."""

    INVALID_INPUT = "invalid-input"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate-limited"
    TOO_LARGE = "too-large"
    NO_MARKET = "no-market"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    INTERNAL = "internal"


TITLES = {
    ProblemKind.INVALID_INPUT: "The request is not valid",
    ProblemKind.UNAUTHENTICATED: "An API key is needed",
    ProblemKind.FORBIDDEN: "This API key may not do that",
    ProblemKind.NOT_FOUND: "Not found",
    ProblemKind.CONFLICT: "Conflicts with the stored state",
    ProblemKind.RATE_LIMITED: "Too many requests for this API key",
    ProblemKind.TOO_LARGE: "The request body is too large",
    ProblemKind.NO_MARKET: "No market to margin stored accounts with",
    ProblemKind.METHOD_NOT_ALLOWED: "Method not allowed",
    ProblemKind.INTERNAL: "Internal error",
}
STATUS = {
    ProblemKind.INVALID_INPUT: 422, ProblemKind.UNAUTHENTICATED: 401,
    ProblemKind.FORBIDDEN: 403, ProblemKind.NOT_FOUND: 404, ProblemKind.CONFLICT: 409,
    ProblemKind.RATE_LIMITED: 429, ProblemKind.TOO_LARGE: 413, ProblemKind.NO_MARKET: 409,
    ProblemKind.METHOD_NOT_ALLOWED: 405, ProblemKind.INTERNAL: 500,
}
EXPLANATIONS = {
    ProblemKind.INVALID_INPUT: "A field of the request is not what was expected; `errors` "
    "names each one (`field`: its path in the request, `value`, `expected`). Nothing was "
    "applied.",
    ProblemKind.UNAUTHENTICATED: "Send `Authorization: Bearer <API key>` (keys come from "
    "`margin-engine keys create`). A revoked or unknown key is refused.",
    ProblemKind.FORBIDDEN: "The key lacks the scope (read, trade, admin) or is bound to another "
    "account: an account's key reads and changes that account only; the pool needs admin.",
    ProblemKind.NOT_FOUND: "No such account, position, collateral balance or path.",
    ProblemKind.CONFLICT: "The request cannot apply to the stored state as it is.",
    ProblemKind.RATE_LIMITED: "The key's token bucket is empty; retry after `Retry-After` "
    "seconds.",
    ProblemKind.TOO_LARGE: "Bodies are limited in size; margin large books with the CLI.",
    ProblemKind.NO_MARKET: "Stored accounts are margined at the market of the store's monitor, "
    "or at `margin-engine serve --market MARKET`; this service has neither.",
    ProblemKind.METHOD_NOT_ALLOWED: "The path does not take this HTTP method.",
    ProblemKind.INTERNAL: "The service failed; the error is logged with the request.",
}


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    value: Any
    expected: str

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "value": jsonable(self.value), "expected": self.expected}


@dataclass(slots=True)
class ProblemError(Exception):
    """Raised by routes and dependencies; answered as problem+json."""

    kind: ProblemKind
    detail: str
    errors: Sequence[FieldError] = ()
    headers: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}"


def jsonable(value: Any) -> Any:
    """A value as JSON can carry it (Decimal and other numbers as numbers when finite, else
    text; containers element-wise, shortened)."""
    if value is None or isinstance(value, bool | str | int):
        return value if not isinstance(value, str) or len(value) <= 200 else value[:197] + "..."
    if isinstance(value, float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else str(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in list(value)[:20]]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in list(value.items())[:20]}
    return jsonable(str(value))


def input_error_path(exc: InputError, documents: Mapping[str, Any] | None = None) -> str:
    """The path of the field at fault in the request: the error's dotted field, with the
    account's index and the position's index spliced in after the document it came from
    (``portfolio.accounts[2].positions[0].size``)."""
    name = exc.field or ""
    root, _, rest = name.partition(".")
    document = (documents or {}).get(root)
    if exc.account is None or not isinstance(document, Mapping):
        if exc.position is not None:
            name = f"{name}[position {exc.position}]"
        return name
    accounts = document.get("accounts")
    index = next((k for k, a in enumerate(accounts) if isinstance(a, Mapping)
                  and a.get("id") == exc.account), None) if isinstance(accounts, list) else None
    path = f"{root}.accounts[{index if index is not None else exc.account}]"
    if exc.position is not None:
        path += f".positions[{exc.position}]"
    return f"{path}.{rest}" if rest else path


def from_input_error(exc: InputError, documents: Mapping[str, Any] | None = None,
                     status: ProblemKind = ProblemKind.INVALID_INPUT) -> ProblemError:
    path = input_error_path(exc, documents)
    return ProblemError(status, str(exc), [FieldError(path or "body", exc.value, exc.expected)])


def problem_response(problem: ProblemError, request: Request | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{problem.kind.value}", "title": TITLES[problem.kind],
        "status": STATUS[problem.kind], "detail": problem.detail}
    if request is not None:
        body["instance"] = request.url.path
    if problem.errors:
        body["errors"] = [e.to_json() for e in problem.errors]
    return JSONResponse(body, status_code=STATUS[problem.kind], media_type=MEDIA_TYPE,
                        headers=dict(problem.headers))


def _validation_path(loc: Sequence[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        where = parts.pop(0)
        if where != "body":
            parts.insert(0, where)
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _field_error(error: Mapping[str, Any]) -> FieldError:
    if error.get("type") == "json_invalid":  # loc is ("body", character offset)
        reason = (error.get("ctx") or {}).get("error", "")
        offset = list(error.get("loc", ()))[-1:]
        return FieldError("body", f"character {offset[0]}" if offset else None,
                          f"valid JSON ({reason})" if reason else "valid JSON")
    return FieldError(_validation_path(error.get("loc", ())), error.get("input"),
                      str(error.get("msg", "a valid value")))


def from_validation_error(exc: RequestValidationError) -> ProblemError:
    errors = [_field_error(e) for e in exc.errors()]
    detail = "; ".join(f"{e.field}: {e.expected}" for e in errors[:5])
    return ProblemError(ProblemKind.INVALID_INPUT, detail, errors)


_BY_STATUS = {404: ProblemKind.NOT_FOUND, 405: ProblemKind.METHOD_NOT_ALLOWED,
              401: ProblemKind.UNAUTHENTICATED, 403: ProblemKind.FORBIDDEN,
              413: ProblemKind.TOO_LARGE, 409: ProblemKind.CONFLICT,
              429: ProblemKind.RATE_LIMITED}


def install(app: FastAPI) -> None:
    """Answer every error as problem+json."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(exc, request)

    async def on_input(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InputError)
        return problem_response(from_input_error(exc), request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(from_validation_error(exc), request)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = _BY_STATUS.get(exc.status_code)
        if kind is None:  # any other status keeps its code, with the generic shape
            return JSONResponse({"type": "about:blank", "title": str(exc.detail),
                                 "status": exc.status_code, "detail": str(exc.detail),
                                 "instance": request.url.path}, status_code=exc.status_code,
                                media_type=MEDIA_TYPE)
        return problem_response(ProblemError(kind, str(exc.detail),
                                             headers=dict(exc.headers or {})), request)

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem_response(ProblemError(ProblemKind.INTERNAL,
                                             f"{type(exc).__name__} (logged)"), request)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(InputError, on_input)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_error)
