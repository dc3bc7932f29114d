"""A rich console that stays readable when output is piped (no terminal width to detect).

The width is the terminal's; when the output is not a terminal, ``COLUMNS`` when it is set (the
tests print at ``COLUMNS=100``), else ``PIPED_WIDTH``. Every human table of the command line is
laid out to fit in ``NARROWEST`` columns.
"""

from __future__ import annotations

import os

from rich.console import Console

PIPED_WIDTH = 130
NARROWEST = 100


def make_console(*, stderr: bool = False) -> Console:
    """A console that prints text as it is: no rich markup read in it (an account id, a label
    or a file name such as '[/x]' was a MarkupError traceback, '[red]b' printed as 'b'); styles
    are given as ``Text`` styles."""
    console = Console(stderr=stderr, markup=False)
    if console.is_terminal:
        return console
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) >= 40 else PIPED_WIDTH
    return Console(width=width, stderr=stderr, markup=False)
