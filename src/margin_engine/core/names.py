"""Names a book gives (account ids, collateral assets, declared instruments and underlyings):
printable text of bounded length.

Such names reach terminals, HTML pages, logs and other programs' screens. A control character
(an escape sequence that recolours or clears a terminal, a line feed that starts a false row),
a Unicode format character (a right-to-left override, a zero-width space) or a line separator
would let a name change what a user reads, so the readers refuse them with the rest of the
file. The rule is Python's ``str.isprintable`` (letters, marks, numbers, punctuation, symbols
of any script and the ASCII space), at most ``MAX_NAME_LENGTH`` characters.
"""

from __future__ import annotations

from margin_engine.core.errors import InputError

MAX_NAME_LENGTH = 256
EXPECTED_NAME = (f"printable text of at most {MAX_NAME_LENGTH} characters (no control, format "
                 "or line-separator characters)")


def name_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a name (None: nothing): the first character that is not
    printable, as its code point, or its length."""
    if len(text) > MAX_NAME_LENGTH:
        return f"{len(text):,} characters"
    if text.isprintable():
        return None
    bad = next(c for c in text if not c.isprintable())
    return f"character U+{ord(bad):04X} at position {text.index(bad) + 1}"


def check_name(text: str, *, field: str, source: str | None = None,
               account: str | None = None) -> str:
    """``text`` if it is a name, else an InputError naming the field, the value (escaped) and
    the character at fault."""
    problem = name_problem(text)
    if problem is not None:
        raise InputError(f"{EXPECTED_NAME}; it has {problem}", field=field,
                         value=text, source=source, account=account)
    return text


EXPECTED_ACCOUNT_ID = f"an account id of {EXPECTED_NAME}, without spaces at its ends"


def account_id_problem(text: str) -> str | None:
    """What keeps ``text`` from being an account id as books give them (None: nothing): what
    keeps it from being a name (``name_problem``), or spaces at its ends (the book readers
    strip them)."""
    problem = name_problem(text)
    if problem is None and text != text.strip():
        problem = "spaces at its ends"
    return None if problem is None else f"it has {problem}"
