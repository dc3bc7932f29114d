"""Help screens that read right: ``Usage: margin-engine compute [OPTIONS] PORTFOLIO`` (not
``{portfolio}``), and flags without a ``<bool>`` type that reads as if they took a value."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

_REQUIRED = re.compile(r"^\{(.*)\}(\.\.\.)?$")


class PlainHelpCommand(TyperCommand):
    """A command whose help shows arguments by their metavar and flags with no type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperOption) and param.is_bool_flag and param.metavar is None:
                param.metavar = ""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [_REQUIRED.sub(r"\1\2", piece) for piece in super().collect_usage_pieces(ctx)]


class PlainHelpGroup(TyperGroup):
    """A command group whose ``--help`` flag shows no type."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class HelpTyper(typer.Typer):
    """A Typer whose groups and commands read right in help (PlainHelpGroup, PlainHelpCommand)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cls", PlainHelpGroup)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any,
                **kwargs: Any) -> Callable[[CommandFunctionType], CommandFunctionType]:
        kwargs.setdefault("cls", PlainHelpCommand)
        return super().command(*args, **kwargs)
