"""A JSON document whose one long list is written as it is made: the same text as
``json.dumps({**head, key: list(items)}, indent=indent)``, without holding the list (a
million accounts' results held whole took a process to 6.5 GB, their text is under 1 GB).

The items are encoded ``CHUNK`` at a time by the compiled encoder (one list each, its brackets
cut off); the first chunk is encoded before anything is written, so a book of fewer items
fails, if it fails, with nothing on stdout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, TextIO

CHUNK = 2_000  # items encoded at a time


def json_document_text(head: Mapping[str, Any], key: str, items: Iterable[Any],
                       indent: int | None) -> Iterator[str]:
    """The text of ``{**head, key: [items...]}`` (``key`` last, not in ``head``) in pieces,
    equal once joined to ``json.dumps`` of the whole document with the same ``indent``
    (None or a number of spaces), non-finite numbers refused as it refuses them."""
    if key in head:
        raise ValueError(f"the list's key {key!r} is in the head too")
    opening = json.dumps({**head, key: []}, indent=indent, allow_nan=False)
    pieces = _chunks(iter(items), indent)
    first = next(pieces, None)  # encoded before anything is given out
    if first is None:
        yield opening
        return
    yield opening[:opening.rindex("[") + 1]
    yield first
    separator = ", " if indent is None else ","
    for piece in pieces:
        yield separator + piece
    yield "]}" if indent is None else "\n" + " " * indent + "]\n}"


def _chunks(items: Iterator[Any], indent: int | None) -> Iterator[str]:
    """Each chunk's items as they stand inside the document's list (at depth 2)."""
    while chunk := list(islice(items, CHUNK)):
        text = json.dumps(chunk, indent=indent, allow_nan=False)[1:-1]
        if indent is not None:  # items at depth 1 in their own list, at depth 2 here
            text = text[:-1].replace("\n", "\n" + " " * indent)
        yield text


def write_json_document(out: TextIO, head: Mapping[str, Any], key: str, items: Iterable[Any],
                        indent: int | None) -> None:
    """``json_document_text`` written to ``out`` piece by piece, with a final line feed."""
    for piece in json_document_text(head, key, items, indent):
        out.write(piece)
    out.write("\n")
