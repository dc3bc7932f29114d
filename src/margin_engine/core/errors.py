"""One error hierarchy; messages name where the bad value is, what it was and what was expected."""

from __future__ import annotations

from typing import Any


class MarginEngineError(Exception):
    """Base of every error the engine raises on purpose."""


class InputError(MarginEngineError):
    """A bad input: the whole input is refused and nothing is applied.

    The message is built from structured fields so a caller (CLI, API) can show or log them:
    ``source`` (file or stream), ``account`` (id), ``position`` (index in the account),
    ``field`` (dotted path), ``value`` (what was given) and ``expected`` (what would be accepted).
    """

    def __init__(
        self,
        expected: str,
        *,
        field: str | None = None,
        value: Any = None,
        account: str | None = None,
        position: int | None = None,
        source: str | None = None,
    ) -> None:
        self.expected = expected
        self.field = field
        self.value = value
        self.account = account
        self.position = position
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        where: list[str] = []
        if self.source:
            where.append(self.source)
        if self.account is not None:
            where.append(f"account {self.account!r}")
        if self.position is not None:
            where.append(f"position {self.position}")
        if self.field:
            where.append(f"field {self.field!r}")
        prefix = ": ".join(where)
        got = "" if self.value is None else f"got {_show(self.value)}, "
        text = f"{got}expected {self.expected}"
        return f"{prefix}: {text}" if prefix else text

    def located(
        self,
        *,
        source: str | None = None,
        account: str | None = None,
        position: int | None = None,
        field_prefix: str | None = None,
    ) -> InputError:
        """Return the same error with outer location filled in where it was missing."""
        field = self.field
        if field_prefix:
            field = f"{field_prefix}.{field}" if field else field_prefix
        return InputError(
            self.expected,
            field=field,
            value=self.value,
            account=self.account if self.account is not None else account,
            position=self.position if self.position is not None else position,
            source=self.source or source,
        )


class ConfigError(InputError):
    """A bad risk configuration."""


class StoreError(MarginEngineError):
    """The store refused or lost a write: the write was rolled back whole; the process must stop
    (its memory is ahead of the store) and a restart resumes from what was committed."""


def _show(value: Any) -> str:
    try:
        text = repr(value) if isinstance(value, str) else str(value)
    except RecursionError:  # a value nested too deeply to print
        text = f"a deeply nested {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."
