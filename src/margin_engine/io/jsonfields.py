"""Strict JSON reading: exact numbers, no NaN/Infinity literals, unknown fields refused."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from margin_engine.core.collector import no_cycle_collection
from margin_engine.core.errors import InputError
from margin_engine.core.names import check_name

_T = TypeVar("_T")


def _refuse_constant(name: str) -> Any:
    raise InputError("a finite number (NaN and Infinity are not JSON numbers)", value=name)


def read_json(path: str | Path) -> Any:
    """Read a JSON file with numbers as Decimal; errors name the file, line and column."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("an existing file", value=source, source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"a readable UTF-8 file ({exc})", source=source) from None
    return parse_json_text(text, source=source)


def load_document(path: str | Path, parse: Callable[[Any], _T]) -> _T:
    """Read a JSON file and parse it; every error is located in that file. The cycle
    collector is off meanwhile: a document and what is parsed from it hold no cycles, and its
    passes over a large book's objects doubled the time."""
    try:
        with no_cycle_collection():
            return parse(read_json(path))
    except InputError as exc:
        raise exc.located(source=str(path)) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once (json keeps the last of a repeated key
    without a word: ``{"size": "1", "size": "-100"}`` would be a size of -100)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise InputError("each key once in an object (JSON would keep the last value without "
                         "a word)", field=repeated, value="given twice")
    return found


def loads_unique(text: str | bytes) -> Any:
    """``json.loads`` that refuses a key given twice in an object (InputError naming it)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def parse_json_text(text: str, *, source: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant,
                          object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", source=source
        ) from None
    except InputError as exc:
        raise exc.located(source=source) from None
    except RecursionError:
        raise InputError(
            "JSON nested a few levels deep (portfolio and market files need fewer than 10)",
            value=f"JSON nested deeper than the parser follows (about "
                  f"{sys.getrecursionlimit()} levels)",
            source=source,
        ) from None
    except ValueError:  # the only other failure: an integer literal over the digit limit
        raise InputError(f"integers of at most {sys.get_int_max_str_digits()} digits",
                         value="a longer integer", source=source) from None


def require_object(
    value: Any,
    *,
    field: str,
    allowed: Iterable[str],
    required: Iterable[str] = (),
) -> Mapping[str, Any]:
    """Check that ``value`` is an object with only ``allowed`` keys and every ``required`` one
    (the first key in the object's order that is not allowed, then the first required one in
    ``required``'s order that is missing, is named). ``allowed`` given as a frozenset is taken
    as it is (a parser's per-row objects)."""
    if not isinstance(value, dict):
        raise InputError("a JSON object", field=field, value=_kind(value))
    allowed_set = allowed if isinstance(allowed, frozenset) else frozenset(allowed)
    if not value.keys() <= allowed_set:
        key = next(k for k in value if k not in allowed_set)
        raise InputError(
            f"one of the known fields {sorted(allowed_set)}",
            field=f"{field}.{key}" if field else key,
            value="unknown field",
        )
    for key in required:
        if key not in value:
            raise InputError("this required field", field=f"{field}.{key}" if field else key)
    return value


def require_list(value: Any, *, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise InputError("a JSON array", field=field, value=_kind(value))
    return value


def require_string(value: Any, *, field: str, expected: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(expected, field=field, value=value)
    return value.strip()


def require_name(value: Any, *, field: str, expected: str = "a non-empty string") -> str:
    """A non-empty string (stripped) that is a name: printable, bounded (``core.names``)."""
    return check_name(require_string(value, field=field, expected=expected), field=field)


def check_schema(document: Any, *, expected: str) -> None:
    """Refuse a document whose ``schema`` is missing, foreign or of an unknown version."""
    if not isinstance(document, dict):
        raise InputError("a JSON object at the top level", value=_kind(document))
    schema = document.get("schema")
    if schema != expected:
        family = expected.rsplit("/", 1)[0]
        if isinstance(schema, str) and schema.startswith(family + "/"):
            raise InputError(
                f"schema version {expected!r} (this engine reads that version only)",
                field="schema",
                value=schema,
            )
        raise InputError(f"{expected!r}", field="schema", value=schema)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    return type(value).__name__
