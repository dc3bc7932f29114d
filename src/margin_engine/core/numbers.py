"""Parsing of numbers given as JSON numbers or strings, refusing NaN, infinities and booleans."""

from __future__ import annotations

import functools
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from margin_engine.core.errors import InputError

# Largest magnitude of any input number (sizes, prices, amounts, parameters). Real books stay
# far below it (1e15 USD is ten times world GDP), integers up to it are exact in float64 (2^53 is
# about 9e15), and products of a few such numbers (size x price x contract size) stay finite.
MAX_MAGNITUDE = 1e15

# A number written as text: ASCII digits, optional sign, point and exponent; no "_", "," or
# other scripts' digits (which Python's Decimal and float would accept), no nan/inf words.
# Also valid as an RE2 pattern, so the bulk reader checks CSV cells with the same rule.
PLAIN_NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
PLAIN_NOTATION = "in plain ASCII notation (such as 2500, -0.5 or 1e-3)"
_PLAIN_NUMBER = re.compile(PLAIN_NUMBER)


def parse_decimal(value: Any, *, field: str, expected: str = "a finite number") -> Decimal:
    """Exact parse of a JSON number or numeric string (``"2500"``, ``2500``, ``"1e-3"``)."""
    if isinstance(value, bool) or value is None:
        raise InputError(expected, field=field, value=value)
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(expected, field=field, value=value)
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if _PLAIN_NUMBER.fullmatch(text) is None:
            raise InputError(f"{expected} {PLAIN_NOTATION}", field=field, value=value)
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise InputError(expected, field=field, value=value) from None
    else:
        raise InputError(expected, field=field, value=value)
    if not number.is_finite():
        raise InputError(expected, field=field, value=value)
    return number


def parse_float(
    value: Any,
    *,
    field: str,
    minimum: float | None = None,
    strictly_positive: bool = False,
    maximum: float | None = None,
) -> float:
    """Parse a finite float of magnitude <= ``MAX_MAGNITUDE``, optionally bounded; the message
    states the bounds that failed."""
    expected = _describe(minimum, strictly_positive, maximum)
    number = float(parse_decimal(value, field=field, expected=expected))
    if not math.isfinite(number):  # e.g. "1e400" overflows float64
        raise InputError(expected, field=field, value=value)
    if strictly_positive and not number > 0.0:
        raise InputError(expected, field=field, value=value)
    if minimum is not None and number < minimum:
        raise InputError(expected, field=field, value=value)
    if maximum is not None and number > maximum:
        raise InputError(expected, field=field, value=value)
    if abs(number) > MAX_MAGNITUDE:
        raise InputError(f"{expected} of magnitude <= {MAX_MAGNITUDE:g}", field=field,
                         value=value)
    return number


@functools.cache  # called for every number parsed
def _describe(minimum: float | None, strictly_positive: bool, maximum: float | None) -> str:
    parts = ["a finite number"]
    if strictly_positive:
        parts.append("> 0")
    elif minimum is not None:
        parts.append(f">= {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    return " ".join(parts)
