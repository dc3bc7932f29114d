"""A rich console that stays readable when output is piped (no terminal width to detect).

The width is the terminal's; when the output is not a terminal, ``COLUMNS`` when it is set (the
tests print at ``COLUMNS=100``), else ``PIPED_WIDTH``. Every human table of the command line is
laid out to fit in ``NARROWEST`` columns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console

_T = TypeVar("_T")

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


@contextmanager
def stage_status(text: str) -> Iterator[Callable[[str], None]]:
    """A transient line on stderr saying what a long command is doing, on a terminal only
    (nothing is written to a pipe or a file); yields the function that changes the line.
    Unlike rich's ``Console.status``, stdout is left alone: a status redirects it through
    its display by default, so a document written meanwhile went to the terminal (a line
    at a time: a compact document of 100 MB as one line) instead of its file. What is
    written to stderr meanwhile (a note) is shown above the line."""
    from rich.live import Live
    from rich.spinner import Spinner

    console = make_console(stderr=True)
    if not console.is_terminal:
        yield lambda _text: None
        return
    spinner = Spinner("dots", text=text, style="status.spinner")
    with Live(spinner, console=console, refresh_per_second=12.5, transient=True,
              redirect_stdout=False, redirect_stderr=True):
        yield lambda new: spinner.update(text=new)


def counted(items: Iterable[_T], total: int, say: Callable[[str], None], what: str,
            every: int = 10_000) -> Iterator[_T]:
    """``items`` as they are, saying ``what``: ``done`` of ``total`` every ``every``."""
    for done, item in enumerate(items, 1):
        if done % every == 0:
            say(f"{what}: {done:,} of {total:,}")
        yield item
