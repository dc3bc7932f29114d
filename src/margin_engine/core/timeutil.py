"""Time is int64 UTC nanoseconds inside; ISO-8601 with a zone at the edges."""

from __future__ import annotations

import datetime as dt
import re

from margin_engine.core.errors import InputError

NS_PER_SECOND = 1_000_000_000
SECONDS_PER_YEAR = 365 * 86_400
EXPIRY_HOUR_UTC = 8  # Deribit-style expiry at 08:00 UTC

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_EXPIRY_CODE = re.compile(r"^(\d{1,2})([A-Z]{3})(\d{2})$", re.ASCII)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)


def parse_timestamp(text: object, *, field: str) -> int:
    """ISO-8601 timestamp with an explicit zone (``Z`` or ``+00:00``) -> int ns since epoch."""
    if not isinstance(text, str):
        raise InputError("an ISO-8601 timestamp string with a zone", field=field, value=text)
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            "an ISO-8601 timestamp such as '2025-06-01T00:00:00Z'", field=field, value=text
        ) from None
    if moment.tzinfo is None:
        raise InputError(
            "a timestamp with a zone ('Z' or '+00:00'); naive times are ambiguous",
            field=field,
            value=text,
        )
    return datetime_to_ns(moment)


def parse_day_or_timestamp(text: object, *, field: str) -> int:
    """A date ``YYYY-MM-DD`` (00:00 UTC that day) or an ISO-8601 timestamp with a zone -> ns."""
    if isinstance(text, str) and _DATE.match(text.strip()):
        try:
            day = dt.date.fromisoformat(text.strip())
        except ValueError:
            raise InputError("a calendar date such as '2025-06-01'", field=field,
                             value=text) from None
        return datetime_to_ns(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))
    return parse_timestamp(text, field=field)


def datetime_to_ns(moment: dt.datetime) -> int:
    """Aware datetime -> int ns since the Unix epoch (exact integer arithmetic)."""
    delta = moment.astimezone(dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1_000


def ns_to_iso(ns: int) -> str:
    """int ns -> ``YYYY-MM-DDTHH:MM:SSZ`` (sub-second part kept when present)."""
    seconds, rest = divmod(ns, NS_PER_SECOND)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if rest:
        text += f".{rest:09d}".rstrip("0")
    return text + "Z"


def expiry_code_to_ns(code: str) -> int:
    """Deribit expiry code (``27JUN25``, ``7JUN24``) -> that date at 08:00 UTC, in ns."""
    match = _EXPIRY_CODE.match(code)
    if match is None or match.group(2) not in _MONTHS:
        raise ValueError(f"not an expiry code like '27JUN25': {code!r}")
    day, month, year = int(match.group(1)), _MONTHS[match.group(2)], 2000 + int(match.group(3))
    try:
        moment = dt.datetime(year, month, day, EXPIRY_HOUR_UTC, tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"not a calendar date: {code!r}") from None
    return datetime_to_ns(moment)


def year_fraction(start_ns: int, end_ns: int) -> float:
    """T = seconds from start to end / (365 x 86400)."""
    return (end_ns - start_ns) / NS_PER_SECOND / SECONDS_PER_YEAR
