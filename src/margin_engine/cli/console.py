"""A rich console that stays readable when output is piped (no terminal width to detect)."""

from __future__ import annotations

from rich.console import Console

PIPED_WIDTH = 130


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(width=PIPED_WIDTH, stderr=stderr)
