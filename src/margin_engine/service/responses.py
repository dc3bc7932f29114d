"""OpenAPI descriptions of the problem responses every route may give."""

from __future__ import annotations

from typing import Any

_PROBLEM_SCHEMA = {"type": "object", "required": ["type", "title", "status", "detail"],
                   "properties": {
                       "type": {"type": "string"}, "title": {"type": "string"},
                       "status": {"type": "integer"}, "detail": {"type": "string"},
                       "instance": {"type": "string"},
                       "errors": {"type": "array", "items": {
                           "type": "object", "required": ["field", "expected"],
                           "properties": {"field": {"type": "string"}, "value": {},
                                          "expected": {"type": "string"}}}}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}}}


PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: _problem("No API key, or an unknown or revoked one."),
    403: _problem("The key lacks the scope, or the account is not the key's."),
    404: _problem("No such account or item."),
    409: _problem("No market to margin stored accounts with, or a conflict with the store."),
    422: _problem("Bad input: `errors` names each field (its path), the value and what was "
                  "expected."),
    429: _problem("The key's rate limit: retry after `Retry-After` seconds."),
}
